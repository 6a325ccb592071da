"""A backend that is down, full or slow: real meshd processes, a real
`moto_server` process as the remote S3 service, a real (small) filesystem.

The promise (issue 3, "Faults"): the buckets on the failing backend answer S3
errors (503 SlowDown, 507 InsufficientStorage), no partial version is ever
committed, no staged bytes are left behind, and buckets on other backends keep
working meanwhile. The node recovers when the backend does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import ClientSession, web
from botocore.exceptions import ClientError

from tests.support.moto import MotoServer, client, free_port
from tests.support.process import ACCESS_KEY, SECRET_KEY, MeshdProcess
from tests.support.rawhttp import UNSIGNED, parse_raw, read_response, sign_headers
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024
GiB = 1024 * MiB
REMOTE_BUCKET = "meshd-blobs"  # the bucket on moto that holds the node's blobs
BODY = 100 * 1024  # above the 16 KiB inline limit: the bytes go to the backend


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def s3_backend_table(name: str, endpoint: str) -> str:
    return f"""
[backends.{name}]
type = "s3"
endpoint = "{endpoint}"
bucket = "{REMOTE_BUCKET}"
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
"""


@contextmanager
def running_node(tmp_path: Path, config_text: str, buckets: tuple[str, ...]) -> Iterator[MeshdProcess]:
    """A node started with this config and these buckets created; killed after."""
    config = write_config(tmp_path / "meshd.toml", config_text)
    node = MeshdProcess(tmp_path / "data", config=config).start(timeout=60)
    try:
        s3 = node.client()
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        yield node
    finally:
        node.kill()


def s3_error(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def versions(s3, bucket: str, prefix: str = "") -> list[str]:
    """Every version and delete marker of `bucket` under `prefix`, as key@version."""
    page = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return [f"{v['Key']}@{v['VersionId']}" for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]


def assert_works(s3, bucket: str) -> None:
    """A PUT and a GET of a fresh object on `bucket` succeed."""
    key = f"ok-{uuid.uuid4().hex[:8]}"
    body = os.urandom(BODY)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


class SlowPut:
    """A PUT of `total` bytes over a raw socket, sent in 1 MiB pieces with a pause
    between them, in a thread; the response is read as soon as the node sends
    it, even while the body is still going out (a node that gives up early
    answers before the client has finished)."""

    def __init__(self, endpoint: str, path: str, total: int, pause: float) -> None:
        self.total = total
        self.pause = pause
        self.sent = 0
        self._stop = threading.Event()
        u = urlsplit(endpoint)
        headers = sign_headers(endpoint, "PUT", path, {"Content-Length": str(total)}, payload=UNSIGNED)
        head = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.sock = socket.create_connection((u.hostname, u.port), timeout=120)
        self.sock.sendall(head.encode())
        self._sender = threading.Thread(target=self._send, daemon=True)
        self._sender.start()

    def _send(self) -> None:
        piece = os.urandom(MiB)
        try:
            while self.sent < self.total and not self._stop.is_set():
                n = min(MiB, self.total - self.sent)
                self.sock.sendall(piece[:n])
                self.sent += n
                time.sleep(self.pause)
        except OSError:
            pass  # the node answered and closed: the reply says why

    def wait_sent(self, at_least: int) -> None:
        def sent() -> bool:
            assert self.sent >= at_least or self._sender.is_alive(), f"stuck at {self.sent} bytes"
            return self.sent >= at_least

        wait_until(sent, 60, what=f"{at_least} bytes sent")

    def reply(self) -> tuple[int, dict[str, str], bytes]:
        try:
            return parse_raw(read_response(self.sock))
        finally:
            self._stop.set()
            self.sock.close()
            self._sender.join(10)


def error_code(body: bytes) -> str:
    from xml.etree import ElementTree as ET

    root = ET.fromstring(body)
    assert root.tag == "Error", body[:300]
    return root.findtext("Code") or ""


# --- a remote S3 backend that goes down --------------------------------------------------


@pytest.fixture
def moto(tmp_path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path / "moto.log")
    try:
        client(server.endpoint).create_bucket(Bucket=REMOTE_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote_node(tmp_path, moto) -> Iterator[MeshdProcess]:
    """Default backend local; bucket `remote-bucket` on the moto server."""
    with running_node(tmp_path, s3_backend_table("remote", moto.endpoint) + REMOTE_BUCKET_TABLE,
                      ("remote-bucket", "local-bucket")) as node:
        yield node


REMOTE_BUCKET_TABLE = """
[buckets.remote-bucket]
backend = "remote"
"""


def test_remote_killed_mid_upload(remote_node, moto):
    s3 = remote_node.client()
    existing = os.urandom(BODY)
    s3.put_object(Bucket="remote-bucket", Key="existing", Body=existing)
    assert s3.get_object(Bucket="remote-bucket", Key="existing")["Body"].read() == existing

    # 40 MiB, slowly: the s3 backend uploads 8 MiB parts, so the remote has
    # taken at least one part when it dies.
    put = SlowPut(remote_node.endpoint, "/remote-bucket/big", 40 * MiB, pause=0.05)
    put.wait_sent(12 * MiB)
    moto.kill()
    status, headers, body = put.reply()
    assert (status, error_code(body)) == (503, "SlowDown"), (status, body[:500])
    assert headers.get("x-amz-request-id")
    assert versions(s3, "remote-bucket", "big") == []

    # During the outage: the local bucket is unaffected; the remote one answers 503.
    assert_works(s3, "local-bucket")
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="remote-bucket", Key="existing")
    assert s3_error(info.value) == (503, "SlowDown")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="remote-bucket", Key="during", Body=os.urandom(BODY))
    assert s3_error(info.value) == (503, "SlowDown")
    assert versions(s3, "remote-bucket", "during") == []
    # Listing is the catalog's: it still answers, and shows only what committed.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="remote-bucket")["Contents"]] == ["existing"]

    # The remote comes back (empty: moto keeps nothing across a restart).
    moto.restart()
    client(moto.endpoint).create_bucket(Bucket=REMOTE_BUCKET)
    assert_works(s3, "remote-bucket")
    big = os.urandom(20 * MiB)
    s3.put_object(Bucket="remote-bucket", Key="big", Body=big)
    assert s3.get_object(Bucket="remote-bucket", Key="big")["Body"].read() == big
    assert len(versions(s3, "remote-bucket", "big")) == 1
    assert_works(s3, "local-bucket")
    # Every failure was an answered S3 error, none an unhandled exception.
    assert "Traceback" not in remote_node.stderr_text(), remote_node.stderr_text()[-3000:]


@pytest.mark.parametrize("dead", ["refusing", "silent"])
def test_a_dead_remote_gives_503_and_the_other_buckets_are_served(tmp_path, dead):
    """A remote that is down at start-up (connections refused) or hung (accepts
    connections, never answers; each try ends at `timeout_seconds`, after
    `attempts` tries the bucket answers 503) does not keep the node from
    starting or from serving the other buckets."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    if dead == "silent":
        silent.listen(64)  # accepted by the kernel, never read or answered
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"  # not listening: refused
    table = s3_backend_table("remote", endpoint) + "timeout_seconds = 1.0\nattempts = 2\n" + REMOTE_BUCKET_TABLE
    try:
        with running_node(tmp_path, table, ("local-bucket", "remote-bucket")) as node:
            s3 = node.client()
            assert_works(s3, "local-bucket")
            with pytest.raises(ClientError) as info:
                s3.put_object(Bucket="remote-bucket", Key="k", Body=os.urandom(BODY))
            assert s3_error(info.value) == (503, "SlowDown")
            assert versions(s3, "remote-bucket") == []
            assert_works(s3, "local-bucket")
            assert "Traceback" not in node.stderr_text()
    finally:
        silent.close()


