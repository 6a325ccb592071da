"""One contract, every backend (after Tahoe-LAFS test_istorageserver.py and Garage
src/db/test.rs): the same tests run against FilesystemBackend and MemoryBackend,
raw and wrapped in EncodedBackend (ChaCha20-Poly1305, zstd, both), the way a node
wraps every backend it builds.

The s3 backend joins it against a real `moto_server` process (started once per
test process), as "s3" and, encrypted, "s3+aead".

The contract is backends/base.py's docstring: write stages durable bytes, commit
moves them to their content-addressed place (replacing what was there), discard and cleanup_staging
drop staged bytes, reads return exactly the requested range, and failures are
BackendError subclasses. Then what only encoded backends promise: no sendfile
region, tampered or truncated stored bytes fail loudly (never wrong bytes), and a
range reads only the stored bytes it needs. Filesystem-only checks (fsync, temp
files on disk) are at the end.

Tests drive the async API with asyncio.run so hypothesis can run them too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import hashlib
import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import AsyncIterator, Awaitable, Iterable, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.base import (
    Backend,
    BackendError,
    BackendFull,
    BlobMissing,
    BlobRef,
    StagedBlob,
)
from backends.encoded import BlobCodec, EncodedBackend, is_corruption
from backends.encryption import KEY_ID_SIZE, MasterKey, MasterKeyError
from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from backends.s3 import S3Backend
from tests.support.moto import MotoServer, client
from tests.support.process import ACCESS_KEY, SECRET_KEY
from tests.support.wait import async_wait_until

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
MiB = 1024 * 1024


def run(aw: Awaitable[T]) -> T:
    async def main() -> T:
        try:
            return await aw
        finally:
            # An s3 backend's HTTP session belongs to this loop; the next run()
            # has another, and the backend opens a new session there.
            for b in _S3_BACKENDS:
                await b.aclose()

    return asyncio.run(main())


_S3_BACKENDS: list[S3Backend] = []
_MOTO: list[MotoServer] = []


def moto_endpoint() -> str:
    """One moto_server for this test process, started on first use."""
    if not _MOTO:
        server = MotoServer(Path(tempfile.mkdtemp(prefix="moto-contract-")) / "moto.log")
        atexit.register(server.kill)
        _MOTO.append(server)
    return _MOTO[0].endpoint


def make_s3_backend(root: Path) -> S3Backend:
    """A fresh bucket per test (named from its directory) on the shared moto_server."""
    endpoint = moto_endpoint()
    bucket = "contract-" + hashlib.sha256(str(root).encode()).hexdigest()[:20]
    s3 = client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    backend = S3Backend("remote", endpoint=endpoint, bucket=bucket, access_key=ACCESS_KEY,
                        secret_key=SECRET_KEY, read_chunk=READ_CHUNK)
    _S3_BACKENDS[:] = [backend]  # one per test: the previous test's is done
    return backend


async def source(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i:i + chunk]


async def chunked(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def failing_source(data: bytes, exc: BaseException) -> AsyncIterator[bytes]:
    yield data
    raise exc


async def read(backend: Backend, ref: BlobRef, start: int = 0, length: int | None = None) -> bytes:
    chunks = [c async for c in backend.open(ref, start, length)]
    assert all(chunks), "no empty chunks"
    return b"".join(chunks)


async def store(backend: Backend, data: bytes) -> BlobRef:
    staged = await backend.write(source(data))
    return await backend.commit(staged, sha256(data))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw(backend: Backend) -> Backend:
    """The backend that holds the stored bytes (below any codec)."""
    return backend.inner if isinstance(backend, EncodedBackend) else backend


def tmp_files(backend: Backend) -> list[str]:
    """Staged files on disk (filesystem), staged entries (memory), staged objects
    and unfinished uploads as an independent client sees them (s3)."""
    backend = raw(backend)
    if isinstance(backend, FilesystemBackend):
        return os.listdir(backend.root / "tmp")
    if isinstance(backend, S3Backend):
        s3 = client(moto_endpoint())
        objects = s3.list_objects_v2(Bucket=backend.bucket, Prefix=backend.staging_prefix).get("Contents", [])
        uploads = s3.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.staging_prefix).get("Uploads", [])
        return [o["Key"] for o in objects] + [u["Key"] for u in uploads]
    return list(backend._staged)


def blob_files(backend: FilesystemBackend) -> list[Path]:
    return [p for p in (backend.root / "blobs").rglob("*") if p.is_file()]


# An odd read size, so reads cross chunk boundaries at unaligned offsets.
READ_CHUNK = 100_003

MASTER = MasterKey.generate()
# kind -> (inner backend, encrypt, compress)
WRAPPED = {
    "memory+aead": ("memory", True, False),
    "filesystem+aead": ("filesystem", True, False),  # small blobs: the one-hop local read
    "filesystem+zstd+aead": ("filesystem", True, True),
    "memory+zstd": ("memory", False, True),
}
HAVE_MOTO = shutil.which("moto_server") is not None
if HAVE_MOTO:
    WRAPPED["s3+aead"] = ("s3", True, False)
KINDS = ["filesystem", "memory", *(["s3"] if HAVE_MOTO else []), *WRAPPED]


def make_backend(kind: str, root: Path) -> Backend:
    if kind in WRAPPED:
        inner, encrypt, compress = WRAPPED[kind]
        return EncodedBackend(make_backend(inner, root), BlobCodec(MASTER, encrypt=encrypt, compress=compress))
    if kind == "filesystem":
        return FilesystemBackend("local", root, read_chunk=READ_CHUNK)
    if kind == "s3":
        return make_s3_backend(root)
    return MemoryBackend("memory")


def same_blob(ref: BlobRef, backend: Backend, data: bytes) -> bool:
    """`ref` names `data` on `backend` (its encoding is the backend's business)."""
    return (ref.backend, ref.content_id, ref.size) == (backend.name, sha256(data), len(data))


@pytest.fixture(params=KINDS)
def backend(request, tmp_path) -> Backend:
    return make_backend(request.param, tmp_path / "store")


@pytest.fixture
def fs(tmp_path) -> FilesystemBackend:
    return FilesystemBackend("local", tmp_path / "store", read_chunk=READ_CHUNK)


# --- round trip ------------------------------------------------------------------------


@st.composite
def blob_and_range(draw) -> tuple[bytes, list[int], int, int]:
    """Content of 0..3 MiB (from a seed: fast), how the writer chunks it, and a range."""
    size = draw(st.one_of(
        st.integers(0, 4096),
        st.integers(0, 3 * MiB),
        st.sampled_from([READ_CHUNK - 1, READ_CHUNK, READ_CHUNK + 1, MiB, 3 * MiB]),
    ))
    data = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=8)))
    start = draw(st.integers(0, size))
    length = draw(st.integers(0, size - start))
    return data, cuts, start, length


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("kind", KINDS)
@given(case=blob_and_range())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_write_commit_open_round_trip(kind, tmp_path, case):
    data, cuts, start, length = case
    backend = make_backend(kind, tmp_path / "store")

    async def go() -> None:
        staged = await backend.write(chunked(split(data, cuts)))  # may include empty chunks
        assert staged.size == len(data) and staged.backend == backend.name
        ref = await backend.commit(staged, sha256(data))
        assert same_blob(ref, backend, data)
        assert await backend.stat(ref) == ref.stored == staged.stored  # the bytes as stored
        assert await read(backend, ref) == data
        assert await read(backend, ref, start) == data[start:]
        assert await read(backend, ref, start, length) == data[start:start + length]
        assert tmp_files(backend) == []

    run(go())


