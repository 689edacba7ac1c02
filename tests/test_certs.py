"""Certificate checks and the certs tasks, with a test CA made by `cryptography`."""

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization

from authops import hosts
from authops.certinspect import WARN_DAYS, inspect, name_matches
from authops.certs import collect_installed
from authops.haproxy import start_haproxy
from authops.labpki import generate_key, key_pem, now
from authops.settings import load_settings
from tests.support.certificates import DAY, issue, make_ca, write_lineage
from tests.support.haproxylab import DOMAIN, REPO, make_bench, run_invoke

ENV = "certs"


@pytest.fixture(scope="module")
def ca():
    return make_ca()


def other_key() -> bytes:
    return key_pem(generate_key())


@pytest.mark.parametrize(
    ("pattern", "domain", "covered"),
    [
        ("sso.example.com", "sso.example.com", True),
        ("SSO.Example.COM", "sso.example.com", True),
        ("sso.example.com.", "sso.example.com", True),
        ("other.example.com", "sso.example.com", False),
        ("*.example.com", "sso.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.sso.example.com", False),
        ("s*.example.com", "sso.example.com", False),
        ("*.*.example.com", "a.b.example.com", False),
        ("example.com", "sso.example.com", False),
        ("192.0.2.10", "192.0.2.10", True),
        ("*.0.2.10", "192.0.2.10", False),
    ],
)
def test_name_matches_rules(pattern, domain, covered):
    assert name_matches(pattern, domain) is covered


@pytest.mark.parametrize(
    ("names", "not_before", "not_after", "error", "warning"),
    [
        ([DOMAIN], -1, 90, None, None),
        ([DOMAIN], -90, -1, "expired", None),
        ([DOMAIN], 2, 90, "not valid before", None),
        ([DOMAIN], -80, 10, None, "expires in 9 days"),
        ([DOMAIN], -1, WARN_DAYS + 2, None, None),
        (["other.lab.test"], -1, 90, "does not cover sso.lab.test", None),
        (["*.lab.test"], -1, 90, None, None),
        (["*.sso.lab.test"], -1, 90, "does not cover", None),
        (["lab.test", DOMAIN], -1, 90, None, None),
    ],
)
def test_inspect_validity_and_names(ca, names, not_before, not_after, error, warning):
    leaf = issue(
        ca,
        names,
        not_before=now() + not_before * DAY,
        not_after=now() + not_after * DAY,
    )
    result = inspect(leaf.fullchain, leaf.privkey, DOMAIN)
    if error:
        assert any(error in message for message in result.errors), result.errors
    else:
        assert result.errors == []
    if warning:
        assert any(warning in message for message in result.warnings), result.warnings
    else:
        assert result.warnings == []


def test_inspect_wrong_key_rejected(ca):
    leaf = issue(ca, [DOMAIN])
    result = inspect(leaf.fullchain, other_key(), DOMAIN)
    assert result.key_matches is False
    assert any("does not match" in message for message in result.errors)


def test_inspect_missing_key_rejected(ca):
    leaf = issue(ca, [DOMAIN])
    result = inspect(leaf.fullchain, b"", DOMAIN)
    assert any("no private key" in message for message in result.errors)


def test_inspect_encrypted_key_rejected(ca):
    leaf = issue(ca, [DOMAIN])
    encrypted = key_pem(leaf.key, password=b"passphrase")
    result = inspect(leaf.fullchain, encrypted, DOMAIN)
    assert any("encrypted" in message for message in result.errors)


def test_inspect_combined_file(ca):
    leaf = issue(ca, [DOMAIN])
    combined = leaf.fullchain + leaf.privkey
    result = inspect(combined, combined)
    assert result.ok
    assert result.key_matches is True
    assert result.names == [DOMAIN]


def test_inspect_chain_out_of_order_warned(ca):
    leaf = issue(ca, [DOMAIN])
    reversed_chain = ca.pem + leaf.fullchain[: -len(ca.pem)]
    result = inspect(reversed_chain, leaf.privkey, DOMAIN)
    assert result.errors  # the first certificate is the CA: no match, no name
    assert any("out of order" in message for message in result.warnings)