# --- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def full_node(tmp_path) -> Iterator[tuple[MeshdProcess, Path]]:
    """Bucket `full-bucket` on a filesystem backend that always counts as full
    (min_free_bytes above what the disk has); everything else on a roomy local one."""
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    full_root = tmp_path / "full"
    table = f"""
[backends.full]
type = "filesystem"
path = "{full_root}"
min_free_bytes = {free + GiB}

[buckets.full-bucket]
backend = "full"
"""
    with running_node(tmp_path, table, ("full-bucket", "roomy")) as node:
        yield node, full_root


def staged_files(root: Path) -> list[str]:
    tmp = root / "tmp"
    return os.listdir(tmp) if tmp.exists() else []


def test_full_disk_is_insufficient_storage(full_node):
    node, full_root = full_node
    s3 = node.client()
    body = os.urandom(BODY)

    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="full-bucket", Key="single", Body=body)
    assert s3_error(info.value) == (507, "InsufficientStorage")

    upload = s3.create_multipart_upload(Bucket="full-bucket", Key="multi")["UploadId"]
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket="full-bucket", Key="multi", UploadId=upload, PartNumber=1, Body=os.urandom(5 * MiB))
    assert s3_error(info.value) == (507, "InsufficientStorage")
    assert s3.list_parts(Bucket="full-bucket", Key="multi", UploadId=upload).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket="full-bucket", Key="multi", UploadId=upload)

    s3.put_object(Bucket="roomy", Key="source", Body=body)
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="full-bucket", Key="copy", CopySource={"Bucket": "roomy", "Key": "source"})
    assert s3_error(info.value) == (507, "InsufficientStorage")

    assert versions(s3, "full-bucket") == []
    assert staged_files(full_root) == []
    assert not [p for p in full_root.rglob("*") if p.is_file()]  # nothing staged, nothing committed
    assert staged_files(node.data_dir / "store") == []
    # The other backend is untouched by the full one.
    assert_works(s3, "roomy")
    assert s3.get_object(Bucket="roomy", Key="source")["Body"].read() == body
    # Small objects live in the catalog, not on the backend: they still fit.
    s3.put_object(Bucket="full-bucket", Key="tiny", Body=b"x" * 100)
    assert s3.get_object(Bucket="full-bucket", Key="tiny")["Body"].read() == b"x" * 100
    assert "Traceback" not in node.stderr_text(), node.stderr_text()[-3000:]