def test_empty_blob(backend):
    async def go() -> None:
        ref = await store(backend, b"")
        assert ref.size == 0
        assert await backend.stat(ref) == ref.stored
        assert await read(backend, ref) == b""
        assert await read(backend, ref, 0, 0) == b""

    run(go())


def test_writes_of_different_content_do_not_mix(backend):
    blobs = [os.urandom(n) for n in (1, 1000, 300_000)]

    async def go() -> None:
        refs = [await store(backend, b) for b in blobs]
        for ref, b in zip(refs, blobs):
            assert await read(backend, ref) == b

    run(go())


def test_concurrent_writes(backend):
    blobs = [os.urandom(200_000 + i) for i in range(6)]

    async def go() -> None:
        staged = await asyncio.gather(*(backend.write(source(b, 10_000)) for b in blobs))
        refs = await asyncio.gather(*(backend.commit(s, sha256(b)) for s, b in zip(staged, blobs)))
        for ref, b in zip(refs, blobs):
            assert await read(backend, ref) == b

    run(go())


def test_reader_may_stop_early(backend):
    data = os.urandom(3 * READ_CHUNK)

    async def go() -> None:
        ref = await store(backend, data)
        stream = backend.open(ref)
        first = await anext(stream)
        await stream.aclose()  # releases the file
        assert data.startswith(first)
        assert await read(backend, ref) == data

    run(go())


