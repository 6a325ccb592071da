"""The object service over memory backends and a real catalog: the bucket cache
follows every catalog change, permanent deletes leave tombstones and free
bytes, copies share or store bytes by backend, tags carry their stamp."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from backends.memory import MemoryBackend
from meshd.catalog import Catalog
from meshd.errors import BucketNotFound
from meshd.model import BucketRecord
from meshd.transfers import Expected, NewObject
from tests.support.services import object_service


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def env(tmp_path: Path):
    catalog = Catalog(tmp_path / "catalog.db")
    backends = {"one": MemoryBackend("one"), "two": MemoryBackend("two")}
    service = object_service(catalog, backends, bucket_backends={"other": "two"})
    await service.create_bucket("bkt", "owner")
    yield service, backends
    await catalog.aclose()


async def test_the_bucket_cache_follows_changes_made_by_anyone(env) -> None:
    service, _ = env
    assert (await service.get_bucket("bkt")).cors is None  # cached now
    # Changes that do not go through the service (the ingest scan, a merge):
    await service.catalog.write(lambda c: c.set_bucket_cors("bkt", b"<CORSConfiguration/>"))
    assert (await service.get_bucket("bkt")).cors == b"<CORSConfiguration/>"
    await service.catalog.write(lambda c: c.delete_bucket("bkt"))
    with pytest.raises(BucketNotFound):
        await service.get_bucket("bkt")
    await service.catalog.write(lambda c: c.create_bucket(BucketRecord("bkt", "someone", 5)))
    assert (await service.get_bucket("bkt")).owner == "someone"


async def test_a_permanent_delete_leaves_a_tombstone_and_frees_the_bytes(env) -> None:
    service, backends = env
    data = os.urandom(40_000)
    sha = hashlib.sha256(data).hexdigest()
    v = await service.put_object("bkt", "k", body(data), NewObject(), Expected())
    assert sha in backends["one"]._blobs
    await service.delete_object("bkt", "k", v.version_id)
    assert sha not in backends["one"]._blobs
    tomb = await service.catalog.read(lambda c: c.get_tombstone("bkt", "k", v.version_id))
    assert tomb is not None and tomb.deleted_hlc > v.hlc
    # The version cannot come back through a merge.
    assert not await service.catalog.write(lambda c: c.merge_version(v))


async def test_copies_share_bytes_on_one_backend_and_store_them_on_another(env) -> None:
    service, backends = env
    await service.create_bucket("other", "owner")
    data = os.urandom(40_000)
    sha = hashlib.sha256(data).hexdigest()
    src = await service.put_object("bkt", "src", body(data), NewObject(), Expected())
    same = await service.copy_object(src, "bkt", "same", None)
    assert same.sha256 == sha and same.etag == src.etag
    assert "two" not in {c.backend for c in await service.blobs.copies(sha)}
    elsewhere = await service.copy_object(src, "other", "copy", None)
    assert elsewhere.sha256 == sha
    assert {c.backend for c in await service.blobs.copies(sha)} == {"one", "two"}
    assert backends["two"]._blobs[sha] == data
    assert await service.catalog.read(lambda c: c.blob_refs(sha)) == 3


async def test_tags_carry_a_stamp_that_orders_them(env) -> None:
    service, _ = env
    v = await service.put_object("bkt", "k", body(b"x" * 20_000), NewObject(), Expected())
    first = await service.set_tags("bkt", "k", None, {"a": "1"})
    second = await service.set_tags("bkt", "k", v.version_id, {"b": "2"})
    assert "" < first.tags_stamp < second.tags_stamp and second.tags_stamp[16:] == service.node_id
    stored = await service.get_version("bkt", "k", None)
    assert (stored.tags, stored.tags_stamp) == ({"b": "2"}, second.tags_stamp)
