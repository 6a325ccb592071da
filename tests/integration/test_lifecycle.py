"""The `meshd` command itself: first start with embedded defaults, generated and
persisted credentials, environment credentials, CLI overrides, one-line config
errors, a busy port, and clean exits on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(120)


def meshd_command() -> list[str]:
    """The installed console script, as a user runs it."""
    exe = shutil.which("meshd")
    return [exe] if exe else [sys.executable, "-m", "meshd"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHD_")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass
class Banner:
    endpoint: str
    data: str
    access_key: str
    secret_key: str
    text: str


@dataclass
class Running:
    proc: subprocess.Popen
    banner: Banner

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.stdout.close()

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        return boto3.client(
            "s3", endpoint_url=self.banner.endpoint, region_name="us-east-1",
            aws_access_key_id=access_key or self.banner.access_key,
            aws_secret_access_key=secret_key or self.banner.secret_key,
            config=Config(retries={"max_attempts": 1}),
        )


def start(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 30) -> Running:
    proc = subprocess.Popen(meshd_command() + ["run", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        lines.append(line)
        if line.strip() == "ready":
            text = "".join(lines)
            fields = {k: re.search(rf"{k}:\s+(\S+)", text) for k in ("endpoint", "data", "access key", "secret key")}
            assert all(fields.values()), text
            return Running(proc, Banner(*(m.group(1) for m in fields.values()), text))
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"meshd did not start:\n{''.join(lines)}\n{err.decode()}")


@pytest.fixture
def running():
    started: list[Running] = []

    def _start(args: list[str], cwd: Path, env: dict[str, str]) -> Running:
        r = start(args, cwd, env)
        started.append(r)
        return r

    yield _start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(10)


def fail(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run a start-up that must fail; its exit code and stderr lines."""
    proc = subprocess.run(meshd_command() + ["run", *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr.splitlines()


# -- first start -------------------------------------------------------------

def test_first_start_with_defaults_creates_data_dir_and_prints_credentials(tmp_path: Path, running) -> None:
    # No --config and no --data: the embedded default data dir ./meshd-data
    # (the port is overridden so the test never collides with a real :9000).
    node = running(["--listen", "127.0.0.1:0"], tmp_path, clean_env())
    b = node.banner
    assert (tmp_path / "meshd-data").is_dir()
    assert Path(b.data) == (tmp_path / "meshd-data").resolve()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", b.endpoint)
    assert len(b.access_key) >= 16 and len(b.secret_key) >= 30
    assert f"aws --endpoint-url {b.endpoint} s3" in b.text
    assert f"AWS_ACCESS_KEY_ID={b.access_key}" in b.text
    s3 = node.client()
    s3.create_bucket(Bucket="first")
    assert [x["Name"] for x in s3.list_buckets()["Buckets"]] == ["first"]
    with pytest.raises(ClientError) as exc:
        node.client(secret_key="not-the-secret-key-0000000000000000000000").list_buckets()
    assert exc.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert node.stop() == 0


def test_generated_credentials_persist_across_restarts(tmp_path: Path, running) -> None:
    first = running(["--listen", "127.0.0.1:0"], tmp_path, clean_env())
    first.client().create_bucket(Bucket="kept")
    assert first.stop() == 0
    second = running(["--listen", "127.0.0.1:0"], tmp_path, clean_env())
    assert (second.banner.access_key, second.banner.secret_key) == (first.banner.access_key, first.banner.secret_key)
    assert [x["Name"] for x in second.client().list_buckets()["Buckets"]] == ["kept"]
    assert second.stop() == 0
    # The secrets file is private to the user running the node.
    for db in (tmp_path / "meshd-data").glob("registry.db"):
        assert db.stat().st_mode & 0o077 == 0


def test_environment_sets_initial_credentials(tmp_path: Path, running) -> None:
    env = clean_env(MESHD_ACCESS_KEY="ENVKEY0000000000001", MESHD_SECRET_KEY="env-secret-key-abcdefghijklmnop")
    node = running(["--listen", "127.0.0.1:0", "--data", str(tmp_path / "d")], tmp_path, env)
    assert node.banner.access_key == "ENVKEY0000000000001"
    assert node.banner.secret_key == "env-secret-key-abcdefghijklmnop"
    node.client().create_bucket(Bucket="from-env")
    with pytest.raises(ClientError) as exc:
        node.client(access_key="NOSUCHKEY0000000000").list_buckets()
    assert exc.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert node.stop() == 0


def test_half_set_environment_credentials_are_an_error(tmp_path: Path) -> None:
    code, err = fail(["--listen", "127.0.0.1:0", "--data", str(tmp_path / "d")], tmp_path,
                     clean_env(MESHD_ACCESS_KEY="ONLYTHEKEY00000000"))
    assert code != 0
    assert len(err) == 1 and "MESHD_SECRET_KEY" in err[0]


def test_cli_flags_override_the_config_file(tmp_path: Path, running) -> None:
    cfg = tmp_path / "meshd.toml"
    cfg.write_text(f'[node]\ndata_dir = "{tmp_path / "from-config"}"\n[s3]\nlisten = "127.0.0.1:1"\n')
    node = running(["--config", str(cfg), "--listen", "127.0.0.1:0", "--data", str(tmp_path / "from-flag")],
                   tmp_path, clean_env())
    assert Path(node.banner.data) == (tmp_path / "from-flag").resolve()
    assert not node.banner.endpoint.endswith(":1")
    assert (tmp_path / "from-flag").is_dir() and not (tmp_path / "from-config").exists()
    assert node.stop() == 0


def test_config_file_values_are_used(tmp_path: Path, running) -> None:
    cfg = tmp_path / "meshd.toml"
    cfg.write_text(f'[node]\ndata_dir = "{tmp_path / "cfgdata"}"\n[s3]\nlisten = "127.0.0.1:0"\nregion = "eu-central-1"\n')
    node = running(["--config", str(cfg)], tmp_path, clean_env())
    assert Path(node.banner.data) == (tmp_path / "cfgdata").resolve()
    s3 = boto3.client("s3", endpoint_url=node.banner.endpoint, region_name="eu-central-1",
                      aws_access_key_id=node.banner.access_key, aws_secret_access_key=node.banner.secret_key)
    s3.create_bucket(Bucket="regional", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    assert s3.get_bucket_location(Bucket="regional")["LocationConstraint"] == "eu-central-1"
    assert node.stop() == 0


# -- start-up errors: one line, naming the problem, no traceback --------------

@pytest.mark.parametrize("text,key", [
    ("[s3]\nno_such_option = 1\n", "s3.no_such_option"),
    ("[nosuchsection]\nx = 1\n", "nosuchsection"),
    ('[s3]\nlisten = "not-an-address"\n', "s3.listen"),
    ('[storage]\nio_chunk_bytes = "lots"\n', "storage.io_chunk_bytes"),
    ("[s3]\nbody_read_timeout_seconds = -1\n", "s3.body_read_timeout_seconds"),
    ('[log]\nlevel = "chatty"\n', "log.level"),
    ("[log]\naccess_log = 3\n", "log.access_log"),
    ('[s3]\nvirtual_host_domains = "x"\n', "s3.virtual_host_domains"),
])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    code, err = fail(["--config", str(cfg), "--data", str(tmp_path / "d")], tmp_path)
    assert code != 0
    assert len(err) == 1, err
    assert key in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "d").exists()  # nothing created before the config was valid


def test_unparseable_toml_and_missing_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("this is = = not toml\n")
    code, err = fail(["--config", str(cfg)], tmp_path)
    assert code != 0 and len(err) == 1 and "broken.toml" in err[0]
    code, err = fail(["--config", str(tmp_path / "missing.toml")], tmp_path)
    assert code != 0 and len(err) == 1 and "missing.toml" in err[0]
    assert not (tmp_path / "meshd-data").exists()


@pytest.mark.parametrize("flag,value", [("--listen", "nowhere"), ("--listen", "127.0.0.1:99999")])
def test_bad_flag_values(tmp_path: Path, flag: str, value: str) -> None:
    code, err = fail([flag, value, "--data", str(tmp_path / "d")], tmp_path)
    assert code != 0 and len(err) == 1 and "listen" in err[0]


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = fail(["--listen", f"127.0.0.1:{port}", "--data", str(tmp_path / "d")], tmp_path)
    assert code != 0
    assert len(err) == 1, err
    assert str(port) in err[0] and "in use" in err[0]


def test_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    code, err = fail(["--listen", "127.0.0.1:0", "--data", str(tmp_path / "file")], tmp_path)
    assert code != 0 and len(err) == 1 and "file" in err[0]


# -- signals -----------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signals_shut_down_cleanly(tmp_path: Path, running, sig: int) -> None:
    node = running(["--listen", "127.0.0.1:0", "--data", str(tmp_path / "d")], tmp_path, clean_env())
    s3 = node.client()
    s3.create_bucket(Bucket="before")
    s3.put_object(Bucket="before", Key="k", Body=b"durable")
    assert node.stop(sig) == 0
    err = node.proc.stderr.read().decode()
    assert "Traceback" not in err, err
    again = running(["--listen", "127.0.0.1:0", "--data", str(tmp_path / "d")], tmp_path, clean_env())
    assert again.client().get_object(Bucket="before", Key="k")["Body"].read() == b"durable"
    assert again.stop() == 0