# --- same content twice -----------------------------------------------------------------


def test_commit_of_identical_content_keeps_one_copy(backend):
    data = os.urandom(50_000)

    async def go() -> None:
        one = await backend.write(source(data))
        two = await backend.write(source(data, 7))
        assert one.token != two.token
        ref1 = await backend.commit(one, sha256(data))
        ref2 = await backend.commit(two, sha256(data))
        assert ref1 == ref2
        assert await read(backend, ref2) == data
        assert tmp_files(backend) == []  # the second staged copy replaced the first
        # One stored copy: a single delete removes it.
        await backend.delete(ref1)
        assert await backend.stat(ref2) is None

    run(go())


def test_concurrent_commits_of_identical_content(backend):
    data = os.urandom(10_000)

    async def go() -> None:
        staged = await asyncio.gather(*(backend.write(source(data)) for _ in range(4)))
        refs = await asyncio.gather(*(backend.commit(s, sha256(data)) for s in staged))
        assert len(set(refs)) == 1
        assert await read(backend, refs[0]) == data
        assert tmp_files(backend) == []

    run(go())


def test_commit_replaces_a_damaged_copy(fs):
    data = b"same bytes"

    async def go() -> None:
        ref = await store(fs, data)
        path = fs.blob_path(ref.content_id)
        path.write_bytes(b"rotten")  # bit rot, or a leftover from a crash
        await store(fs, data)
        assert path.read_bytes() == data  # repaired by the new commit
        assert blob_files(fs) == [path]

    run(go())


# --- discard, failures, cleanup ----------------------------------------------------------


def test_discard_removes_staged_data(backend):
    async def go() -> None:
        staged = await backend.write(source(os.urandom(1000)))
        assert len(tmp_files(backend)) == 1
        await backend.discard(staged)
        assert tmp_files(backend) == []
        await backend.discard(staged)  # twice is harmless
        with pytest.raises(BackendError):
            await backend.commit(staged, sha256(b"whatever"))
        assert await backend.cleanup_staging() == 0

    run(go())


class SourceBroke(Exception):
    pass


@pytest.mark.parametrize("exc", [
    SourceBroke("checksum mismatch"),
    ConnectionResetError(errno.ECONNRESET, "client went away"),
    OSError(errno.ENOSPC, "not the backend's disk"),
], ids=["exception", "connection-reset", "source-oserror"])
def test_failing_source_leaves_nothing_staged(backend, exc):
    async def go() -> None:
        # The source's own error comes out unchanged: it is not a storage failure.
        with pytest.raises(type(exc)) as info:
            await backend.write(failing_source(os.urandom(300_000), exc))
        assert info.value is exc
        assert tmp_files(backend) == []
        assert await backend.cleanup_staging() == 0

    run(go())


