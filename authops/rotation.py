"""secrets.rotate: a new database password, SMTP password or secret key, rolled out.

Each rotation writes the new value to the env file (mode, comments and
order kept), then deploys it with the deploy path of stack.deploy, which
creates a new Swarm secret version and waits for convergence. The value is
never printed. That deploy path removes the secret versions that no service
spec or previous spec uses any more. The version that a previous spec still
uses stays until the next deploy, so that `stack.rollback` still works.
"""

import dataclasses
import getpass
import sys

from invoke import Collection

from authops import output
from authops.db import (
    DEFAULT_SUPERUSER,
    HOST_HELP,
    PORT_HELP,
    SUPERUSER_HELP,
    parse_number,
    superuser_of,
)
from authops.env import generate_secret_key
from authops.envupdate import update_env_file
from authops.errors import CHANGED, UNCHANGED, WOULD_CHANGE, OpsError
from authops.rotationdb import rotate_database_password
from authops.settings import Settings, load_settings
from authops.smtp_direct import probe
from authops.stackdeploy import deploy
from authops.tasking import ENV_HELP, ops_task

DB = "db"
SMTP = "smtp"
SECRET_KEY = "secret-key"  # noqa: S105 - the name of a choice, not a value
CHOICES = (DB, SMTP, SECRET_KEY)
SMTP_PASSWORD_KEY = "SMTP_PASSWORD"  # noqa: S105 - a key name
SECRET_KEY_KEY = "AUTHENTIK_SECRET_KEY"  # noqa: S105 - a key name

WHICH_HELP = (
    "What to rotate. db: the database password, through a second login role "
    "OWNER_next, so that no running task holds an invalid password. smtp: the "
    "SMTP password, read from standard input (--from-stdin) or a prompt; the "
    "provider must accept the old and the new password during the switch (create "
    "a second Entra client secret first, delete the old one afterwards). "
    "secret-key: AUTHENTIK_SECRET_KEY; every user is logged out."
)


def with_value(settings: Settings, key: str, value: str) -> Settings:
    return dataclasses.replace(settings, values={**settings.values, key: value})


def check_flags(which: str, from_stdin: bool, db_flags: bool) -> None:
    """Reject a choice outside db, smtp, secret-key and flags of another choice."""
    if which not in CHOICES:
        raise OpsError(f"--which {which!r} is not valid: use {', '.join(CHOICES)}")
    if from_stdin and which != SMTP:
        raise OpsError("--from-stdin applies to --which smtp only")
    if db_flags and which != DB:
        raise OpsError("--host, --port and --superuser apply to --which db only")


def write_value(settings: Settings, key: str, value: str, dry_run: bool) -> None:
    """Write one key to the env file and print what changed, never the value."""
    changed = update_env_file(
        settings.path, settings.env_name, {key: value}, dry_run=dry_run
    )
    path = str(settings.path)
    if not changed:
        output.status(path, UNCHANGED, f"{key} already holds the new value")
    elif dry_run:
        output.status(path, WOULD_CHANGE, f"would set a new {key}")
    else:
        output.status(path, CHANGED, f"new {key} written")


def roll_out(
    settings: Settings, rotated: Settings, what: str, timeout: int | None, dry_run: bool
) -> None:
    """Deploy the env file as written; a dry run shows the plan for `rotated`."""
    if dry_run:
        deploy(rotated, timeout, dry_run=True)
        return
    if not deploy(load_settings(settings.env_name), timeout):
        raise OpsError(
            f"the deploy of the new {what} failed (see above), so the services run the "
            f"old one, while {settings.path} holds the new one: fix the cause, then run "
            f"`invoke stack.deploy --env {settings.env_name}`"
        )


def read_new_password(from_stdin: bool) -> str:
    """Read the new SMTP password from standard input or a hidden prompt, never from a flag."""
    if from_stdin:
        text = sys.stdin.read()
        password = text[:-1] if text.endswith("\n") else text
        password = password.removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass("New SMTP password: ")
        if getpass.getpass("The same again: ") != password:
            raise OpsError("the two passwords differ: nothing was changed")
    else:
        raise OpsError(
            "no terminal to prompt for the new SMTP password: pipe it in and pass --from-stdin"
        )
    output.register_secret(password)
    if not password:
        raise OpsError("the new SMTP password is empty: nothing was changed")
    if "\n" in password or "\r" in password:
        raise OpsError(
            "the new SMTP password contains a line break: give one line; nothing was changed"
        )
    return password


