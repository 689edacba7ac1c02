"""Tasks for HAProxy's TLS certificates: combine a Let's Encrypt lineage, check installed ones.

`certs.combine` also works as a certbot deploy hook (scripts/certbot-deploy-hook.sh):
certbot sets RENEWED_LINEAGE (the live directory) and RENEWED_DOMAINS (the
names it renewed), which stand in for --live-dir and the domain check.
"""

import os
import shlex
from dataclasses import dataclass

from invoke import Collection

from authops import errors, output
from authops.certinspect import (
    Inspection,
    combined_pem,
    inspect,
    name_matches,
)
from authops.errors import OpsError
from authops.haproxy import (
    Outcome,
    reload_again,
    reload_and_confirm,
    report_outcomes,
    validate_file,
)
from authops.haproxyruntime import detect
from authops.hosts import Host, fan_out
from authops.settings import Settings, load_settings
from authops.tasking import DRY_RUN_HELP, ENV_HELP, ops_task
from authops.validate import split_list

PEM_MODE = 0o600
# Files in a certificate folder that HAProxy 2.6 does not load as certificates.
IGNORED_SUFFIXES = (".issuer", ".ocsp", ".sctl", ".key")


@dataclass(frozen=True)
class Request:
    """Input and output of certs.combine: the domain, the live folder and the cert folder."""

    domain: str
    live_dir: str
    out_dir: str

    @property
    def target(self) -> str:
        return f"{self.out_dir.rstrip('/')}/{self.domain}.pem"


def build_request(
    settings: Settings, domain: str | None, live_dir: str | None, out_dir: str | None
) -> Request:
    """Fill the defaults: SSO_DOMAIN, $RENEWED_LINEAGE or CERT_LIVE_ROOT/DOMAIN, HAPROXY_CERT_DIR."""
    name = domain or settings.domain
    live_root = settings.get("CERT_LIVE_ROOT").rstrip("/")
    lineage = live_dir or os.environ.get("RENEWED_LINEAGE") or f"{live_root}/{name}"
    return Request(
        name, lineage.rstrip("/"), out_dir or settings.get("HAPROXY_CERT_DIR")
    )


def renewed_elsewhere(domain: str) -> str | None:
    """Return the renewed names when certbot renewed a lineage that does not cover `domain`."""
    renewed = os.environ.get("RENEWED_DOMAINS", "").split()
    if not renewed or any(name_matches(name, domain) for name in renewed):
        return None
    return " ".join(renewed)


def read_lineage(host: Host, request: Request) -> tuple[bytes, bytes]:
    """Read fullchain.pem and privkey.pem of the live folder on the host."""
    files = {}
    for name in ("fullchain.pem", "privkey.pem"):
        path = f"{request.live_dir}/{name}"
        data = host.read_file(path)
        if data is None:
            raise OpsError(
                f"{path} not found: pass --live-dir with the certbot live folder of {request.domain}"
            )
        files[name] = data
    return files["fullchain.pem"], files["privkey.pem"]


def file_state(host: Host, path: str) -> str | None:
    """Return `mode owner` of a file, such as `600 haproxy`, or None if it is missing."""
    result = host.run(f"stat -c '%a %U' {shlex.quote(path)}")
    return result.stdout.strip() if result.ok else None


def combine_on_host(
    host: Host, settings: Settings, request: Request, dry_run: bool
) -> Outcome:
    """Check the lineage, write OUT/DOMAIN.pem, validate haproxy and reload it if it changed."""
    chain, key = read_lineage(host, request)
    inspection = inspect(chain, key, request.domain)
    if not inspection.ok:
        raise OpsError(
            f"{request.live_dir} rejected, nothing written: {'; '.join(inspection.errors)}"
        )
    lines = [f"warning: {warning}" for warning in inspection.warnings]
    combined = combined_pem(chain, key)
    owner = settings.get("HAPROXY_USER")
    previous = host.read_file(request.target)
    if previous == combined:
        return keep_pem(host, request, owner, inspection, dry_run, lines)
    if dry_run:
        return Outcome(
            errors.WOULD_CHANGE,
            f"would write {request.target}, mode 600, owner {owner} ({inspection.summary()})",
            lines,
        )

    install_pem(host, request, combined, owner)
    detail = f"wrote {request.target} ({inspection.summary()})"
    try:
        validate_installed(host, settings)
    except OpsError as error:
        restored = restore_pem(host, request, previous, owner)
        return Outcome(errors.FAILED, f"{error}; {restored}", lines)
    try:
        detail += "; " + reload_running(host, settings)
    except OpsError as error:
        restored = restore_pem(host, request, previous, owner)
        again = reload_again(host, settings)
        return Outcome(errors.FAILED, f"{error}; {restored}; {again}", lines)
    state = errors.WARNING if inspection.warnings else errors.CHANGED
    return Outcome(state, detail, lines)