@pytest.fixture
def certs_env(make_env, tmp_path):
    """An env whose HAProxy host is `local`, with its folders under tmp_path."""
    values = {
        "HAPROXY_HOSTS": "local",
        "SSO_DOMAIN": DOMAIN,
        "HAPROXY_CERT_DIR": str(tmp_path / "certs"),
        "HAPROXY_CONFIG": str(tmp_path / "haproxy.cfg"),
        "HAPROXY_STATS_SOCKET": str(tmp_path / "admin.sock"),
        "HAPROXY_PIDFILE": str(tmp_path / "haproxy.pid"),
        "HAPROXY_USER": "root",
    }
    make_env(ENV, **values)
    return values


def combine(env_dir, live, *extra: str) -> subprocess.CompletedProcess:
    return run_invoke(
        "certs.combine", "--env", ENV, "--live-dir", str(live), *extra, env_dir=env_dir
    )


def output_of(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def test_combine_writes_private_pem(ca, certs_env, env_dir, tmp_path):
    leaf = issue(ca, [DOMAIN])
    live = write_lineage(tmp_path / "live", leaf)
    result = combine(env_dir, live)
    target = tmp_path / "certs" / f"{DOMAIN}.pem"
    assert result.returncode == 0, output_of(result)
    assert "[local] changed: wrote" in result.stdout
    assert target.read_bytes() == leaf.fullchain + leaf.privkey
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert target.stat().st_uid == 0


def test_combine_second_run_unchanged(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live", issue(ca, [DOMAIN]))
    combine(env_dir, live)
    again = combine(env_dir, live)
    assert again.returncode == 0, output_of(again)
    assert "[local] unchanged" in again.stdout


def test_combine_other_out_dir_warned(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live", issue(ca, [DOMAIN]))
    elsewhere = tmp_path / "elsewhere"
    result = combine(env_dir, live, "--out-dir", str(elsewhere), "--dry-run")
    assert result.returncode == 0, output_of(result)
    assert f"--out-dir {elsewhere} is not HAPROXY_CERT_DIR" in output_of(result)


def test_combine_default_out_dir_not_warned(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live", issue(ca, [DOMAIN]))
    result = combine(env_dir, live, "--dry-run")
    assert "is not HAPROXY_CERT_DIR" not in output_of(result)


def test_combine_restores_mode_without_rewrite(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live", issue(ca, [DOMAIN]))
    combine(env_dir, live)
    target = tmp_path / "certs" / f"{DOMAIN}.pem"
    target.chmod(0o644)
    result = combine(env_dir, live)
    assert result.returncode == 0, output_of(result)
    assert "content unchanged, set mode 600" in result.stdout
    assert oct(target.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong key", "does not match"),
        ("expired", "expired"),
        ("not yet valid", "not valid before"),
        ("other name", "does not cover"),
    ],
)
def test_combine_rejects_and_writes_nothing(
    ca, certs_env, env_dir, tmp_path, case, message
):
    key = None
    if case == "wrong key":
        leaf, key = issue(ca, [DOMAIN]), other_key()
    elif case == "expired":
        leaf = issue(ca, [DOMAIN], not_before=now() - 90 * DAY, not_after=now() - DAY)
    elif case == "not yet valid":
        leaf = issue(ca, [DOMAIN], not_before=now() + DAY)
    else:
        leaf = issue(ca, ["other.lab.test"])
    live = write_lineage(tmp_path / "live", leaf, key)
    result = combine(env_dir, live)
    assert result.returncode == 1
    assert message in result.stdout
    assert "nothing written" in result.stdout
    assert not (tmp_path / "certs").exists()


def test_combine_warns_near_expiry(ca, certs_env, env_dir, tmp_path):
    leaf = issue(ca, [DOMAIN], not_before=now() - 80 * DAY, not_after=now() + 10 * DAY)
    live = write_lineage(tmp_path / "live", leaf)
    result = combine(env_dir, live)
    assert result.returncode == 0, output_of(result)
    assert "[local] warning: wrote" in result.stdout
    assert "expires in 9 days" in result.stdout
    assert (tmp_path / "certs" / f"{DOMAIN}.pem").exists()


def test_combine_wildcard_lineage(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live", issue(ca, ["*.lab.test"]))
    result = combine(env_dir, live)
    assert result.returncode == 0, output_of(result)
    assert (tmp_path / "certs" / f"{DOMAIN}.pem").exists()


def test_combine_dry_run_writes_nothing(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live", issue(ca, [DOMAIN]))
    result = combine(env_dir, live, "--dry-run")
    assert result.returncode == 0, output_of(result)
    assert "[local] would change: would write" in result.stdout
    assert not (tmp_path / "certs").exists()


def test_combine_invalid_config_restores_pem(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live", issue(ca, [DOMAIN]))
    combine(env_dir, live)
    target = tmp_path / "certs" / f"{DOMAIN}.pem"
    previous = target.read_bytes()
    (tmp_path / "haproxy.cfg").write_text("global\n    bogus-keyword 1\n")
    live = write_lineage(tmp_path / "live", issue(ca, [DOMAIN]))
    result = combine(env_dir, live)
    assert result.returncode == 1
    assert "line 2 (`bogus-keyword 1`)" in result.stdout
    assert f"restored the previous {target}" in result.stdout
    assert target.read_bytes() == previous


def run_hook(env_dir, lineage, domains: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "OPS_ENV_DIR": str(env_dir),
        "RENEWED_LINEAGE": str(lineage),
        "RENEWED_DOMAINS": domains,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    return subprocess.run(
        [str(REPO / "scripts" / "certbot-deploy-hook.sh"), ENV],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_hook_uses_renewed_lineage(ca, certs_env, env_dir, tmp_path):
    leaf = issue(ca, [DOMAIN])
    live = write_lineage(tmp_path / "live" / DOMAIN, leaf)
    result = run_hook(env_dir, live, DOMAIN)
    assert result.returncode == 0, output_of(result)
    target = tmp_path / "certs" / f"{DOMAIN}.pem"
    assert target.read_bytes() == leaf.fullchain + leaf.privkey


def test_hook_skips_other_lineage(ca, certs_env, env_dir, tmp_path):
    live = write_lineage(tmp_path / "live" / "other", issue(ca, ["other.lab.test"]))
    result = run_hook(env_dir, live, "other.lab.test www.other.lab.test")
    assert result.returncode == 0, output_of(result)
    assert "does not cover sso.lab.test: nothing to do" in result.stdout
    assert not (tmp_path / "certs").exists()


def test_hook_without_env_name_fails(tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "OPS_ENV"}
    environment["RENEWED_LINEAGE"] = str(tmp_path)
    result = subprocess.run(
        [str(REPO / "scripts" / "certbot-deploy-hook.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "no env name" in result.stderr


@pytest.fixture
def bench(tmp_path, make_env, env_dir):
    """A running HAProxy in front of two stand-in nodes, serving the bench's certificate."""
    bench = make_bench(tmp_path / "hx")
    make_env(ENV, **bench.env_values())
    try:
        installed = run_invoke("haproxy.reload", "--env", ENV, env_dir=env_dir)
        assert installed.returncode == 0, output_of(installed)
        start_haproxy(hosts.connect("local"), load_settings(ENV))
        yield bench
    finally:
        bench.stop_haproxy()
        for node in bench.nodes:
            node.kill()


def test_combine_reloads_new_certificate(bench, env_dir, tmp_path):
    client = bench.client()
    old = client.peer_certificate()
    leaf = issue(bench.ca, [DOMAIN])
    live = write_lineage(tmp_path / "live", leaf)
    result = combine(env_dir, live)
    assert result.returncode == 0, output_of(result)
    assert "haproxy reloaded, worker pid" in result.stdout
    served = client.peer_certificate()
    assert served != old
    assert served == leaf.certificate.public_bytes(serialization.Encoding.DER)
    again = combine(env_dir, live)
    assert "[local] unchanged" in again.stdout


def test_combine_over_ssh(ca, certs_env, sshd, make_env, env_dir, tmp_path):
    make_env(ENV, **{**certs_env, **sshd.env_values(), "HAPROXY_HOSTS": sshd.spec()})
    leaf = issue(ca, [DOMAIN])
    live = write_lineage(tmp_path / "live", leaf)
    result = combine(env_dir, live)
    target = tmp_path / "certs" / f"{DOMAIN}.pem"
    assert result.returncode == 0, output_of(result)
    assert f"[{sshd.spec()}] changed: wrote" in result.stdout
    assert target.read_bytes() == leaf.fullchain + leaf.privkey
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def install_pem(directory, name: str, data: bytes, mode: int = 0o600) -> None:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)


@pytest.mark.parametrize(
    ("case", "state", "code"),
    [
        ("valid", "ok", 0),
        ("near expiry", "warning", 0),
        ("readable by others", "warning", 0),
        ("expired", "failed", 1),
        ("wrong key", "failed", 1),
    ],
)
def test_check_states(ca, certs_env, env_dir, tmp_path, case, state, code):
    leaf = issue(ca, [DOMAIN])
    data, mode = leaf.fullchain + leaf.privkey, 0o600
    if case == "near expiry":
        leaf = issue(ca, [DOMAIN], not_before=now() - DAY, not_after=now() + 5 * DAY)
        data = leaf.fullchain + leaf.privkey
    elif case == "readable by others":
        mode = 0o644
    elif case == "expired":
        leaf = issue(ca, [DOMAIN], not_before=now() - 9 * DAY, not_after=now() - DAY)
        data = leaf.fullchain + leaf.privkey
    elif case == "wrong key":
        data = leaf.fullchain + other_key()
    install_pem(tmp_path / "certs", f"{DOMAIN}.pem", data, mode)
    result = run_invoke("certs.check", "--env", ENV, env_dir=env_dir)
    assert result.returncode == code, output_of(result)
    assert f"[local] {state}: {tmp_path / 'certs' / DOMAIN}.pem" in result.stdout


def test_check_skips_files_haproxy_ignores(ca, certs_env, env_dir, tmp_path):
    leaf = issue(ca, [DOMAIN])
    directory = tmp_path / "certs"
    install_pem(directory, "a.pem", leaf.fullchain + leaf.privkey)
    install_pem(directory, "a.pem.ocsp", b"not a certificate")
    install_pem(directory, ".a.pem.tmp-1", b"not a certificate")
    result = run_invoke("certs.check", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 0, output_of(result)
    assert result.stdout.count("[local] ok:") == 1


def test_check_empty_folder_fails(certs_env, env_dir, tmp_path):
    (tmp_path / "certs").mkdir()
    result = run_invoke("certs.check", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 1
    assert "no certificate in" in result.stdout


def test_check_other_domain_only_fails(ca, certs_env, env_dir, tmp_path):
    leaf = issue(ca, ["other.example.org"])
    install_pem(tmp_path / "certs", "other.pem", leaf.fullchain + leaf.privkey)
    result = run_invoke("certs.check", "--env", ENV, env_dir=env_dir)
    assert result.returncode == 1
    assert f"covers {DOMAIN}" in result.stdout


def test_collect_installed_for_doctor(ca, certs_env, tmp_path):
    leaf = issue(ca, [DOMAIN])
    install_pem(tmp_path / "certs", f"{DOMAIN}.pem", leaf.fullchain + leaf.privkey)
    [(spec, certificates, error)] = collect_installed(load_settings(ENV))
    assert spec == "local"
    assert error is None
    assert [c.inspection.names for c in certificates] == [[DOMAIN]]
    assert certificates[0].inspection.key_matches is True
    assert certificates[0].inspection.days_left >= 88
