"""Every command of docs/runbook.md, run in order against the lab.

The runbook's `sh` blocks hold the commands an operator types. This test runs
each of them with OPS_ENV=lab, so a renamed task or flag fails here before an
operator finds it. A line with `# not in the lab: REASON` is skipped.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from authops import labnode
from authops.labenv import superuser_password
from authops.standin import LOOPBACK_IMAGE
from tests.support.envfiles import lab_values

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "docs" / "runbook.md"
SKIP_MARK = "# not in the lab:"
UPGRADE_TAG = "2025.12.1"

pytestmark = [pytest.mark.docker, pytest.mark.lab]


def runbook_commands() -> list[tuple[str, str]]:
    """Return (section, command) for every command line in the runbook's sh blocks."""
    commands = []
    section = ""
    in_block = False
    for line in RUNBOOK.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("## "):
            section = stripped[3:]
        elif stripped == "```sh":
            in_block = True
        elif stripped.startswith("```"):
            in_block = False
        elif in_block and stripped and not stripped.startswith("#"):
            commands.append((section, stripped))
    return commands


def test_runbook_has_commands():
    sections = {section for section, _ in runbook_commands()}
    for expected in (
        "First deployment",
        "Upgrade",
        "Certificate renewal",
        "Password rotation",
        "Adding or removing a node",
        "Restoring from a backup",
    ):
        assert expected in sections


def test_skipped_commands_give_reason():
    for _, command in runbook_commands():
        if SKIP_MARK in command:
            reason = command.split(SKIP_MARK, 1)[1].strip()
            assert reason, f"no reason after {SKIP_MARK!r}: {command}"


def test_commands_use_known_tasks():
    import tasks

    known = {
        f"{name}.{task}"
        for name, collection in tasks.ns.collections.items()
        for task in collection.tasks
    }
    known |= set(tasks.ns.tasks)
    for _, command in runbook_commands():
        match = re.search(r"\binvoke\s+([a-z_.-]+)", command)
        assert match, f"not an invoke command: {command}"
        assert match.group(1) in known, f"unknown task in runbook: {command}"


def run_lab_task(environment: dict[str, str], *args: str) -> None:
    """Run `invoke ARGS` in the runbook's environment and assert that it succeeded."""
    result = subprocess.run(
        ["invoke", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def lab_shell(tmp_path_factory):
    """An environment that points every command at a copy of the lab's env file."""
    env_dir = tmp_path_factory.mktemp("runbook-env")
    shutil.copy(REPO / "env" / "lab.env", env_dir / "lab.env")
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("OPS_")
    }
    environment.update(
        OPS_ENV="lab",
        OPS_ENV_DIR=str(env_dir),
        PATH=f"{Path(sys.executable).parent}:{environment.get('PATH', '')}",
        OPS_MAIL_TEST_TO="admin@sso.lab.test",
        OPS_UPGRADE_TAG=UPGRADE_TAG,
        OPS_NEW_SMTP_PASSWORD=lab_values()["SMTP_PASSWORD"],
    )
    # The runbook starts with a first deployment, so the lab starts without a
    # stack: a stack left by an earlier test could hold a previous spec whose
    # secrets no longer work (after a rotation), and stack.rollback would
    # bring it back.
    run_lab_task(environment, "lab.down", "--keep-docker")
    run_lab_task(environment, "lab.up")
    environment["PGPASSWORD"] = superuser_password()
    # The stand-in has one build; the upgrade target is the same image under the next tag.
    current = f"{LOOPBACK_IMAGE}:{lab_values()['AUTHENTIK_TAG']}"
    subprocess.run(
        ["docker", "tag", current, f"{LOOPBACK_IMAGE}:{UPGRADE_TAG}"], check=True
    )
    labnode.tag_image(current, f"{LOOPBACK_IMAGE}:{UPGRADE_TAG}")
    yield environment
    run_lab_task(environment, "lab.down")


def test_every_command_runs_against_lab(lab_shell):
    failures = []
    for section, command in runbook_commands():
        if SKIP_MARK in command:
            continue
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            env=lab_shell,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            failures.append(
                f"[{section}] {command}: exit {result.returncode}\n{result.stdout[-1500:]}{result.stderr[-1500:]}"
            )
            break
    assert failures == []
