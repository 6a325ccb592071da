"""Start and stop real `meshd run` processes on loopback for tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "MKTESTACCESSKEY00001"
SECRET_KEY = "test-secret-key-0123456789abcdefghijklmn"
REGION = "us-east-1"


@dataclass
class MeshdProcess:
    data_dir: Path
    config: Path | None = None
    listen: str = "127.0.0.1:0"
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    endpoint: str = ""
    log_path: Path | None = None

    def start(self, timeout: float = 30.0) -> "MeshdProcess":
        env = dict(os.environ, MESHD_ACCESS_KEY=ACCESS_KEY, MESHD_SECRET_KEY=SECRET_KEY,
                   PYTHONUNBUFFERED="1", **self.extra_env)
        cmd = [sys.executable, "-m", "meshd", "run", "--listen", self.listen, "--data", str(self.data_dir)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.stderr.log"
        self._stderr = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
            m = re.search(r"endpoint:\s+(\S+)", line)
            if m:
                self.endpoint = m.group(1)
            if line.strip() == "ready":
                return self
        self.kill()
        raise RuntimeError(f"meshd did not start: {''.join(lines)}\n{self.stderr_text()}")

    def stderr_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the clean shutdown path."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close()

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()

    def client(self, **config):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, region_name=REGION,
            config=Config(retries={"max_attempts": 1}, **config),
        )
