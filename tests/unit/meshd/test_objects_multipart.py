"""ObjectService multipart uploads over the memory backend and a real SQLite catalog."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import AsyncIterable, AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import BlobRef, StagedBlob
from backends.memory import MemoryBackend
from meshd.catalog import Catalog
from meshd.digests import Digests, checksum_b64, new_checksum
from meshd.errors import (
    BucketNotFound,
    InvalidPart,
    InvalidPartOrder,
    PartTooSmall,
    TooLarge,
    UploadNotFound,
)
from meshd.objects import ObjectService
from meshd.transfers import CompletedPart, Expected, NewObject
from tests.support.services import object_service

MIN = 64  # a small minimum part size keeps these tests fast


class GatedBackend(MemoryBackend):
    """The memory backend, able to hold a staged write until released, so a
    test can slip another call in between staging and commit."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.staged_one = asyncio.Event()

    async def write(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        staged = await super().write(chunks)
        self.staged_one.set()
        if self.gate is not None:
            await self.gate.wait()
        return staged


@pytest.fixture
async def env(tmp_path: Path):
    catalog = Catalog(tmp_path / "catalog.db")
    backend = GatedBackend()
    service = object_service(catalog, {backend.name: backend}, io_chunk_bytes=4096, min_part_bytes=MIN)
    await service.create_bucket("bkt", "owner")
    yield service, backend
    await catalog.aclose()


async def stream(data: bytes, piece: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def has_blob(backend: MemoryBackend, data: bytes) -> bool:
    return await backend.stat(BlobRef(backend.name, sha(data), len(data))) is not None


async def read_all(service: ObjectService, bucket: str, key: str) -> bytes:
    v = await service.get_version(bucket, key, None)
    return b"".join([c async for c in (await service.open_object(v, None)).chunks])


async def upload_parts(service: ObjectService, upload, pieces: list[bytes], **kw) -> list[CompletedPart]:
    done = []
    for n, p in enumerate(pieces, 1):
        part = await service.uploads.upload_part(upload, n, stream(p), Expected(**kw))
        done.append(CompletedPart(n, part.etag))
    return done


def mp_etag(pieces: list[bytes]) -> str:
    return f'"{hashlib.md5(b"".join(hashlib.md5(p).digest() for p in pieces)).hexdigest()}-{len(pieces)}"'


async def test_complete_assembles_and_releases_parts(env):
    service, backend = env
    pieces = [b"a" * MIN, bytes(range(256)) * 2, b"tail"]
    new = NewObject("text/plain", {"cache-control": "no-cache"}, {"m": "1"}, {"t": "v"})
    up = await service.uploads.create("bkt", "dir/obj", "owner", new, None)
    parts = await upload_parts(service, up, pieces)
    v = await service.uploads.complete(up, parts)
    content = b"".join(pieces)
    assert (v.size, v.etag, v.sha256, v.parts_count) == (len(content), mp_etag(pieces), sha(content), 3)
    assert (v.content_type, v.headers, v.user_meta, v.tags) == (
        "text/plain", {"cache-control": "no-cache"}, {"m": "1"}, {"t": "v"})
    assert await read_all(service, "bkt", "dir/obj") == content
    assert await has_blob(backend, content)
    for p in pieces:
        assert not await has_blob(backend, p)
    with pytest.raises(UploadNotFound):
        await service.uploads.get("bkt", "dir/obj", up.upload_id)


async def test_composite_checksum(env):
    service, _ = env
    pieces = [b"x" * MIN, b"y" * 10]
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), "crc32c")
    parts = []
    for n, p in enumerate(pieces, 1):
        part = await service.uploads.upload_part(up, n, stream(p), Expected())
        assert part.checksums == {"crc32c": checksum_b64("crc32c", p)}
        parts.append(CompletedPart(n, part.etag, {"crc32c": part.checksums["crc32c"]}))
    v = await service.uploads.complete(up, parts)
    h = new_checksum("crc32c")
    for p in pieces:
        h.update(base64.b64decode(checksum_b64("crc32c", p)))
    assert v.checksums == {"crc32c": base64.b64encode(h.digest()).decode() + "-2"}