def keep_pem(
    host: Host,
    request: Request,
    owner: str,
    inspection: Inspection,
    dry_run: bool,
    lines: list[str],
) -> Outcome:
    """Handle an installed PEM with the same content: fix mode and owner, never reload."""
    wanted = f"{PEM_MODE:o} {owner}"
    current = file_state(host, request.target)
    summary = inspection.summary()
    if current == wanted:
        state = errors.WARNING if inspection.warnings else errors.UNCHANGED
        return Outcome(state, f"{request.target} is unchanged ({summary})", lines)
    if dry_run:
        return Outcome(
            errors.WOULD_CHANGE,
            f"would set {request.target} from {current} to mode 600, owner {owner}",
            lines,
        )
    target = shlex.quote(request.target)
    host.run(
        f"chmod {PEM_MODE:o} {target} && chown {shlex.quote(owner)} {target}",
        check=True,
    )
    return Outcome(
        errors.CHANGED,
        f"{request.target}: content unchanged, set mode 600 and owner {owner} (no reload needed)",
        lines,
    )


def install_pem(host: Host, request: Request, data: bytes, owner: str) -> None:
    host.run(f"mkdir -p {shlex.quote(request.out_dir)}", check=True)
    host.write_file(request.target, data, mode=PEM_MODE, owner=owner)


def validate_installed(host: Host, settings: Settings) -> None:
    """Run `haproxy -c` on the installed configuration, which loads the new PEM."""
    config = settings.get("HAPROXY_CONFIG")
    text = host.read_file(config)
    if text is not None:
        validate_file(host, config, text.decode(errors="replace"))


def reload_running(host: Host, settings: Settings) -> str:
    """Reload HAProxy if it runs, confirm new workers, and return what happened."""
    running = detect(host, settings)
    if running is None:
        return "haproxy is not running, so nothing was reloaded"
    confirmation = reload_and_confirm(host, settings, running, None)
    return (
        f"haproxy reloaded, worker pid {confirmation.old_pid} -> {confirmation.new_pid}"
    )


def restore_pem(
    host: Host, request: Request, previous: bytes | None, owner: str
) -> str:
    """Put the previous PEM back, or remove the new one; return what was done."""
    if previous is None:
        host.run(f"rm -f {shlex.quote(request.target)}")
        return f"removed the new {request.target}"
    host.write_file(request.target, previous, mode=PEM_MODE, owner=owner)
    return f"restored the previous {request.target}"


@ops_task(
    help={
        "env": ENV_HELP,
        "domain": "Name the certificate must cover, also the file name DOMAIN.pem (default: SSO_DOMAIN).",
        "live_dir": "Folder with fullchain.pem and privkey.pem on each host (default: $RENEWED_LINEAGE, else CERT_LIVE_ROOT/DOMAIN).",
        "out_dir": "Folder HAProxy loads certificates from (default: HAPROXY_CERT_DIR).",
        "hosts": "Comma-separated hosts to run on instead of HAPROXY_HOSTS; a certbot hook passes `local`.",
        "dry_run": DRY_RUN_HELP,
    }
)
def combine(
    c, env=None, domain=None, live_dir=None, out_dir=None, hosts=None, dry_run=False
):
    """Install a Let's Encrypt certificate and key as one PEM for HAProxy, then reload it."""
    settings = load_settings(env)
    request = build_request(settings, domain, live_dir, out_dir)
    targets = split_list(hosts) if hosts else settings.haproxy_hosts
    skipped = None if live_dir else renewed_elsewhere(request.domain)
    if skipped:
        output.status(
            request.domain,
            errors.UNCHANGED,
            f"certbot renewed {skipped}, which does not cover {request.domain}: nothing to do",
        )
        return
    configured = settings.get("HAPROXY_CERT_DIR").rstrip("/")
    if request.out_dir.rstrip("/") != configured:
        output.warn(
            f"--out-dir {request.out_dir} is not HAPROXY_CERT_DIR ({configured}), the folder "
            "HAProxy loads certificates from: it will not serve this file; set "
            "HAPROXY_CERT_DIR instead"
        )
    output.phase(
        f"installing {request.live_dir} as {request.target} on {', '.join(targets)}"
    )
    results = fan_out(
        targets,
        settings.values,
        lambda host: combine_on_host(host, settings, request, dry_run),
    )
    report_outcomes("certs.combine", results)


