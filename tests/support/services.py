"""Node services wired for unit tests, the way meshd/node.py wires them."""

from __future__ import annotations

from typing import Any, Mapping

from backends.base import Backend
from backends.encoded import BlobCodec
from meshd.blobs import BlobStore
from meshd.catalog import Catalog
from meshd.config import StorageSection
from meshd.hlc import HybridClock
from meshd.objects import ObjectService, ObjectSettings

NODE_ID = "0123456789abcdef"


def object_service(
    catalog: Catalog,
    backends: Mapping[str, Backend],
    *,
    node_id: str = NODE_ID,
    clock: HybridClock | None = None,
    default_backend: str | None = None,
    bucket_backends: Mapping[str, str] | None = None,
    inline_codec: BlobCodec = BlobCodec(None),
    untrusted: frozenset[str] = frozenset(),
    ingested: Any = None,
    **storage: Any,
) -> ObjectService:
    """An object service over these backends; `storage` sets `[storage]` keys
    (io_chunk_bytes, inline_max_bytes, min_part_bytes, ...)."""
    section = StorageSection(default_backend=default_backend or next(iter(backends)), **storage)
    blobs = BlobStore(catalog, backends, inline_codec=inline_codec, untrusted=untrusted,
                      io_chunk_bytes=section.io_chunk_bytes)
    settings = ObjectSettings(section, dict(bucket_backends or {}))
    return ObjectService(catalog, blobs, clock or HybridClock(), node_id, settings, ingested=ingested)