async def test_mismatching_part_checksum_is_invalid_part(env):
    service, _ = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), "sha256")
    part = await service.uploads.upload_part(up, 1, stream(b"abc"), Expected())
    with pytest.raises(InvalidPart):
        await service.uploads.complete(up, [CompletedPart(1, part.etag, {"sha256": checksum_b64("sha256", b"x")})])
    v = await service.uploads.complete(up, [CompletedPart(1, part.etag, {"sha256": checksum_b64("sha256", b"abc")})])
    assert v.size == 3


@pytest.mark.parametrize("numbers,error", [
    ([], InvalidPart),
    ([2, 1], InvalidPartOrder),
    ([1, 1], InvalidPartOrder),
    ([1, 3], InvalidPart),
])
async def test_bad_part_lists(env, numbers, error):
    service, _ = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    parts = {p.part_number: p for p in await upload_parts(service, up, [b"a" * MIN, b"b" * MIN])}
    listed = [parts.get(n, CompletedPart(n, parts[1].etag)) for n in numbers]
    with pytest.raises(error):
        await service.uploads.complete(up, listed)
    # A failed completion leaves the upload as it was.
    assert len((await service.uploads.list_parts(up, 0, 100)).parts) == 2


async def test_wrong_etag_and_small_part(env):
    service, _ = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    parts = await upload_parts(service, up, [b"a" * (MIN - 1), b"b"])
    with pytest.raises(InvalidPart):
        await service.uploads.complete(up, [CompletedPart(1, '"' + "0" * 32 + '"'), parts[1]])
    with pytest.raises(PartTooSmall):
        await service.uploads.complete(up, parts)
    # Unquoted ETags and surrounding blanks are accepted, as S3 does.
    v = await service.uploads.complete(up, [CompletedPart(1, " " + parts[0].etag.strip('"') + " ")])
    assert v.size == MIN - 1


async def test_reupload_replaces_and_releases(env):
    service, backend = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    await service.uploads.upload_part(up, 1, stream(b"first"), Expected())
    second = await service.uploads.upload_part(up, 1, stream(b"second!"), Expected())
    assert not await has_blob(backend, b"first")
    page = await service.uploads.list_parts(up, 0, 10)
    assert [(p.part_number, p.etag, p.size) for p in page.parts] == [(1, second.etag, 7)]


async def test_shared_blobs_are_reference_counted(env):
    service, backend = env
    shared = b"s" * MIN
    await service.put_object("bkt", "obj", stream(shared), NewObject(), Expected())
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    await upload_parts(service, up, [shared, shared])
    await service.uploads.abort(up)
    assert await has_blob(backend, shared)
    assert await read_all(service, "bkt", "obj") == shared
    # A single-part upload's object has its part's bytes: one blob, kept.
    up = await service.uploads.create("bkt", "one", "owner", NewObject(), None)
    parts = await upload_parts(service, up, [b"only"])
    await service.uploads.complete(up, parts)
    assert await has_blob(backend, b"only")
    assert await read_all(service, "bkt", "one") == b"only"


async def test_abort_releases_and_forgets(env):
    service, backend = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    pieces = [b"p1" * 40, b"p2" * 50]
    await upload_parts(service, up, pieces)
    await service.uploads.abort(up)
    for p in pieces:
        assert not await has_blob(backend, p)
    with pytest.raises(UploadNotFound):
        await service.uploads.abort(up)
    with pytest.raises(UploadNotFound):
        await service.uploads.upload_part(up, 1, stream(b"late"), Expected())
    assert not await has_blob(backend, b"late")  # no orphan left by the late part


async def test_abort_during_complete_leaves_no_orphan(env):
    service, backend = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    pieces = [b"a" * MIN, b"b" * 10]
    parts = await upload_parts(service, up, pieces)
    gate = backend.gate = asyncio.Event()
    backend.staged_one.clear()
    completing = asyncio.create_task(service.uploads.complete(up, parts))
    await backend.staged_one.wait()  # assembled and staged, not yet committed
    await service.uploads.abort(up)
    gate.set()
    with pytest.raises(UploadNotFound):
        await completing
    assert not await has_blob(backend, b"".join(pieces))
    for p in pieces:
        assert not await has_blob(backend, p)
    page = await service.list_objects("bkt", "", "", None, 10)
    assert page.versions == []


