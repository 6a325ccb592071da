"""The s3 backend against real S3 servers on loopback: moto's `moto_server` and a
second meshd node, each a separately started process.

The contract checks of test_backend_contract.py run here against both remotes
(that suite drives every call through its own asyncio.run, which does not fit a
backend holding an aiohttp session; the checks are the same). Then what only a
remote has: multipart staging, UploadPartCopy commits, ranged reads, staging
cleanup of abandoned uploads, retries and error mapping.

The remote is observed with boto3, a client independent of the backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from backends.base import BackendError, BackendFull, BlobMissing, BlobRef
from backends.s3 import MiB, RetryPolicy, S3Backend
from tests.support.moto import MotoServer, client
from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY, MeshdProcess
from tests.support.wait import async_wait_until

pytestmark = pytest.mark.timeout(120)

READ_CHUNK = 100_003  # odd, so reads cross chunk boundaries at unaligned offsets
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
BUCKET = "meshd-s3-backend"


# --- remotes ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto(tmp_path_factory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        client(server.endpoint).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def remote_meshd(tmp_path_factory) -> Iterator[MeshdProcess]:
    node = MeshdProcess(tmp_path_factory.mktemp("remote") / "data").start()
    try:
        node.client().create_bucket(Bucket=BUCKET)
        yield node
    finally:
        node.kill()


@pytest.fixture(params=["moto", "meshd"])
def endpoint(request) -> str:
    if request.param == "moto":
        return request.getfixturevalue("moto").endpoint
    return request.getfixturevalue("remote_meshd").endpoint


@pytest.fixture
async def backend(endpoint) -> AsyncIterator[S3Backend]:
    # Each test has its own prefix (with characters that need encoding, so the
    # signer's URI encoding is checked by a server that verifies signatures).
    b = S3Backend("remote", endpoint=endpoint, bucket=BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                  region=REGION, prefix=f"t {uuid.uuid4().hex[:8]}/ü=~/", read_chunk=READ_CHUNK,
                  retry=FAST_RETRY)
    yield b
    await b.aclose()


def staged_on_remote(b: S3Backend) -> list[str]:
    """Staged objects and unfinished uploads, as an independent client sees them."""
    s3 = client(_endpoint(b))
    objects = s3.list_objects_v2(Bucket=b.bucket, Prefix=b.staging_prefix).get("Contents", [])
    uploads = s3.list_multipart_uploads(Bucket=b.bucket, Prefix=b.staging_prefix).get("Uploads", [])
    return [o["Key"] for o in objects] + [u["Key"] for u in uploads]


def _endpoint(b: S3Backend) -> str:
    return f"{b._scheme}://{b._netloc}"


async def source(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


async def read(b: S3Backend, ref: BlobRef, start: int = 0, length: int | None = None) -> bytes:
    chunks = [c async for c in b.open(ref, start, length)]
    assert all(chunks), "no empty chunks"
    return b"".join(chunks)


async def store(b: S3Backend, data: bytes) -> BlobRef:
    return await b.commit(await b.write(source(data)), sha256(data))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# --- the contract, against both remotes --------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, READ_CHUNK + 1, 3 * MiB])
async def test_round_trip_and_ranges(backend, size):
    data = blob(size, size)
    staged = await backend.write(source(data, 7_777))
    assert (staged.backend, staged.size) == ("remote", size)
    ref = await backend.commit(staged, sha256(data))
    assert ref == BlobRef("remote", sha256(data), size)
    assert await backend.stat(ref) is not None
    assert await read(backend, ref) == data
    rng = random.Random(size)
    for _ in range(4):
        start = rng.randint(0, size)
        length = rng.randint(0, size - start)
        assert await read(backend, ref, start) == data[start:]
        assert await read(backend, ref, start, length) == data[start:start + length]
    assert staged_on_remote(backend) == []
    assert backend.file_region(ref, 0, size) is None  # not a local file: no sendfile


async def test_commit_of_identical_content_keeps_one_copy(backend):
    data = os.urandom(50_000)
    one = await backend.write(source(data))
    two = await backend.write(source(data, 7))
    assert one.token != two.token
    assert await backend.commit(one, sha256(data)) == await backend.commit(two, sha256(data))
    assert staged_on_remote(backend) == []
    assert [i async for i in backend.blob_ids()] == [[sha256(data)]]
    ref = BlobRef("remote", sha256(data), len(data))
    await backend.delete(ref)  # one stored copy: a single delete removes it
    assert await backend.stat(ref) is None


async def test_concurrent_writes_and_commits(backend):
    blobs = [os.urandom(200_000 + i) for i in range(4)] + [b"same"] * 3
    staged = await asyncio.gather(*(backend.write(source(b, 10_000)) for b in blobs))
    refs = await asyncio.gather(*(backend.commit(s, sha256(b)) for s, b in zip(staged, blobs)))
    for ref, b in zip(refs, blobs):
        assert await read(backend, ref) == b
    assert staged_on_remote(backend) == []
    ids = sorted(i for batch in [x async for x in backend.blob_ids()] for i in batch)
    assert ids == sorted({sha256(b) for b in blobs})


async def test_discard_then_commit_is_an_error(backend):
    staged = await backend.write(source(b"dropped"))
    assert len(staged_on_remote(backend)) == 1
    await backend.discard(staged)
    await backend.discard(staged)  # twice is harmless
    assert staged_on_remote(backend) == []
    with pytest.raises(BackendError):
        await backend.commit(staged, sha256(b"dropped"))
    # Also when the same content is already stored.
    await store(backend, b"dropped")
    with pytest.raises(BackendError):
        await backend.commit(staged, sha256(b"dropped"))


class SourceBroke(Exception):
    pass


async def failing_source(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in source(data):
        yield chunk
    raise SourceBroke("checksum mismatch")


@pytest.mark.parametrize("size", [100_000, 9 * MiB], ids=["single-put", "multipart"])
async def test_failing_source_leaves_nothing_staged(backend, size):
    with pytest.raises(SourceBroke):
        await backend.write(failing_source(blob(size)))
    assert staged_on_remote(backend) == []  # the multipart upload was aborted
    assert await backend.cleanup_staging() == 0


async def test_cancelled_multipart_write_leaves_nothing_staged(backend):
    started = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield blob(9 * MiB)  # past the first part: the upload has begun
        started.set()
        await asyncio.Event().wait()
        yield b""  # pragma: no cover

    task = asyncio.create_task(backend.write(stalled()))
    await started.wait()
    # The multipart upload exists on the remote: the cancellation has one to abort.
    await async_wait_until(lambda: asyncio.to_thread(staged_on_remote, backend), 30,
                           what="the multipart upload on the remote")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert staged_on_remote(backend) == []


async def test_cleanup_staging_removes_leftovers_and_abandoned_uploads(backend):
    kept = await store(backend, b"committed")
    leftovers = [await backend.write(source(blob(n))) for n in (0, 10, 100_000)]
    # A writer that died mid-multipart leaves an unfinished upload.
    client(_endpoint(backend)).create_multipart_upload(Bucket=BUCKET, Key=backend.staging_prefix + "dead")
    assert len(staged_on_remote(backend)) == 4
    assert await backend.cleanup_staging() == 4
    assert staged_on_remote(backend) == []
    for staged in leftovers:
        with pytest.raises(BackendError):
            await backend.commit(staged, sha256(b"x"))
    assert await read(backend, kept) == b"committed"
    assert await backend.cleanup_staging() == 0


async def test_missing_and_deleted_blobs(backend):
    never = BlobRef("remote", sha256(b"never written"), 13)
    assert await backend.stat(never) is None
    for start, length in [(0, None), (0, 0), (5, 3)]:
        with pytest.raises(BlobMissing):
            await read(backend, never, start, length)
    data = os.urandom(5000)
    ref = await store(backend, data)
    await backend.delete(ref)
    await backend.delete(ref)  # deleting what is gone is not an error
    with pytest.raises(BlobMissing):
        await read(backend, ref)
    assert await read(backend, await store(backend, data)) == data  # the same bytes can come back


async def test_blob_shorter_than_recorded_is_an_error(backend):
    ref = await store(backend, os.urandom(1000))
    with pytest.raises(BackendError):
        await read(backend, BlobRef(ref.backend, ref.content_id, ref.size + 10))
    with pytest.raises(BackendError):
        await read(backend, ref, 500, 600)
    with pytest.raises(BackendError):
        await read(backend, ref, 2000, 1)


async def test_reader_may_stop_early(backend):
    data = blob(3 * READ_CHUNK)
    ref = await store(backend, data)
    stream = backend.open(ref)
    first = await anext(stream)
    await stream.aclose()
    assert data.startswith(first)
    assert await read(backend, ref) == data


# --- what only a remote has --------------------------------------------------------------


async def test_20_mib_blob_goes_through_multipart(backend):
    data = blob(20 * MiB, 20)
    staged = await backend.write(source(data, 256 * 1024))
    head = client(_endpoint(backend)).head_object(Bucket=BUCKET, Key=staged.token)
    assert head["ContentLength"] == 20 * MiB
    assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB parts
    ref = await backend.commit(staged, sha256(data))
    for start, length in [(0, 20 * MiB), (8 * MiB - 3, 6), (16 * MiB - 1, 4 * MiB + 1), (20 * MiB - 1, 1)]:
        assert await read(backend, ref, start, length) == data[start:start + length]
    assert staged_on_remote(backend) == []


async def test_blob_of_exactly_one_part(backend):
    """The source ends exactly at a part boundary: one PUT, no empty extra part."""
    data = blob(8 * MiB, 8)
    ref = await store(backend, data)
    assert await read(backend, ref, 8 * MiB - 10) == data[-10:]


async def test_large_commit_uses_upload_part_copy(endpoint):
    b = S3Backend("remote", endpoint=endpoint, bucket=BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                  prefix=f"copy-{uuid.uuid4().hex[:8]}/", copy_limit=10 * MiB, copy_part_size=6 * MiB,
                  retry=FAST_RETRY)
    try:
        data = blob(13 * MiB, 13)
        ref = await store(b, data)
        head = client(endpoint).head_object(Bucket=BUCKET, Key=b.blob_key(ref.content_id))
        assert head["ETag"].strip('"').endswith("-3")  # 6 + 6 + 1 MiB copied parts
        assert await read(b, ref) == data
        assert staged_on_remote(b) == []
    finally:
        await b.aclose()


async def test_wrong_secret_fails_at_once(remote_meshd):
    """meshd checks signatures: a bad key is a 403, not retried."""
    b = S3Backend("remote", endpoint=remote_meshd.endpoint, bucket=BUCKET, access_key=ACCESS_KEY,
                  secret_key="not-the-secret", retry=RetryPolicy(attempts=5, base_delay=30))
    try:
        with pytest.raises(BackendError) as info:
            await asyncio.wait_for(b.write(source(b"x")), 10)  # no 30 s backoff: not retried
        assert "403" in str(info.value)
    finally:
        await b.aclose()


async def test_remote_stopped_mid_upload_is_backend_error(tmp_path):
    server = MotoServer(tmp_path / "moto.log")
    try:
        client(server.endpoint).create_bucket(Bucket=BUCKET)
        b = S3Backend("remote", endpoint=server.endpoint, bucket=BUCKET, access_key=ACCESS_KEY,
                      secret_key=SECRET_KEY, retry=FAST_RETRY)
        ref = await store(b, b"stored before")

        async def stops_the_remote() -> AsyncIterator[bytes]:
            yield blob(9 * MiB)  # the multipart upload starts...
            server.stop()  # ...and the remote goes away
            yield blob(1 * MiB)

        with pytest.raises(BackendError):
            await asyncio.wait_for(b.write(stops_the_remote()), 20)
        with pytest.raises(BackendError):
            await asyncio.wait_for(b.stat(ref), 20)
        with pytest.raises(BackendError):
            await asyncio.wait_for(read(b, ref), 20)
        await b.aclose()
    finally:
        server.stop()


# --- retries and error mapping, against a scripted remote --------------------------------


class Scripted:
    """An HTTP server that answers each request with the next (status, S3 error code)."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        self.script = script
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        status, code = self.script[min(self.requests, len(self.script) - 1)]
        self.requests += 1
        if not code:
            return web.Response(status=status)
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>"
        return web.Response(status=status, body=body if request.method != "HEAD" else None,
                            content_type="application/xml")


