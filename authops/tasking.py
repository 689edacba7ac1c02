"""The task decorator shared by every namespace, and the help of common flags."""

import functools

from invoke import task
from invoke.exceptions import Exit

from authops import output
from authops.errors import OpsError

ENV_HELP = "Env file to use: env/NAME.env (default: $OPS_ENV, else lab)."
DRY_RUN_HELP = "Show what would change, and change nothing."


def ops_task(*args, **kwargs):
    """Declare an Invoke task whose OpsError or OSError becomes a one-line message and exit code.

    Takes the same arguments as `invoke.task`. Output is redacted.
    """

    def decorate(function):
        @functools.wraps(function)
        def wrapper(context, *call_args, **call_kwargs):
            try:
                return function(context, *call_args, **call_kwargs)
            except OpsError as error:
                raise Exit(output.redact(f"error: {error}"), code=error.code) from None
            except KeyboardInterrupt:
                raise Exit("interrupted", code=130) from None
            except OSError as error:
                # A file or socket error that no step turned into an OpsError:
                # still one line that names the path, not a traceback.
                raise Exit(output.redact(f"error: {error}"), code=1) from None

        return task(*args, **kwargs)(wrapper)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        function = args[0]
        args = ()
        return decorate(function)
    return decorate
