"""Tasks for mail: test the SMTP relay directly or through authentik's worker.

`smtp.test` checks the relay as authentik will use it. With `--via direct`
(the default), this machine talks SMTP with the env file's settings and
reports each phase. With `--via authentik`, authentik's own `ak test_email`
runs in a running worker container. `doctor` calls `smtp_direct.probe`.
"""

from invoke import Collection

from authops import output, smtp_direct, smtp_worker
from authops.errors import OpsError
from authops.settings import Settings, load_settings
from authops.tasking import ENV_HELP, ops_task
from authops.validate import EMAIL_PATTERN

VIA_CHOICES = ("direct", "authentik")


def check_recipient(to: str | None) -> str:
    if not to:
        raise OpsError(
            "--to is missing: give the address that receives the test message"
        )
    if not EMAIL_PATTERN.match(to):
        raise OpsError(
            f"--to {to!r} is not an e-mail address: give one like user@example.com"
        )
    return to


def tls_mode(settings: Settings) -> str:
    smtp = settings.smtp
    if smtp.use_ssl:
        return "implicit TLS"
    if smtp.use_tls:
        return "STARTTLS"
    return "no TLS"


def print_phase(result: smtp_direct.PhaseResult) -> None:
    output.status(result.phase, result.state, result.detail)


def raise_failure(failure: smtp_direct.PhaseResult, settings: Settings) -> None:
    target = f"{settings.smtp.host}:{settings.smtp.port}"
    raise OpsError(
        f"mail test via {target} failed in phase {failure.phase}: {failure.cause}"
    )


def run_direct(
    settings: Settings, to: str | None, probe: bool, ca_file: str | None
) -> None:
    smtp = settings.smtp
    action = "probing" if probe else "sending a test message through"
    output.phase(
        f"{action} {smtp.host}:{smtp.port} ({tls_mode(settings)}) from this machine"
    )
    if probe:
        phases = smtp_direct.probe(settings, ca_file, on_phase=print_phase)
        failure = next((result for result in phases if result.failed), None)
        if failure:
            raise_failure(failure, settings)
        output.info("probe passed; nothing was sent")
        return
    outcome = smtp_direct.send_test(
        settings, check_recipient(to), ca_file, on_phase=print_phase
    )
    if outcome.failure:
        raise_failure(outcome.failure, settings)
    output.info(
        f"sent to {to}: subject '{smtp_direct.SUBJECT_PREFIX} {outcome.test_id}', "
        f"Message-ID {outcome.message_id}, queue id {outcome.queue_id or 'unknown'}"
    )


def run_via_authentik(settings: Settings, to: str | None) -> None:
    recipient = check_recipient(to)
    output.phase(
        f"running `ak test_email {recipient}` in a worker of {settings.stack_name}"
    )
    if not smtp_worker.run(settings, recipient):
        raise OpsError(
            "ak test_email failed: read its output above; `invoke smtp.test --probe` checks the relay from this machine"
        )


@ops_task(
    name="test",
    help={
        "to": "Address that receives the test message (not needed with --probe).",
        "via": "direct: SMTP from this machine with the env file's settings (default); authentik: `ak test_email` in a running worker container.",
        "probe": "Stop after authentication and send nothing (direct only).",
        "ca_file": "PEM file of a CA to trust besides the system's, for a relay with a private CA (direct only; default: SMTP_CA_FILE).",
        "env": ENV_HELP,
    },
)
def send_test(c, to=None, via="direct", probe=False, ca_file=None, env=None):
    """Send a test message through the SMTP relay and report each phase."""
    if via not in VIA_CHOICES:
        raise OpsError(f"--via {via!r} is not valid: use direct or authentik")
    if via == "authentik" and (probe or ca_file):
        raise OpsError("--probe and --ca-file apply to --via direct only")
    settings = load_settings(env)
    if via == "authentik":
        run_via_authentik(settings, to)
    else:
        run_direct(settings, to, probe, ca_file or settings.smtp_ca_file)


ns = Collection("smtp")
ns.add_task(send_test)
