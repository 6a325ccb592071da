from __future__ import annotations

import os
import sysconfig
import uuid
from pathlib import Path

import pytest

from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY, MeshdProcess


def pytest_configure(config: pytest.Config) -> None:
    # The aws cli and s3cmd come with the test extra: find them next to this
    # interpreter even where its scripts directory is not on PATH (pyenv shims
    # not yet rehashed, a venv not activated).
    scripts = sysconfig.get_path("scripts")
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory):
    """One meshd process shared by a test session; tests use their own buckets."""
    proc = MeshdProcess(tmp_path_factory.mktemp("node") / "data").start()
    yield proc
    proc.stop()


@pytest.fixture
def fresh_node(tmp_path: Path):
    """A meshd process of the test's own, for tests that restart or kill it."""
    proc = MeshdProcess(tmp_path / "data")
    yield proc
    proc.kill()


@pytest.fixture
def s3(node: MeshdProcess):
    return node.client()


@pytest.fixture
def bucket(s3) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_env(node: MeshdProcess) -> dict[str, str]:
    """Environment for the aws cli against the session node."""
    import os

    return dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null",
                AWS_SHARED_CREDENTIALS_FILE="/dev/null")