@pytest.fixture
async def scripted() -> AsyncIterator:
    runners = []

    async def start(script: list[tuple[int, str]], attempts: int = 5) -> tuple[Scripted, S3Backend]:
        remote = Scripted(script)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", remote.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        b = S3Backend("remote", endpoint=f"http://127.0.0.1:{port}", bucket=BUCKET, access_key="a",
                      secret_key="s", retry=RetryPolicy(attempts=attempts, base_delay=0.001, max_delay=0.01))
        runners.append((runner, b))
        return remote, b

    yield start
    for runner, b in runners:
        await b.aclose()
        await runner.cleanup()


async def test_5xx_and_slowdown_are_retried(scripted):
    remote, b = await scripted([(503, "SlowDown"), (500, "InternalError"), (200, "")])
    assert await b.stat(BlobRef("remote", "ab" * 32, 1)) is not None
    assert remote.requests == 3


async def test_retries_are_bounded(scripted):
    remote, b = await scripted([(503, "SlowDown")], attempts=4)
    with pytest.raises(BackendError) as info:
        await b.write(source(b"x"))
    assert not isinstance(info.value, BackendFull)
    assert "SlowDown" in str(info.value)
    assert remote.requests == 4


@pytest.mark.parametrize("status, code, error", [
    (403, "AccessDenied", BackendError),
    (400, "InvalidRequest", BackendError),
    (507, "InsufficientStorage", BackendFull),
    (400, "EntityTooLarge", BackendFull),
])
async def test_client_errors_are_not_retried(scripted, status, code, error):
    remote, b = await scripted([(status, code), (200, "")])
    with pytest.raises(error):
        await b.write(source(b"x"))
    assert remote.requests == 1


