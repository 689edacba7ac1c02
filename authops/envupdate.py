"""Changing values in an env file in place, for tasks that update it after a change.

Comments, key order and line endings stay as they were. The new file is
written beside the old one with the same mode (and owner, when this process
may set it) and renamed over it, so a reader sees either the old or the new
file. The new text is parsed and validated before it is written, so a value
that the env file cannot hold is rejected and the file is left unchanged.
"""

import contextlib
import os
from pathlib import Path

from authops.env import replace_values
from authops.envfile import parse_text
from authops.errors import OpsError
from authops.validate import ERROR, validate_env

# Unquoted values lose a ` #...` tail and surrounding blanks when parsed, so
# such values are written in single quotes, where only \\ and \' are escapes.
SINGLE_QUOTE_ESCAPES = (("\\", "\\\\"), ("'", "\\'"))


def quoted(value: str) -> str:
    for plain, escaped in SINGLE_QUOTE_ESCAPES:
        value = value.replace(plain, escaped)
    return f"'{value}'"


def written_form(key: str, value: str) -> str:
    """Return the form of `value` that parses back to itself, or raise OpsError."""
    for candidate in (value, quoted(value)):
        if parse_text(f"{key}={candidate}\n").values().get(key) == value:
            return candidate
    raise OpsError(
        f"the new value of {key} cannot be written to an env file (it contains a "
        f"line break or a character sequence the parser changes): choose another value"
    )


def new_text(text: str, env_name: str, values: dict[str, str]) -> str:
    """Return `text` with each key set to its value; append keys the file lacks."""
    forms = {key: written_form(key, value) for key, value in values.items()}
    present = parse_text(text).values()
    updated = replace_values(text, {k: v for k, v in forms.items() if k in present})
    missing = [key for key in forms if key not in present]
    if missing and updated and not updated.endswith("\n"):
        updated += "\n"
    updated += "".join(f"{key}={forms[key]}\n" for key in missing)

    parsed = parse_text(updated)
    wrong = [key for key, value in values.items() if parsed.values().get(key) != value]
    if wrong:
        raise OpsError(
            f"could not set {', '.join(wrong)} in the env file: write each as a plain "
            f"KEY=VALUE line (no `export`, no quotes around the key), then run again"
        )
    errors = [
        problem
        for problem in validate_env(parsed, env_name=env_name)
        if problem.severity == ERROR
    ]
    if errors:
        listed = "; ".join(str(problem) for problem in errors)
        raise OpsError(f"the env file would become invalid: {listed}")
    return updated


def changed_keys(path: Path, values: dict[str, str]) -> list[str]:
    """Return the keys whose value in the file at `path` differs from `values`."""
    current = parse_text(path.read_text()).values()
    return [key for key, value in values.items() if current.get(key) != value]


def update_env_file(
    path: Path, env_name: str, values: dict[str, str], *, dry_run: bool = False
) -> list[str]:
    """Set each key of `values` in the env file; return the keys that change.

    A dry run validates the new text and writes nothing.
    """
    changed = changed_keys(path, values)
    if not changed:
        return []
    text = new_text(path.read_text(), env_name, {key: values[key] for key in changed})
    if not dry_run:
        replace_file(path, text)
    return changed


def replace_file(path: Path, text: str) -> None:
    """Write `text` to a temporary file with the mode and owner of `path`, then rename it over.

    A symbolic link (an env file kept in a private repository, say) stays a
    link: the file it points to is replaced.
    """
    path = Path(os.path.realpath(path))
    info = path.stat()
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    descriptor = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, info.st_mode & 0o7777
    )
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, info.st_mode & 0o7777)
        # A non-root operator cannot give the file away, but owns it anyway.
        with contextlib.suppress(PermissionError):
            os.chown(temporary, info.st_uid, info.st_gid)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