@dataclass
class InstalledCertificate:
    """One certificate file in HAPROXY_CERT_DIR and the result of checking it."""

    path: str
    mode: str
    inspection: Inspection


def certificate_files(host: Host, directory: str) -> list[str]:
    """Return the files of `directory` that HAProxy loads as certificates, in name order."""
    result = host.run(
        f"find {shlex.quote(directory)} -maxdepth 1 -type f -printf '%f\\n'"
    )
    if not result.ok:
        raise OpsError(f"{host.name}: cannot list {directory}: {result.error_text()}")
    names = [
        name
        for name in result.stdout.splitlines()
        if name and not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)
    ]
    return [f"{directory.rstrip('/')}/{name}" for name in sorted(names)]


def inspect_installed(host: Host, settings: Settings) -> list[InstalledCertificate]:
    """Check every certificate file HAProxy loads on the host."""
    found = []
    for path in certificate_files(host, settings.get("HAPROXY_CERT_DIR")):
        data = host.read_file(path) or b""
        mode = (file_state(host, path) or "? ?").split()[0]
        found.append(InstalledCertificate(path, mode, inspect(data, data)))
    return found


def collect_installed(
    settings: Settings,
) -> list[tuple[str, list[InstalledCertificate] | None, OpsError | None]]:
    """Return (host, certificates, error) for every HAProxy host; doctor uses this."""
    return fan_out(
        settings.haproxy_hosts,
        settings.values,
        lambda host: inspect_installed(host, settings),
    )


def certificate_outcome(certificate: InstalledCertificate) -> Outcome:
    inspection = certificate.inspection
    problems = list(inspection.errors)
    warnings = list(inspection.warnings)
    if certificate.mode.isdigit() and int(certificate.mode, 8) & 0o077:
        warnings.append(f"mode {certificate.mode} lets others read the key: chmod 600")
    detail = f"{certificate.path}: {inspection.summary()}"
    if problems:
        return Outcome(errors.FAILED, f"{detail}: {'; '.join(problems)}")
    if warnings:
        return Outcome(errors.WARNING, f"{detail}: {'; '.join(warnings)}")
    return Outcome(errors.OK, detail)


@ops_task(help={"env": ENV_HELP})
def check(c, env=None):
    """Report expiry, key match and SSO_DOMAIN cover of the certificates HAProxy loads."""
    settings = load_settings(env)
    directory = settings.get("HAPROXY_CERT_DIR")
    output.phase(f"checking {directory} on {', '.join(settings.haproxy_hosts)}")
    report = errors.Report("certs.check")
    for spec, certificates, error in collect_installed(settings):
        if error is not None:
            report.record(spec, errors.FAILED, str(error))
        elif not certificates:
            report.record(
                spec,
                errors.FAILED,
                f"no certificate in {directory}: run `invoke certs.combine`",
            )
        elif not any(covers(item, settings.domain) for item in certificates):
            report.record(
                spec,
                errors.FAILED,
                f"no certificate in {directory} covers {settings.domain}: "
                f"run `invoke certs.combine`",
            )
        for certificate in certificates or []:
            outcome = certificate_outcome(certificate)
            report.record(spec, outcome.state, outcome.detail)
    report.finish()


def covers(certificate: InstalledCertificate, domain: str) -> bool:
    return any(name_matches(name, domain) for name in certificate.inspection.names)


ns = Collection("certs")
ns.add_task(combine)
ns.add_task(check)
