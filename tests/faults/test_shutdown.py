"""SIGTERM while requests are in flight: the node stops accepting, lets requests
finish for up to the grace period, then closes what is left; the process exits 0
within the grace period, and nothing half-sent is ever passed off as complete."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.process import MeshdProcess
from tests.support.rawhttp import request, sign_headers
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

GRACE = 3
SIZE = 64 << 20


def _node(tmp_path: Path) -> MeshdProcess:
    cfg = tmp_path / "meshd.toml"
    cfg.write_text(f"[s3]\nshutdown_grace_seconds = {GRACE}\n")
    return MeshdProcess(tmp_path / "data", config=cfg)


def _put_large(node: MeshdProcess, key: str) -> str:
    s3 = node.client()
    s3.create_bucket(Bucket="big")
    block = os.urandom(1 << 20)
    data = b"".join(block[i:] + block[:i] for i in range(SIZE >> 20))
    s3.put_object(Bucket="big", Key=key, Body=data)
    digest = hashlib.sha256(data).hexdigest()
    _PUT[digest] = data
    return digest


_PUT: dict[str, bytes] = {}  # what _put_large stored, by digest (blobs on disk are encrypted)


def _open_get(node: MeshdProcess, key: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    u = urlsplit(node.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    # A small receive buffer keeps most of the object on the server's side.
    conn.connect()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    path = f"/big/{key}"
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for k, v in sign_headers(node.endpoint, "GET", path).items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 200
    return conn, resp


def _read_all(resp: http.client.HTTPResponse, pause: float = 0.0) -> tuple[bytes, BaseException | None]:
    got = bytearray()
    try:
        while True:
            chunk = resp.read1(256 * 1024)
            if not chunk:
                break
            got += chunk
            if pause:
                time.sleep(pause)
    except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
        return bytes(got), exc
    return bytes(got), None


def test_sigterm_during_large_get_completes_or_closes_cleanly(tmp_path: Path) -> None:
    node = _node(tmp_path).start()
    try:
        digest = _put_large(node, "obj")
        conn, resp = _open_get(node, "obj")
        first = resp.read(1 << 20)  # the transfer is under way
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        # A fast reader finishes within the grace period: the whole object arrives.
        rest, exc = _read_all(resp)
        conn.close()
        body = first + rest
        assert exc is None, exc
        assert len(body) == SIZE and hashlib.sha256(body).hexdigest() == digest
        assert node.proc.wait(GRACE + 15) == 0
        assert time.monotonic() - started < GRACE + 15
    finally:
        node.kill()


def test_sigterm_with_a_stalled_reader_closes_after_the_grace_period(tmp_path: Path) -> None:
    node = _node(tmp_path).start()
    try:
        digest = _put_large(node, "obj")
        conn, resp = _open_get(node, "obj")
        first = resp.read(1 << 20)
        node.proc.send_signal(signal.SIGTERM)
        # This reader never catches up before the grace period ends ...
        code = node.proc.wait(GRACE + 15)
        assert code == 0
        # ... so the connection is closed under it: what arrived is a true
        # prefix of the object, shorter than the Content-Length announced.
        rest, _ = _read_all(resp)
        conn.close()
        body = first + rest
        assert len(body) < SIZE
        assert body == _expected_prefix(tmp_path, digest, len(body))
        assert "Traceback" not in node.stderr_text()
    finally:
        node.kill()


def _staged_bytes(data_dir: Path) -> int:
    """The size of the largest temp file in the node's store: an upload in progress."""
    sizes = [0]
    for p in (data_dir / "store" / "tmp").iterdir():
        try:
            sizes.append(p.stat().st_size)
        except FileNotFoundError:
            pass
    return max(sizes)


def _expected_prefix(tmp_path: Path, digest: str, n: int) -> bytes:
    return _PUT[digest][:n]


def test_no_new_connections_after_sigterm_and_restart_serves_everything(tmp_path: Path) -> None:
    node = _node(tmp_path).start()
    try:
        digest = _put_large(node, "obj")
        conn, resp = _open_get(node, "obj")
        resp.read(1 << 20)
        node.proc.send_signal(signal.SIGTERM)
        u = urlsplit(node.endpoint)

        def refused() -> bool:
            try:
                socket.create_connection((u.hostname, u.port), timeout=2).close()
            except OSError:
                return True
            return False

        wait_until(refused, GRACE + 10, what="the node to refuse connections after SIGTERM", interval=0.05)
        conn.close()
        assert node.proc.wait(GRACE + 15) == 0
    finally:
        node.kill()
    again = MeshdProcess(tmp_path / "data").start()
    try:
        body = again.client().get_object(Bucket="big", Key="obj")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest
    finally:
        again.stop()


def test_sigterm_during_upload_is_all_or_nothing(tmp_path: Path) -> None:
    """An upload cut off by shutdown either completed (200, readable) or left no object."""
    node = _node(tmp_path).start()
    try:
        node.client().create_bucket(Bucket="upl")
        u = urlsplit(node.endpoint)
        total = 256 << 20
        path = "/upl/slow"
        headers = sign_headers(node.endpoint, "PUT", path, {"Content-Length": str(total)},
                               payload="UNSIGNED-PAYLOAD")
        outcome: dict[str, object] = {}

        def upload() -> None:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
            try:
                conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers.items():
                    conn.putheader(k, v)
                conn.endheaders()
                chunk = b"z" * (1 << 20)
                for _ in range(total >> 20):
                    conn.send(chunk)
                    time.sleep(0.02)
                outcome["status"] = conn.getresponse().status
            except (OSError, http.client.HTTPException) as exc:
                outcome["error"] = exc
            finally:
                conn.close()

        t = threading.Thread(target=upload)
        t.start()
        # The node is storing the upload (not merely receiving its headers) when SIGTERM comes.
        wait_until(lambda: _staged_bytes(tmp_path / "data") >= 16 << 20 or not t.is_alive(), 60,
                   what="16 MiB of the upload staged")
        assert not outcome, outcome  # still under way
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(GRACE + 15) == 0
        t.join(60)
        assert not t.is_alive()
        # A clean shutdown removes the staged bytes of the cut-off upload itself.
        assert list((tmp_path / "data" / "store" / "tmp").iterdir()) == []
    finally:
        node.kill()
    again = MeshdProcess(tmp_path / "data").start()
    try:
        head = request(again.endpoint, "HEAD", path)
        if outcome.get("status") == 200:
            assert head.status == 200 and head.header("Content-Length") == str(total)
        else:
            assert head.status == 404
        assert list((tmp_path / "data" / "store" / "tmp").iterdir()) == []
    finally:
        again.stop()
