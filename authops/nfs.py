"""Tasks for the NFS export: the media, templates and certs directories."""

import shlex

from invoke import Collection

from authops import errors, output
from authops.errors import OpsError
from authops.hosts import Host, connect
from authops.settings import Settings, load_settings
from authops.tasking import DRY_RUN_HELP, ENV_HELP, ops_task

# authentik's image runs as UID and GID 1000. With root_squash the server,
# not the clients, must hand the directories to that user.
AUTHENTIK_OWNER = "1000:1000"
# The mode of these directories in authentik's image: Docker copies it onto an
# empty volume when a container first mounts it, so any other mode would flip.
DIRECTORY_MODE = "755"


def directory_states(host: Host, paths: list[str]) -> dict[str, str | None]:
    """Return `uid:gid mode` of each path, or None for a path that is not a directory."""
    states: dict[str, str | None] = {}
    for path in paths:
        quoted = shlex.quote(path)
        result = host.run(f"test -d {quoted} && stat -c '%u:%g %a' {quoted}")
        states[path] = result.stdout.strip() if result.ok else None
    return states


def missing_directories(settings: Settings, host: Host) -> list[str]:
    """Return the NFS directories that do not exist on the NFS server."""
    states = directory_states(host, list(settings.nfs_directories.values()))
    return [path for path, state in states.items() if state is None]


def fix_commands(path: str, state: str | None) -> list[str]:
    """Return the commands that bring one directory to the wanted owner and mode."""
    quoted = shlex.quote(path)
    wanted = f"{AUTHENTIK_OWNER} {DIRECTORY_MODE}"
    if state == wanted:
        return []
    commands = [] if state else [f"mkdir -p {quoted}"]
    return [
        *commands,
        f"chown {AUTHENTIK_OWNER} {quoted}",
        f"chmod {DIRECTORY_MODE} {quoted}",
    ]


@ops_task(help={"env": ENV_HELP, "dry_run": DRY_RUN_HELP})
def prepare(c, env=None, dry_run=False):
    """Create the media, templates and certs directories on the NFS server, owned by 1000:1000."""
    settings = load_settings(env)
    server = settings.nfs_ssh_host
    output.phase(f"preparing {settings.get('NFS_EXPORT')} on {server}")
    host = connect(server, settings.values)
    report = errors.Report("nfs.prepare")
    try:
        states = directory_states(host, list(settings.nfs_directories.values()))
        for path, state in states.items():
            commands = fix_commands(path, state)
            if not commands:
                report.record(
                    path,
                    errors.UNCHANGED,
                    f"owner {AUTHENTIK_OWNER}, mode {DIRECTORY_MODE}",
                )
            elif dry_run:
                report.record(path, errors.WOULD_CHANGE, "; ".join(commands))
            else:
                result = host.run(" && ".join(commands))
                if result.ok:
                    report.record(
                        path,
                        errors.CHANGED,
                        f"owner {AUTHENTIK_OWNER}, mode {DIRECTORY_MODE}",
                    )
                else:
                    report.record(path, errors.FAILED, result.error_text())
    except OpsError as error:
        report.record(server, errors.FAILED, str(error))
    finally:
        host.close()
    report.finish()


ns = Collection("nfs")
ns.add_task(prepare)
