"""Reads ask the byte sources in order (meshd/sources.py): inline copies, the
node's backends (kept copies before caches), ingested files, then whatever
the node adds (the mesh's peers). A damaged copy is skipped for an intact one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from backends.memory import MemoryBackend
from meshd.bodies import ObjectBody
from meshd.catalog import Catalog
from meshd.catalog.records import CACHE
from meshd.errors import ObjectCorrupt, StorageUnavailable
from meshd.model import VersionRecord
from meshd.objects import default_sources
from meshd.sources import Wanted
from meshd.transfers import ByteRange, Expected, NewObject
from tests.support.records import version
from tests.support.services import object_service


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def read(service, v: VersionRecord, rng: ByteRange | None = None) -> bytes:
    return b"".join([c async for c in (await service.open_object(v, rng)).chunks])


class Remote:
    """A source standing in for the mesh's peers: holds what it was given."""

    def __init__(self) -> None:
        self.held: dict[str, bytes] = {}
        self.asked: list[str] = []

    async def open(self, wanted: Wanted) -> ObjectBody | None:
        self.asked.append(wanted.version.version_id)
        data = self.held.get(wanted.version.sha256 or "")
        if data is None:
            return None
        return wanted.body(body(data[wanted.start:wanted.start + wanted.length]))


@pytest.fixture
async def env(tmp_path: Path):
    catalog = Catalog(tmp_path / "catalog.db")
    backends = {"one": MemoryBackend("one"), "two": MemoryBackend("two")}
    service = object_service(catalog, backends, bucket_backends={"bkt2": "two"}, io_chunk_bytes=4096)
    remote = Remote()
    service.sources.append(remote)
    for bucket in ("bkt1", "bkt2"):
        await service.create_bucket(bucket, "owner")
    yield service, backends, remote
    await catalog.aclose()


async def test_default_order_is_inline_backends_ingested() -> None:
    names = [type(s).__name__ for s in default_sources(object(), object())]  # type: ignore[arg-type]
    assert names == ["InlineSource", "BackendSource", "IngestSource"]


async def test_local_copies_answer_before_later_sources(env) -> None:
    service, _, remote = env
    small, big = b"tiny", os.urandom(50_000)
    vs = await service.put_object("bkt1", "s", body(small), NewObject(), Expected(size=len(small)))
    vb = await service.put_object("bkt1", "b", body(big), NewObject(), Expected())
    assert await read(service, vs) == small
    assert await read(service, vb, ByteRange(10, 100)) == big[10:110]
    assert remote.asked == []


async def test_a_version_with_no_local_copy_goes_to_the_next_source(env) -> None:
    service, _, remote = env
    data = b"held elsewhere"
    sha = hashlib.sha256(data).hexdigest()
    v = version("far", sha, size=len(data), bucket="bkt1")
    await service.catalog.write(lambda c: c.merge_version(v))  # known here, bytes elsewhere
    with pytest.raises(StorageUnavailable, match="not on this node"):
        await read(service, v)
    remote.held[sha] = data
    assert await read(service, v) == data
    assert await read(service, v, ByteRange(5, 4)) == b"else"
    assert remote.asked == [v.version_id] * 3


async def test_a_damaged_copy_is_skipped_for_an_intact_one(env) -> None:
    service, backends, _ = env
    data = os.urandom(30_000)
    sha = hashlib.sha256(data).hexdigest()
    v1 = await service.put_object("bkt1", "k", body(data), NewObject(), Expected())
    v2 = await service.put_object("bkt2", "k", body(data), NewObject(), Expected())  # a copy on "two"
    assert {c.backend for c in await service.blobs.copies(sha)} == {"one", "two"}
    await service.blobs.record_corruption(sha, "one", "test")
    assert await read(service, v1) == data  # served from "two"
    await service.blobs.record_corruption(sha, "two", "test")
    with pytest.raises(ObjectCorrupt):
        await read(service, v2)


async def test_kept_copies_are_read_before_caches(env) -> None:
    service, backends, _ = env
    data = os.urandom(20_000)
    sha = hashlib.sha256(data).hexdigest()
    v = await service.put_object("bkt2", "k", body(data), NewObject(), Expected())
    # A cached copy on "one" (as a pull from a peer would leave), listed first.
    staged, _ = await service.blobs.stage("one", body(data), Expected(), 1 << 20)
    await service.blobs.commit(staged, sha, lambda c: None, role=CACHE)
    backends["one"]._blobs[sha] = b"x" * len(data)  # if it were read, the bytes would be wrong
    assert {(c.backend, c.role) for c in await service.blobs.copies(sha)} == {("one", "cache"), ("two", "origin")}
    assert await read(service, v) == data
