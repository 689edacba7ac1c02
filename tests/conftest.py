"""Shared fixtures: a real sshd on loopback and an env file written per test."""

import os
from pathlib import Path

import pytest

from tests.support.envfiles import write_env
from tests.support.sshd import start_sshd


def pytest_collection_modifyitems(config, items):
    """Run the lab's tests last: lab.down stops the dockerd that other tests share."""
    items.sort(key=lambda item: item.get_closest_marker("lab") is not None)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 that accepts root with a throwaway key."""
    if os.geteuid() != 0:
        pytest.skip("sshd as root needs root")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def env_dir(tmp_path, monkeypatch) -> Path:
    """An empty folder of env files, selected with OPS_ENV_DIR for this test."""
    directory = tmp_path / "env"
    directory.mkdir()
    monkeypatch.setenv("OPS_ENV_DIR", str(directory))
    monkeypatch.delenv("OPS_ENV", raising=False)
    return directory


@pytest.fixture
def make_env(env_dir):
    """Write env/NAME.env from the lab's values with some keys changed; returns its path."""

    def make(name: str = "test", **changes: str | None) -> Path:
        return write_env(env_dir, name, changes)

    return make
