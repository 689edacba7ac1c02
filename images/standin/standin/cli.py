"""Subcommands of `ak`, the stand-in's entry point."""

import sys

from standin import config, log

USAGE = "usage: ak server | worker | healthcheck | test_email ADDRESS"


def start_checks() -> str | None:
    """Return why the server or worker must not start, or None."""
    try:
        if not config.get("AUTHENTIK_SECRET_KEY"):
            return "AUTHENTIK_SECRET_KEY is not set: authentik cannot start without a secret key"
        config.database()
    except config.ConfigError as error:
        return str(error)
    return None


def run_service(mode: str) -> int:
    config.warn_unknown()
    problem = start_checks()
    if problem:
        log.error("cannot start", mode=mode, error=problem)
        return 1
    if mode == "server":
        from standin import server

        return server.run()
    from standin import worker

    return worker.run()


def main(argv: list[str]) -> int:
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    command, arguments = argv[0], argv[1:]
    if command in ("server", "worker") and not arguments:
        return run_service(command)
    if command == "healthcheck" and not arguments:
        from standin import health

        return health.run()
    if command == "test_email" and len(arguments) == 1:
        from standin import mail

        try:
            return mail.send(arguments[0])
        except config.ConfigError as error:
            print(f"failed: {error}")
            return 1
    print(USAGE, file=sys.stderr)
    return 2