async def test_ranged_read_retries_a_5xx(scripted):
    remote, b = await scripted([(503, "SlowDown"), (404, "NoSuchKey")])
    with pytest.raises(BlobMissing):
        await read(b, BlobRef("remote", "ab" * 32, 10))
    assert remote.requests == 2


# --- addressing ---------------------------------------------------------------------------


def test_virtual_and_path_style_urls():
    kw = {"endpoint": "http://s3.example:9000", "bucket": "data", "access_key": "a", "secret_key": "s", "prefix": "p/"}
    path = S3Backend("r", **kw)
    virtual = S3Backend("r", addressing_style="virtual", **kw)
    key = path.blob_key("ab" * 32)
    assert path._url(key) == ("s3.example:9000", f"/data/{key}", f"http://s3.example:9000/data/{key}")
    assert virtual._url(key) == ("data.s3.example:9000", f"/{key}", f"http://data.s3.example:9000/{key}")
    assert virtual._url(None)[1] == "/"
    with pytest.raises(ValueError):
        S3Backend("r", **{**kw, "endpoint": "s3.example"})
    with pytest.raises(ValueError):
        S3Backend("r", addressing_style="dns", **kw)


async def test_read_resumes_after_a_connection_lost_mid_stream():
    """The first GET dies halfway; the backend asks for the rest and serves every byte once."""
    data = blob(300_000, 3)
    ranges: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers["Range"])
        first, last = (int(x) for x in request.headers["Range"].removeprefix("bytes=").split("-"))
        body = data[first:last + 1]
        resp = web.StreamResponse(status=206, headers={"Content-Length": str(len(body))})
        await resp.prepare(request)
        if len(ranges) == 1:
            await resp.write(body[:100_000])
            # Every byte written has left for the client; then the remote drops the connection.
            await async_wait_until(lambda: request.transport.get_write_buffer_size() == 0, 10,
                                   what="the first 100,000 bytes sent")
            request.transport.close()
            return resp
        await resp.write(body)
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    b = S3Backend("remote", endpoint=f"http://127.0.0.1:{runner.addresses[0][1]}", bucket=BUCKET,
                  access_key="a", secret_key="s", read_chunk=10_000, retry=FAST_RETRY)
    try:
        ref = BlobRef("remote", sha256(data), len(data))
        assert await read(b, ref, 10, 250_000) == data[10:250_010]
        assert ranges[0] == "bytes=10-250009"
        assert ranges[1] == "bytes=100010-250009"
    finally:
        await b.aclose()
        await runner.cleanup()