async def test_abort_during_part_upload_leaves_no_orphan(env):
    service, backend = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    gate = backend.gate = asyncio.Event()
    backend.staged_one.clear()
    uploading = asyncio.create_task(service.uploads.upload_part(up, 1, stream(b"racing part"), Expected()))
    await backend.staged_one.wait()
    await service.uploads.abort(up)
    gate.set()
    with pytest.raises(UploadNotFound):
        await uploading
    assert not await has_blob(backend, b"racing part")


async def test_concurrent_completes_one_wins(env):
    service, backend = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    pieces = [b"a" * MIN, b"b" * MIN, b"c" * 10]
    parts = await upload_parts(service, up, pieces)
    whole, skipping = b"".join(pieces), pieces[0] + pieces[2]
    results = await asyncio.gather(
        service.uploads.complete(up, parts), service.uploads.complete(up, [parts[0], parts[2]]),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, UploadNotFound) for r in results if isinstance(r, BaseException))
    content = await read_all(service, "bkt", "k")
    assert content in (whole, skipping)
    # Only the winner's bytes remain: no orphan from the loser, no part blobs.
    for candidate in (whole, skipping, *pieces):
        assert await has_blob(backend, candidate) == (candidate == content)


async def test_part_and_parts_limits(tmp_path: Path):
    catalog = Catalog(tmp_path / "c.db")
    try:
        service = object_service(catalog, {"memory": MemoryBackend()}, max_part_bytes=10, min_part_bytes=1,
                                 max_parts=2)
        await service.create_bucket("bkt", "owner")
        up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
        with pytest.raises(TooLarge):
            await service.uploads.upload_part(up, 1, stream(b"x" * 11), Expected())
        parts = await upload_parts(service, up, [b"a" * 10, b"b" * 10, b"c"])
        with pytest.raises(TooLarge):
            await service.uploads.complete(up, parts)
        # Part numbers beyond max_parts are still found.
        late = await service.uploads.upload_part(up, 9999, stream(b"z"), Expected())
        v = await service.uploads.complete(up, [parts[0], CompletedPart(9999, late.etag)])
        assert await read_all(service, "bkt", "k") == b"a" * 10 + b"z"
        assert v.size == 11
    finally:
        await catalog.aclose()


async def test_upload_lookup_is_scoped(env):
    service, _ = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    assert (await service.uploads.get("bkt", "k", up.upload_id)).upload_id == up.upload_id
    with pytest.raises(UploadNotFound):
        await service.uploads.get("bkt", "other", up.upload_id)
    with pytest.raises(UploadNotFound):
        await service.uploads.get("bkt", "k", "nope")
    with pytest.raises(BucketNotFound):
        await service.uploads.get("missing", "k", up.upload_id)
    with pytest.raises(BucketNotFound):
        await service.uploads.create("missing", "k", "owner", NewObject(), None)


async def test_upload_ids_sort_by_initiation(env):
    service, _ = env
    ids = [(await service.uploads.create("bkt", "same", "owner", NewObject(), None)).upload_id
           for _ in range(20)]
    assert ids == sorted(ids)
    page = await service.uploads.list("bkt", "", "", None, None, 100)
    assert [u.upload_id for u in page.uploads] == ids


async def test_list_parts_pages(env):
    service, _ = env
    up = await service.uploads.create("bkt", "k", "owner", NewObject(), None)
    for n in (1, 2, 4, 8, 16):
        await service.uploads.upload_part(up, n, stream(b"%d" % n), Expected())
    page = await service.uploads.list_parts(up, 0, 2)
    assert ([p.part_number for p in page.parts], page.is_truncated, page.next_part_number_marker) == ([1, 2], True, 2)
    page = await service.uploads.list_parts(up, 2, 2)
    assert ([p.part_number for p in page.parts], page.is_truncated, page.next_part_number_marker) == ([4, 8], True, 8)
    page = await service.uploads.list_parts(up, 8, 2)
    assert ([p.part_number for p in page.parts], page.is_truncated) == ([16], False)


