"""A real `moto_server` process (moto's stand-alone S3 server, from PyPI) on
127.0.0.1, for tests of the s3 backend and of nodes whose buckets live on a
remote S3 service. `restart()` brings a killed server back on the same port
(moto keeps no state across restarts: buckets must be created again)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import boto3
from botocore.config import Config

from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log_path = log
        self._log = open(log, "ab")
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        proc = subprocess.Popen(["moto_server", "-p", str(self.port), "-H", "127.0.0.1"],
                                stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return proc
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait(10)
        raise RuntimeError("moto_server did not start")

    def kill(self) -> None:
        """SIGKILL, as a crashed or unplugged remote: connections drop mid-request."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        if self._log.closed:
            self._log = open(self._log_path, "ab")
        self.proc = self._spawn()

    def stop(self) -> None:
        self.kill()
        self._log.close()


def client(endpoint: str, access: str = ACCESS_KEY, secret: str = SECRET_KEY):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name=REGION, config=Config(s3={"addressing_style": "path"},
                                                          retries={"max_attempts": 1}))