def test_cancelled_write_leaves_nothing_staged(backend):
    async def go() -> None:
        started = asyncio.Event()

        async def stalled() -> AsyncIterator[bytes]:
            yield os.urandom(100_000)
            yield os.urandom(100_000)  # a writer that looks one chunk ahead stores the first now
            started.set()
            await asyncio.Event().wait()  # the client stops sending
            yield b""  # pragma: no cover

        task = asyncio.create_task(backend.write(stalled()))
        await started.wait()  # the writer wants a third chunk
        if isinstance(backend, FilesystemBackend):
            # There is a temp file to clean up (the other kinds hold 200 KB in memory,
            # or below a codec's first batch, and show nothing staged yet).
            await async_wait_until(lambda: tmp_files(backend), 10, what="the first chunk on disk")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert tmp_files(backend) == []

    run(go())


def test_cleanup_staging_removes_leftovers(backend):
    async def go() -> None:
        kept = await store(backend, b"committed")
        leftovers = [await backend.write(source(os.urandom(n))) for n in (0, 10, 100_000)]
        assert len(tmp_files(backend)) == 3
        assert await backend.cleanup_staging() == 3
        assert tmp_files(backend) == []
        for staged in leftovers:
            with pytest.raises(BackendError):
                await backend.commit(staged, sha256(b"x"))
        assert await read(backend, kept) == b"committed"  # committed blobs stay
        assert await backend.cleanup_staging() == 0

    run(go())


def test_cleanup_staging_after_a_crash(tmp_path):
    """A process killed mid-write leaves temp files; a new backend on the same root removes them."""
    root = tmp_path / "store"
    first = FilesystemBackend("local", root)
    run(first.write(source(b"half an upload")))
    (root / "tmp" / "0123.part").write_bytes(b"older leftover")
    ref = run(store(first, b"done"))
    second = FilesystemBackend("local", root)
    assert run(second.cleanup_staging()) == 2
    assert os.listdir(root / "tmp") == []
    assert run(read(second, ref)) == b"done"


# --- delete and missing blobs ------------------------------------------------------------


def test_delete_then_open_is_blob_missing(backend):
    data = os.urandom(5000)

    async def go() -> None:
        ref = await store(backend, data)
        await backend.delete(ref)
        assert await backend.stat(ref) is None
        with pytest.raises(BlobMissing):
            await read(backend, ref)
        await backend.delete(ref)  # deleting what is gone is not an error
        again = await store(backend, data)  # and the same bytes can come back
        assert await read(backend, again) == data

    run(go())


def test_open_of_never_written_blob_is_blob_missing(backend):
    ref = BlobRef(backend.name, sha256(b"never written"), 13)
    assert run(backend.stat(ref)) is None
    with pytest.raises(BlobMissing):
        run(read(backend, ref))
    assert issubclass(BlobMissing, BackendError)


def test_blob_shorter_than_recorded_is_an_error(backend):
    """A truncated blob is reported, never served short."""
    data = os.urandom(1000)

    async def go() -> None:
        ref = await store(backend, data)
        longer = dataclasses.replace(ref, size=ref.size + 10)
        with pytest.raises(BackendError):
            await read(backend, longer)
        with pytest.raises(BackendError):
            await read(backend, ref, 500, 600)

    run(go())


# --- file regions (sendfile) --------------------------------------------------------------


@pytest.mark.parametrize("start, length", [(0, 0), (0, 70_000), (1, 1), (12_345, 40_000), (69_999, 1)])
def test_file_region(backend, start, length):
    data = os.urandom(70_000)
    ref = run(store(backend, data))
    region = backend.file_region(ref, start, length)
    if not isinstance(raw(backend), FilesystemBackend) or ref.encoding != "plain":
        assert region is None  # no local file, or ciphertext in it: nothing for sendfile
        return
    assert (region.offset, region.length) == (start, length)
    with open(region.path, "rb") as f:
        assert f.read() == data  # the whole file is exactly the blob: nothing else in it
        f.seek(region.offset)
        assert f.read(region.length) == data[start:start + length]