def _can_mount_tmpfs(target: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    target.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(target)],
                           capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    mnt = tmp_path / "tmpfs"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("needs root and a working `mount -t tmpfs`")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20, check=False)


def test_real_small_filesystem_fills_up_and_recovers(tmp_path, tmpfs):
    config = write_config(tmp_path / "meshd.toml", f"""
[backends.small]
type = "filesystem"
path = "{tmpfs / "store"}"

[buckets.small-bucket]
backend = "small"
""")
    node = MeshdProcess(tmp_path / "data", config=config).start()
    try:
        s3 = node.client()
        s3.create_bucket(Bucket="small-bucket")
        s3.create_bucket(Bucket="roomy")
        stored: dict[str, str] = {}
        for i in range(20):  # 8 MiB cannot hold 20 MiB
            key = f"obj-{i}"
            try:
                stored[key] = s3.put_object(Bucket="small-bucket", Key=key, Body=os.urandom(MiB))["VersionId"]
            except ClientError as exc:
                assert s3_error(exc) == (507, "InsufficientStorage")
                break
        else:
            pytest.fail("an 8 MiB tmpfs took 20 MiB")
        assert 1 <= len(stored) < 8
        assert sorted(versions(s3, "small-bucket")) == sorted(f"{k}@{v}" for k, v in stored.items())
        assert staged_files(tmpfs / "store") == []
        assert_works(s3, "roomy")
        # Deleting versions frees their blobs: the bucket takes writes again.
        for key, version in stored.items():
            s3.delete_object(Bucket="small-bucket", Key=key, VersionId=version)
        body = os.urandom(MiB)
        s3.put_object(Bucket="small-bucket", Key="again", Body=body)
        assert s3.get_object(Bucket="small-bucket", Key="again")["Body"].read() == body
        assert "Traceback" not in node.stderr_text(), node.stderr_text()[-3000:]
    finally:
        node.kill()


