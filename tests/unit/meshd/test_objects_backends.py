"""meshd/objects.py over several backends: routing by bucket, encodings recorded
per blob, dedup and repair at commit, damaged blobs refused, and whole reads
from untrusted backends checked against the SHA-256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from backends.encoded import BlobCodec, EncodedBackend
from backends.encryption import MasterKey
from backends.memory import MemoryBackend
from meshd.catalog import Catalog
from meshd.errors import ObjectCorrupt, StorageUnavailable
from meshd.objects import ObjectService
from meshd.transfers import Expected, NewObject
from tests.support.services import object_service

KEY = MasterKey.generate()


async def body(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7000):
        yield data[i:i + 7000]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def env(tmp_path: Path):
    catalog = Catalog(tmp_path / "catalog.db")
    raw = {"enc": MemoryBackend("enc"), "plain": MemoryBackend("plain"), "remote": MemoryBackend("remote")}
    backends = {
        "enc": EncodedBackend(raw["enc"], BlobCodec(KEY, encrypt=True)),
        "plain": EncodedBackend(raw["plain"], BlobCodec(KEY)),
        "remote": EncodedBackend(raw["remote"], BlobCodec(KEY, encrypt=True, compress=True)),
    }
    service = object_service(
        catalog, backends, default_backend="enc", bucket_backends={"ppp": "plain", "rrr": "remote"},
        inline_codec=BlobCodec(KEY, encrypt=True), untrusted=frozenset({"remote"}), io_chunk_bytes=4096,
    )
    for bucket in ("eee", "ppp", "rrr"):
        await service.create_bucket(bucket, "owner")
    yield service, raw
    await catalog.aclose()


async def put(service: ObjectService, bucket: str, key: str, data: bytes):
    return await service.put_object(bucket, key, body(data), NewObject(), Expected(size=None))


async def get(service: ObjectService, bucket: str, key: str, rng=None) -> bytes:
    v = await service.get_version(bucket, key, None)
    return b"".join([c async for c in (await service.open_object(v, rng)).chunks])


async def test_buckets_route_to_their_backends_with_their_encodings(env):
    service, raw = env
    data = os.urandom(100_000)
    for bucket in ("eee", "ppp", "rrr"):
        await put(service, bucket, "k", data)
        assert await get(service, bucket, "k") == data
    assert raw["plain"]._blobs[sha(data)] == data
    assert raw["enc"]._blobs[sha(data)] != data and len(raw["enc"]._blobs[sha(data)]) > len(data)
    info = {b: await service.catalog.read(lambda c, b=b: c.get_blob(sha(data), b)) for b in ("enc", "plain", "remote")}
    assert {b: i.encoding for b, i in info.items()} == {"enc": "aead", "plain": "plain", "remote": "zstd+aead"}
    assert info["enc"].stored_size == len(raw["enc"]._blobs[sha(data)])


async def test_same_content_is_stored_once_and_a_damaged_copy_is_repaired(env):
    service, raw = env
    data = os.urandom(50_000)
    await put(service, "eee", "one", data)
    first = raw["enc"]._blobs[sha(data)]
    await put(service, "eee", "two", data)
    assert raw["enc"]._blobs[sha(data)] is first  # the second copy was dropped
    raw["enc"]._blobs[sha(data)] = first[:100] + bytes([first[100] ^ 1]) + first[101:]
    with pytest.raises(ObjectCorrupt):
        await get(service, "eee", "one")
    assert (await service.catalog.read(lambda c: c.get_blob(sha(data), "enc"))).damaged
    events = await service.catalog.read(lambda c: c.events_after(0, kind="blob.corrupt"))
    assert [e.detail["content_id"] for e in events] == [sha(data)]
    with pytest.raises(ObjectCorrupt):  # refused up front now, for every version using it
        await get(service, "eee", "two")
    await put(service, "eee", "three", data)  # the same bytes again: stored anew
    assert not (await service.catalog.read(lambda c: c.get_blob(sha(data), "enc"))).damaged
    for key in ("one", "two", "three"):
        assert await get(service, "eee", key) == data


async def test_whole_reads_from_an_untrusted_backend_are_checked(env):
    service, raw = env
    a, b = os.urandom(40_000), os.urandom(40_000)
    await put(service, "rrr", "a", a)
    await put(service, "rrr", "b", b)
    # A valid encrypted blob swapped for another: every tag checks out.
    raw["remote"]._blobs[sha(a)] = raw["remote"]._blobs[sha(b)]
    with pytest.raises(ObjectCorrupt):
        await get(service, "rrr", "a")
    assert (await service.catalog.read(lambda c: c.get_blob(sha(a), "remote"))).damaged
    assert await get(service, "rrr", "b") == b


async def test_inline_objects_are_encrypted_in_the_catalog(env, tmp_path):
    service, _ = env
    small = b"SMALL-SECRET-" * 50
    await service.put_object("eee", "tiny", body(small), NewObject(), Expected(size=len(small)))
    assert await get(service, "eee", "tiny") == small
    found = await service.catalog.read(lambda c: c.get_inline(sha(small)))
    assert found.encoding == "aead" and b"SMALL-SECRET" not in found.data and not found.damaged


async def test_a_version_on_a_backend_no_longer_configured_is_refused(env):
    service, _ = env
    data = os.urandom(30_000)
    await put(service, "ppp", "k", data)
    del service.blobs.backends["plain"]
    with pytest.raises(StorageUnavailable):
        await get(service, "ppp", "k")