# --- read_at -------------------------------------------------------------------------------


def stored_bytes(backend: Backend, ref: BlobRef) -> bytes:
    inner = raw(backend)
    if isinstance(inner, FilesystemBackend):
        return inner.blob_path(ref.content_id).read_bytes()
    if isinstance(inner, S3Backend):
        got = client(moto_endpoint()).get_object(Bucket=inner.bucket, Key=inner.blob_key(ref.content_id))
        return got["Body"].read()
    return inner._blobs[ref.content_id]


def replace_stored(backend: Backend, ref: BlobRef, data: bytes) -> None:
    """Change a committed blob's stored bytes behind the backend's back (bit rot, a cut file)."""
    inner = raw(backend)
    if isinstance(inner, FilesystemBackend):
        inner.blob_path(ref.content_id).write_bytes(data)
    elif isinstance(inner, S3Backend):
        client(moto_endpoint()).put_object(Bucket=inner.bucket, Key=inner.blob_key(ref.content_id), Body=data)
    else:
        inner._blobs[ref.content_id] = data


@pytest.mark.parametrize("offset, length", [(0, 0), (0, 1), (0, 300_000), (1, 299_999), (123_457, 65_536),
                                            (299_999, 1), (READ_CHUNK - 1, 2)])
def test_read_at_returns_exactly_the_range(backend, offset, length):
    data = os.urandom(300_000)

    async def go() -> None:
        ref = await store(backend, data)
        assert await backend.read_at(ref, offset, length) == data[offset:offset + length]

    run(go())


def test_read_at_of_missing_blob_is_blob_missing(backend):
    with pytest.raises(BlobMissing):
        run(backend.read_at(BlobRef(backend.name, sha256(b"nope"), 4), 0, 4))


@pytest.mark.parametrize("cut", [1, 1000, 70_000])
def test_read_at_of_truncated_blob_is_short_or_an_error(backend, cut):
    """Raw backends return what is there (fewer bytes: the caller sees the cut);
    encoded ones must fail rather than return fewer or other bytes."""
    data = os.urandom(150_000)

    async def go() -> None:
        ref = await store(backend, data)
        replace_stored(backend, ref, stored_bytes(backend, ref)[:-cut])
        try:
            got = await backend.read_at(ref, 0, len(data))
        except BackendError:
            return
        assert not isinstance(backend, EncodedBackend), "an encoded blob cut short must fail"
        assert len(got) < len(data) and data.startswith(got)

    run(go())


# --- encoded backends: tampering, truncation, bounded reads ---------------------------------------

ENCODED = list(WRAPPED)
KEY_ID_AT = 16  # magic (8), version, algorithm, reserved (2), segment size (4): docs/encryption.md


@st.composite
def tamper_case(draw) -> tuple[int, int, int, int, int]:
    """A blob size (seed), a stored byte to damage (as a fraction), and a range."""
    size = draw(st.one_of(st.integers(1, 4096), st.integers(1, 600_000),
                          st.sampled_from([64 * 1024, 64 * 1024 + 1, MiB, MiB + 1])))
    where = draw(st.integers(0, 2**32))
    start = draw(st.integers(0, size - 1))
    length = draw(st.integers(1, size - start))
    return size, draw(st.integers(0, 2**32)), where, start, length


