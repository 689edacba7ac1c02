"""The command line: every namespace listed, every flag explained."""

import subprocess
import sys
from pathlib import Path

import pytest

import tasks

REPO = Path(__file__).resolve().parent.parent


def all_tasks():
    for collection_name, collection in tasks.ns.collections.items():
        for task_name, task in collection.tasks.items():
            yield f"{collection_name}.{task_name}", task
    for task_name, task in tasks.ns.tasks.items():
        yield task_name, task


TASKS = dict(all_tasks())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_has_one_line_docstring(name):
    doc = (TASKS[name].__doc__ or "").strip()
    assert doc, f"{name} has no docstring"
    assert "\n" not in doc.split("\n\n")[0].strip(), (
        f"{name}: first paragraph spans lines"
    )


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_flag_has_help(name):
    task = TASKS[name]
    for argument in task.get_arguments():
        assert argument.help, f"{name} --{argument.name} has no help"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_takes_env(name):
    names = {argument.name for argument in TASKS[name].get_arguments()}
    assert "env" in names


def test_list_shows_every_namespace():
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for collection_name in tasks.ns.collections:
        assert f"{collection_name}." in result.stdout