# --- a slow remote --------------------------------------------------------------------------


class SlowProxy:
    """A tiny HTTP proxy in front of moto, in a thread of its own: each response
    is held back `delay` seconds, and while `released` is clear, until it is set;
    in `slowdown` mode it answers 503 SlowDown itself (after the delay) instead
    of forwarding. A fake of a third party's slow S3 service, not of meshd."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.slowdown = False
        self.released = threading.Event()
        self.released.set()
        self.requests = 0
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._session = self._loop.run_until_complete(self._new_session())
        self._ready.set()
        self._loop.run_forever()

    @staticmethod
    async def _new_session() -> ClientSession:
        return ClientSession(auto_decompress=False)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        await asyncio.sleep(self.delay)
        if not self.released.is_set():
            assert await asyncio.to_thread(self.released.wait, 60), "the test never released the proxy"
        if self.slowdown:
            return web.Response(status=503, content_type="application/xml", text=(
                "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body, allow_redirects=False) as up:
            data = await up.read()
            out = {k: v for k, v in up.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")}
            return web.Response(status=up.status, headers=out, body=data)

    def close(self) -> None:
        self.released.set()  # nothing stays held by a test that failed

        async def shutdown() -> None:
            await self._session.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def slow_node(tmp_path, moto) -> Iterator[tuple[MeshdProcess, SlowProxy]]:
    proxy = SlowProxy(moto.endpoint, delay=0.5)
    table = s3_backend_table("slow", proxy.endpoint) + """
[buckets.slow-bucket]
backend = "slow"
"""
    try:
        with running_node(tmp_path, table, ("slow-bucket", "fast")) as node:
            yield node, proxy
    finally:
        proxy.close()


def test_slow_remote_completes_and_does_not_hold_up_other_buckets(slow_node):
    node, proxy = slow_node
    s3 = node.client()
    body = os.urandom(BODY)
    done: dict[str, object] = {}

    def slow_put() -> None:
        try:
            done["put"] = node.client().put_object(Bucket="slow-bucket", Key="k", Body=body)["VersionId"]
        except ClientError as exc:  # reported below
            done["put"] = exc

    worker = threading.Thread(target=slow_put)
    proxy.released.clear()  # the remote answers nothing until the fast bucket has been used
    worker.start()
    wait_until(lambda: proxy.requests > 0, 30, what="the slow PUT to reach the remote")
    # While it waits on the remote, the node serves the other bucket.
    for _ in range(3):
        assert_works(s3, "fast")
    assert worker.is_alive(), done.get("put")
    proxy.released.set()
    worker.join(60)
    assert not worker.is_alive()
    assert isinstance(done["put"], str), done["put"]
    assert s3.get_object(Bucket="slow-bucket", Key="k")["Body"].read() == body
    assert versions(s3, "slow-bucket") == [f"k@{done['put']}"]


def test_remote_that_keeps_answering_slowdown_gives_503_after_retries(slow_node):
    node, proxy = slow_node
    s3 = node.client()
    existing = os.urandom(BODY)
    s3.put_object(Bucket="slow-bucket", Key="existing", Body=existing)
    proxy.slowdown = True
    proxy.delay = 0.05
    before = proxy.requests
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="slow-bucket", Key="refused", Body=os.urandom(BODY))
    assert s3_error(info.value) == (503, "SlowDown")
    assert proxy.requests - before > 1, "the node gave up without retrying"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="slow-bucket", Key="existing")
    assert s3_error(info.value) == (503, "SlowDown")
    assert versions(s3, "slow-bucket", "refused") == []
    assert_works(s3, "fast")
    proxy.slowdown = False  # the remote recovers, and so does the bucket
    assert s3.get_object(Bucket="slow-bucket", Key="existing")["Body"].read() == existing
    assert_works(s3, "slow-bucket")
    assert "Traceback" not in node.stderr_text(), node.stderr_text()[-3000:]