@pytest.mark.parametrize("kind", ENCODED)
@given(case=tamper_case())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_tampered_byte_is_an_error_never_wrong_bytes(kind, tmp_path, case):
    size, seed, where, start, length = case
    backend = make_backend(kind, tmp_path / f"store-{seed}")
    _, encrypt, _ = WRAPPED[kind]
    rnd = random.Random(seed)
    # Random bytes (zstd keeps such frames raw) or compressible ones (zstd frames).
    # zstd alone checks its footer, table and zstd frames but not raw frames (the
    # codec relies on AEAD above it, or the catalog's SHA-256): compressible only.
    random_bytes = encrypt and seed % 2
    if not encrypt and size % MiB < 4096:  # a tail frame this short may stay raw
        size += 4096
        length = size - start
    data = rnd.randbytes(size) if random_bytes else bytes(rnd.choice(b"ACGT") for _ in range(size))

    def damage_reported(e: BackendError, pos: int) -> bool:
        if is_corruption(e):
            return True
        # A flipped bit in the header's master key id reads as "written under
        # another master key": a loud error too, though not one marked corrupt.
        return encrypt and isinstance(e, MasterKeyError) and KEY_ID_AT <= pos < KEY_ID_AT + KEY_ID_SIZE

    async def go() -> None:
        ref = await store(backend, data)
        assert backend.file_region(ref, 0, size) is None
        stored = bytearray(stored_bytes(backend, ref))
        pos = where % len(stored)
        stored[pos] ^= 1 << (where % 8)
        replace_stored(backend, ref, bytes(stored))
        # The whole blob touches every stored byte: with AEAD it must fail, as
        # corruption. zstd alone may decode the right bytes (some bits of a zstd
        # frame carry nothing), never other ones.
        try:
            whole = await read(backend, ref)
        except BackendError as e:
            assert damage_reported(e, pos), repr(e)
        else:
            assert not encrypt and whole == data, "a damaged encrypted blob was read"
        # A range either misses the damage and is right, or fails the same way.
        try:
            got = await read(backend, ref, start, length)
        except BackendError as e:
            assert damage_reported(e, pos), repr(e)
        else:
            assert got == data[start:start + length]

    run(go())


@pytest.mark.parametrize("kind", ENCODED)
@pytest.mark.parametrize("keep", [0, 1, 83, 84, 100, -1, -16, -17, -56, -65_552])
def test_truncated_encoded_blob_is_an_error(kind, keep, tmp_path):
    """Cut anywhere (inside the header, a segment, a tag, the zstd footer, a whole
    segment off): reads of the whole or the tail fail; never fewer or other bytes."""
    backend = make_backend(kind, tmp_path / "store")
    data = random.Random(keep).randbytes(200_000)

    async def go() -> None:
        ref = await store(backend, data)
        stored = stored_bytes(backend, ref)
        replace_stored(backend, ref, stored[:keep])
        with pytest.raises(BackendError):
            await read(backend, ref)
        # A range far from the cut may still be served: its bytes are intact.
        try:
            assert await read(backend, ref, 0, 1000) == data[:1000]
        except BackendError:
            pass
        with pytest.raises(BackendError):
            await read(backend, ref, len(data) - 1, 1)  # the cut tail: never short, never other bytes

    run(go())