def check_relay(settings: Settings) -> None:
    """Log in to the relay with the new password and send nothing; raise OpsError if it fails."""
    smtp = settings.smtp
    output.phase(f"logging in to {smtp.host}:{smtp.port} with the new password")
    phases = probe(
        settings,
        settings.smtp_ca_file,
        on_phase=lambda result: output.status(
            result.phase, result.state, result.detail
        ),
    )
    failure = next((result for result in phases if result.failed), None)
    if failure is not None:
        raise OpsError(
            f"the relay rejected the new password in phase {failure.phase}: "
            f"{failure.cause or failure.detail}. Nothing was changed; check that the "
            f"provider accepts the new password"
        )


def rotate_smtp(
    settings: Settings, from_stdin: bool, timeout: int | None, dry_run: bool
) -> None:
    """Check the new SMTP password at the relay, write it and deploy it."""
    if not settings.smtp.username:
        raise OpsError(
            "SMTP_USERNAME is empty, so the relay takes no password: nothing to rotate"
        )
    password = read_new_password(from_stdin)
    rotated = with_value(settings, SMTP_PASSWORD_KEY, password)
    check_relay(rotated)
    write_value(settings, SMTP_PASSWORD_KEY, password, dry_run)
    roll_out(settings, rotated, "SMTP password", timeout, dry_run)
    if not dry_run:
        output.info(
            "Check mail through authentik with `invoke smtp.test --via authentik --to "
            "ADDRESS`, then delete the old password at the provider."
        )


def confirm_logout(settings: Settings, yes: bool) -> None:
    """Require --yes, or a `yes` typed at an interactive prompt."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise OpsError(
            "a new secret key logs every user out and needs confirmation: pass --yes"
        )
    answer = input(
        f"Rotate the secret key of {settings.stack_name} and log every user out? "
        "Type yes: "
    )
    if answer.strip().lower() != "yes":
        raise OpsError("not confirmed: nothing was changed")


def rotate_secret_key(
    settings: Settings, yes: bool, timeout: int | None, dry_run: bool
) -> None:
    """Generate a new secret key, write it and deploy it."""
    output.warn(
        "a new secret key logs every user out, because it signs their sessions "
        "and cookies"
    )
    if not dry_run:
        confirm_logout(settings, yes)
    key = generate_secret_key()
    output.register_secret(key)
    write_value(settings, SECRET_KEY_KEY, key, dry_run)
    roll_out(
        settings,
        with_value(settings, SECRET_KEY_KEY, key),
        "secret key",
        timeout,
        dry_run,
    )


@ops_task(
    help={
        "which": WHICH_HELP,
        "yes": "Confirm that a new secret key logs every user out (secret-key only).",
        "dry_run": "Show the steps and the deploy plan; write, deploy and change "
        "nothing (smtp still logs in to the relay to check the new password).",
        "from_stdin": "Read the new SMTP password from standard input, one line "
        "(smtp only; without it, a hidden prompt asks twice).",
        "timeout": "Seconds to wait for each deploy to converge (default: DEPLOY_TIMEOUT).",
        "host": HOST_HELP + " db only.",
        "port": PORT_HELP + " db only.",
        "superuser": SUPERUSER_HELP + " db only.",
        "env": ENV_HELP,
    }
)
def rotate(
    c,
    which,
    yes=False,
    dry_run=False,
    from_stdin=False,
    timeout=None,
    host=None,
    port=None,
    superuser=None,
    env=None,
):
    """Rotate the database password, the SMTP password or the secret key, and deploy it."""
    check_flags(which, from_stdin, any((host, port, superuser)))
    settings = load_settings(env)
    seconds = parse_number("--timeout", timeout, 1, 86400) if timeout else None
    if which == DB:
        admin = superuser_of(settings, host, port, superuser or DEFAULT_SUPERUSER)
        rotate_database_password(settings, admin, seconds, dry_run)
    elif which == SMTP:
        rotate_smtp(settings, from_stdin, seconds, dry_run)
    else:
        rotate_secret_key(settings, yes, seconds, dry_run)


ns = Collection("secrets")
ns.add_task(rotate)
