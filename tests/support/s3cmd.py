"""Run s3cmd against a test node (path-style, plain http)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.support.process import ACCESS_KEY, SECRET_KEY, MeshdProcess


def s3cmd_runner(node: MeshdProcess, cfg: Path, *, signature_v2: bool, debug: bool = False) -> Callable[..., subprocess.CompletedProcess]:
    """A function running `s3cmd ARGS...` with a config for `node`; skips the
    test when s3cmd is not installed. It asserts a zero exit."""
    exe = shutil.which("s3cmd")
    if exe is None:
        pytest.skip("s3cmd is not installed (pip install s3cmd, part of the test extra)")
    hostport = node.endpoint.removeprefix("http://")
    cfg.write_text(
        "[default]\n"
        f"access_key = {ACCESS_KEY}\n"
        f"secret_key = {SECRET_KEY}\n"
        f"host_base = {hostport}\n"
        f"host_bucket = {hostport}\n"  # no %(bucket)s: path-style addressing
        "use_https = False\n"
        f"signature_v2 = {signature_v2}\n"
        "bucket_location = us-east-1\n"
        "check_ssl_certificate = False\n"
        "guess_mime_type = False\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [exe, "-c", str(cfg), *(["--debug"] if debug else []), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"s3cmd {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        return proc

    return run