class CountingBackend:
    """A backend that counts the stored bytes its reads return."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.read_bytes = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def read_at(self, ref: BlobRef, offset: int, length: int) -> bytes:
        data = await self.inner.read_at(ref, offset, length)
        self.read_bytes += len(data)
        return data

    async def open(self, ref: BlobRef, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in self.inner.open(ref, start, length):
            self.read_bytes += len(chunk)
            yield chunk


@pytest.mark.parametrize("kind", ENCODED)
@pytest.mark.parametrize("where", [0, 2 * MiB + 12_345, 4 * MiB - 1])
def test_small_range_reads_a_bounded_amount(kind, where, tmp_path):
    """A 1-byte range of a 4 MiB blob reads its segment (64 KiB) or its zstd frame
    (1 MiB) plus headers and tables, never the blob."""
    _, encrypt, compress = WRAPPED[kind]
    counting = CountingBackend(MemoryBackend("memory"))
    backend = EncodedBackend(counting, BlobCodec(MASTER, encrypt=encrypt, compress=compress))
    data = random.Random(where).randbytes(4 * MiB)
    bound = (MiB if compress else 0) + 3 * 64 * 1024 + 4096

    async def go() -> None:
        ref = await store(backend, data)
        counting.read_bytes = 0
        assert await read(backend, ref, where, 1) == data[where:where + 1]
        assert 0 < counting.read_bytes <= bound, counting.read_bytes

    run(go())


# --- durability (filesystem) ---------------------------------------------------------------


def test_commit_is_durable(fs, monkeypatch):
    """The temp file is fsynced before the rename, the directory after it, and each
    directory created on the way is made durable in its parent."""
    real_fsync = os.fsync
    synced: list[str] = []

    def counting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    data = b"durable bytes"
    cid = sha256(data)

    async def go() -> None:
        staged = await fs.write(source(data))
        assert synced == [staged.token]  # the data, before anyone may commit it
        await fs.commit(staged, cid)

    run(go())
    final = fs.blob_path(cid)
    blobs = fs.root / "blobs"
    assert synced[1:] == [str(blobs), str(blobs / cid[:2]), str(final.parent)]
    assert final.read_bytes() == data

    # A second blob in the same directories only needs the rename made durable.
    synced.clear()
    other = next(b for b in (b"%d" % i for i in range(10**6)) if sha256(b)[:4] == cid[:4])
    ref = run(store(fs, other))
    assert synced[1:] == [str(final.parent)]
    assert fs.blob_path(ref.content_id).parent == final.parent


def test_cleanup_is_durable(fs, monkeypatch):
    run(fs.write(source(b"leftover")))
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    assert run(fs.cleanup_staging()) == 1
    assert synced == [str(fs.root / "tmp")]


# --- a full disk ------------------------------------------------------------------------------


def fail_writes_under(monkeypatch, directory: Path, err: int) -> None:
    """os.write fails with `err` for files in `directory` (and only there)."""
    real_write = os.write

    def write(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(directory)):
            raise OSError(err, os.strerror(err))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_is_backend_full(fs, monkeypatch, err):
    fail_writes_under(monkeypatch, fs.root / "tmp", err)
    with pytest.raises(BackendFull):
        run(fs.write(source(os.urandom(100_000))))
    assert os.listdir(fs.root / "tmp") == []


def test_io_error_is_backend_error(fs, monkeypatch):
    fail_writes_under(monkeypatch, fs.root / "tmp", errno.EIO)
    with pytest.raises(BackendError) as info:
        run(fs.write(source(b"x")))
    assert not isinstance(info.value, BackendFull)
    assert os.listdir(fs.root / "tmp") == []


def test_failed_fsync_is_backend_error(fs, monkeypatch):
    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BackendError):
        run(fs.write(source(b"never durable")))
    assert os.listdir(fs.root / "tmp") == []


def test_full_disk_during_commit_is_backend_full(fs, monkeypatch):
    staged = run(fs.write(source(b"bytes")))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "mkdir", no_space)
    with pytest.raises(BackendFull):
        run(fs.commit(staged, sha256(b"bytes")))
    monkeypatch.undo()
    run(fs.discard(staged))  # what the object service does next
    assert os.listdir(fs.root / "tmp") == []


def test_full_memory_backend_is_backend_full():
    backend = MemoryBackend(capacity=1000)
    with pytest.raises(BackendFull):
        run(backend.write(source(os.urandom(2000), 100)))
    assert tmp_files(backend) == []
    ref = run(store(backend, b"small enough"))  # space that was never taken is still there
    assert run(read(backend, ref)) == b"small enough"


def test_staged_blob_is_a_plain_record():
    s = StagedBlob("local", "token", 3)
    assert (s.backend, s.token, s.size) == ("local", "token", 3)


def test_min_free_bytes_refuses_writes_that_would_fill_the_disk(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    full = FilesystemBackend("fs", tmp_path / "full", min_free_bytes=free + 1)
    roomy = FilesystemBackend("fs", tmp_path / "roomy", min_free_bytes=1)

    async def go() -> None:
        for size in (0, 10, 3 * MiB):  # one chunk, or several
            with pytest.raises(BackendFull):
                await full.write(source(os.urandom(size)))
        assert tmp_files(full) == []  # nothing half-written left behind
        ref = await store(roomy, b"fits")
        assert await read(roomy, ref) == b"fits"

    run(go())