# -- ListMultipartUploads: pages must add up to the whole listing ----------------

KEYS = st.lists(st.text(alphabet="ab/é", min_size=1, max_size=5), min_size=0, max_size=12)


@settings(max_examples=60, deadline=None)
@given(keys=KEYS, delimiter=st.sampled_from(["", "/", "b"]), prefix=st.sampled_from(["", "a", "a/"]),
       page_size=st.integers(1, 4))
def test_list_uploads_pages_match_full_listing(tmp_path_factory, keys, delimiter, prefix, page_size):
    asyncio.run(_pages_match(tmp_path_factory.mktemp("lu"), keys, delimiter, prefix, page_size))


async def _pages_match(path: Path, keys: list[str], delimiter: str, prefix: str, page_size: int) -> None:
    catalog = Catalog(path / "c.db")
    try:
        service = object_service(catalog, {"memory": MemoryBackend()})
        await service.create_bucket("bkt", "owner")
        ids = [(k, (await service.uploads.create("bkt", k, "owner", NewObject(), None)).upload_id) for k in keys]
        full = await service.uploads.list("bkt", prefix, delimiter, None, None, 1000)
        # The model: by UTF-8 key, then initiation; rolled up by delimiter after the prefix.
        want_uploads, want_prefixes = [], []
        for k, i in sorted(ids, key=lambda ki: (ki[0].encode(), ki[1])):
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix):]
            if delimiter and delimiter in rest:
                cp = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if cp not in want_prefixes:
                    want_prefixes.append(cp)
                continue
            want_uploads.append((k, i))
        assert [(u.key, u.upload_id) for u in full.uploads] == want_uploads
        assert full.common_prefixes == want_prefixes
        assert not full.is_truncated
        got_uploads, got_prefixes = [], []
        key_marker = id_marker = None
        for _ in range(100):
            page = await service.uploads.list("bkt", prefix, delimiter, key_marker, id_marker, page_size)
            assert len(page.uploads) + len(page.common_prefixes) <= page_size
            got_uploads += [(u.key, u.upload_id) for u in page.uploads]
            got_prefixes += page.common_prefixes
            if not page.is_truncated:
                break
            key_marker, id_marker = page.next_key_marker, page.next_upload_id_marker
        assert got_uploads == want_uploads
        assert got_prefixes == want_prefixes
    finally:
        await catalog.aclose()


def test_digests_without_md5():
    d = Digests(("crc32",), md5=False)
    d.update(b"abc")
    assert d.sha256_hex() == sha(b"abc")
    assert d.checksum_values() == {"crc32": checksum_b64("crc32", b"abc")}
    with pytest.raises(ValueError):
        d.md5_hex()


async def test_sweep_removes_only_unreferenced_blobs(tmp_path):
    """The orphan sweep deletes a committed blob with no catalog reference and
    keeps every blob a version or a part refers to."""
    from backends.memory import MemoryBackend
    from meshd.catalog import Catalog
    from meshd.transfers import Expected, NewObject

    backend = MemoryBackend()
    catalog = Catalog(tmp_path / "catalog.db")
    service = object_service(catalog, {backend.name: backend}, node_id="0" * 16, inline_max_bytes=0,
                             min_part_bytes=1)
    try:
        await service.create_bucket("bkt", "owner")

        async def body(data: bytes):
            yield data

        kept = await service.put_object("bkt", "k", body(b"kept bytes"), NewObject(), Expected(size=10))
        upload = await service.uploads.create("bkt", "mp", "owner", NewObject(), None)
        part = await service.uploads.upload_part(upload, 1, body(b"part bytes"), Expected(size=10))
        staged = await backend.write(body(b"orphan"))
        import hashlib

        orphan = hashlib.sha256(b"orphan").hexdigest()
        await backend.commit(staged, orphan)
        assert await service.blobs.sweep_orphans() == 1
        ids = [i async for batch in backend.blob_ids() for i in batch]
        assert sorted(ids) == sorted([kept.sha256, part.sha256])
        assert await service.blobs.sweep_orphans() == 0
    finally:
        await catalog.aclose()
