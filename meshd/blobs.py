"""The node's content-addressed blob store: bytes by SHA-256, on any of the
node's backends or inline in the catalog.

- `stage` streams bytes to a backend's staging area while hashing them and
  checks every digest the client declared; `commit` puts them in place under
  their content id and runs the catalog step that references them, both under
  the content's lock. Content already stored intact on that backend is not
  stored twice (the staged copy is dropped); a damaged copy is replaced.
- `copies` says where a content id is kept here (backend, role, encoding,
  damaged), `read` streams a range of one copy, verifying what must be
  verified and marking a copy damaged when its bytes fail (`record_corruption`).
- `release` deletes the bytes of copies no version or part refers to any more;
  `sweep_orphans` deletes bytes a crash left with no catalog record.

Which copies exist, and in what role (origin, replica, cache, ingested),
lives only in the catalog's blob table (meshd/catalog/blobs.py). The object
service, the scrubber and (later) peer transfer all go through this store.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import AsyncIterable, AsyncIterator, Callable, Mapping, TypeVar

from backends.base import Backend, BackendError, BackendFull, BlobRef, FileRegion, StagedBlob
from backends.encoded import BlobCodec, is_corruption
from meshd.catalog import Catalog, SqliteCatalog
from meshd.catalog.records import INLINE_BACKEND, ORIGIN, BlobInfo, BlobRelease
from meshd.digests import Digests
from meshd.errors import ObjectCorrupt, StorageFull, StorageUnavailable, TooLarge
from meshd.locks import ContentLocks
from meshd.transfers import Expected, rechunk, verify_received

log = logging.getLogger("meshd.blobs")

T = TypeVar("T")


class BlobStore:
    def __init__(
        self,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        *,
        inline_codec: BlobCodec = BlobCodec(None),
        untrusted: frozenset[str] = frozenset(),
        io_chunk_bytes: int = 1024 * 1024,
        locks: ContentLocks | None = None,
    ) -> None:
        self.catalog = catalog
        # Every backend configured on this node, by name.
        self.backends = dict(backends)
        # Small blobs kept in the catalog are encoded (encrypted) with this.
        self.inline_codec = inline_codec
        # Backends run by someone else (a remote S3 service): whole-blob reads
        # from them are checked against the SHA-256 as they stream, which also
        # catches one valid encrypted blob swapped for another.
        self.untrusted = untrusted
        self.io_chunk_bytes = io_chunk_bytes
        # Held from a blob's rename to its catalog record, and from its last
        # release to its deletion: across processes when they share the data dir.
        self._locks = locks or ContentLocks()

    def close(self) -> None:
        self._locks.close()

    def lock(self, content_id: str) -> AbstractAsyncContextManager[None]:
        """The lock every commit and deletion of a content id's bytes holds,
        from the bytes' rename to their catalog record (the scrubber re-checks a
        suspect copy under it before marking it)."""
        return self._locks.hold(content_id)

    def backend(self, name: str) -> Backend:
        try:
            return self.backends[name]
        except KeyError:
            # Written while other backends were configured: refuse rather than
            # look for the bytes in the wrong place.
            raise StorageUnavailable(f"backend {name!r} is not configured on this node") from None

    # -- writing ----------------------------------------------------------

    async def stage(
        self, backend_name: str, body: AsyncIterable[bytes], expected: Expected, limit: int, *, md5: bool = True
    ) -> tuple[StagedBlob, Digests]:
        """Stream the body to the backend's staging area while hashing it, then
        check every digest the client declared. Nothing is committed here."""
        backend = self.backend(backend_name)
        digests = Digests(expected.checksum_names(), md5=md5)

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in rechunk(body, self.io_chunk_bytes):
                if digests.size + len(chunk) > limit:
                    raise TooLarge(f"the object is larger than {limit} bytes")
                await digests.aupdate(chunk)
                yield chunk

        try:
            staged = await backend.write(hashed())
        except BackendError as e:
            raise _storage_error(backend.name, e) from e
        try:
            verify_received(expected, digests)
        except BaseException:
            await self.discard(staged)
            raise
        return staged, digests

    async def discard(self, staged: StagedBlob) -> None:
        """Drop staged bytes; a failure to do so must not hide the error being raised."""
        try:
            await self.backend(staged.backend).discard(staged)
        except (BackendError, StorageUnavailable):
            pass

    async def commit(
        self, staged: StagedBlob, content_id: str, record: Callable[[SqliteCatalog], T], *, role: str = ORIGIN
    ) -> T:
        """Put staged bytes in place as `content_id`, then run the catalog step
        that references them, both under the content's lock.

        Content this backend already holds (intact) is not stored twice: the
        staged copy is dropped. Otherwise the staged bytes are committed, over a
        damaged copy or a crash's leftover if there is one, and their encoding
        recorded. If the catalog step fails (the upload was aborted or completed
        meanwhile), bytes nothing references are deleted again instead of
        lingering as an orphan blob."""
        name = staged.backend
        backend = self.backend(name)
        async with self._locks.hold(content_id):
            known = await self.catalog.read(lambda c: c.get_blob(content_id, name))
            if known is not None and not known.damaged:
                await self.discard(staged)
                return await self.catalog.write(record)
            try:
                await backend.commit(staged, content_id)
            except BackendError as e:
                await self.discard(staged)
                raise _storage_error(name, e) from e
            repair = known is not None

            def add_and_record(c: SqliteCatalog) -> T:
                c.add_blob(content_id, name, staged.size, staged.encoding, staged.stored, role=role, replace=repair)
                return record(c)

            try:
                return await self.catalog.write(add_and_record)
            except BaseException:
                if await self.catalog.run(lambda c: c.get_blob(content_id, name)) is None:
                    await _quietly(backend.delete(BlobRef(name, content_id, staged.size)))
                raise

    async def encode_inline(self, data: bytes) -> tuple[bytes, str]:
        """A small blob's bytes as kept in the catalog, and their encoding."""
        return await self.inline_codec.encode_bytes(data), self.inline_codec.encoding

    # -- reading ----------------------------------------------------------

    async def copies(self, content_id: str) -> list[BlobInfo]:
        """Every copy of a content id on this node (inline bytes with their record)."""
        return await self.catalog.read(lambda c: c.copies(content_id))

    async def holds(self, content_id: str, backend: str, *, confirm: bool = False) -> bool:
        """Is there an intact copy a new version on `backend` can share: one on
        that backend, or inline in the catalog? With `confirm`, the backend is
        asked too (the bytes are really there)."""
        for info in await self.copies(content_id):
            if info.damaged or info.backend not in (INLINE_BACKEND, backend):
                continue
            if info.backend == INLINE_BACKEND or not confirm:
                return True
            return await self.backend(backend).stat(blob_ref(info)) is not None
        return False

    def file_region(self, info: BlobInfo, start: int, length: int) -> FileRegion | None:
        """A plain local file holding the range, if there is one (for sendfile)."""
        if info.backend == INLINE_BACKEND or not length:
            return None
        return self.backend(info.backend).file_region(blob_ref(info), start, length)

    async def read(self, info: BlobInfo, start: int, length: int) -> AsyncIterator[bytes]:
        """Plain bytes [start, start+length) of one copy. A copy whose stored
        bytes fail verification is marked damaged and the read fails
        (ObjectCorrupt): never bad bytes. Whole reads from untrusted backends
        are checked against the SHA-256 as they stream."""
        if length == 0:
            return
        if info.backend == INLINE_BACKEND:
            yield await self._read_inline(info, start, length)
            return
        backend = self.backend(info.backend)
        ref = blob_ref(info)
        digests = Digests(md5=False) if info.backend in self.untrusted and length == info.size else None
        try:
            async for chunk in backend.open(ref, start, length):
                if digests is not None:
                    await digests.aupdate(chunk)
                yield chunk
            if digests is not None and digests.sha256_hex() != info.content_id:
                await self.record_corruption(info.content_id, info.backend, "SHA-256 mismatch on read")
                raise ObjectCorrupt(f"blob {info.content_id} on {info.backend!r} does not match its SHA-256")
        except BackendError as e:
            if is_corruption(e):
                await self.record_corruption(info.content_id, info.backend, str(e))
                raise ObjectCorrupt(f"blob {info.content_id} failed verification: {e}") from e
            raise StorageUnavailable(f"backend {info.backend!r}: {e}") from e

    async def _read_inline(self, info: BlobInfo, start: int, length: int) -> bytes:
        data, encoding = info.data, info.encoding
        if data is None:  # a record read without its bytes
            found = await self.catalog.read(lambda c: c.get_inline(info.content_id))
            if found is None:
                raise StorageUnavailable(f"inline blob {info.content_id} is missing")
            data, encoding = found.data, found.encoding
        try:
            return await self.inline_codec.decode_bytes(encoding, data, info.size, start, length)
        except BackendError as e:
            if is_corruption(e):
                await self.record_corruption(info.content_id, INLINE_BACKEND, str(e))
                raise ObjectCorrupt(f"inline blob {info.content_id} failed verification: {e}") from e
            raise StorageUnavailable(str(e)) from e

    async def record_corruption(self, content_id: str, backend: str, reason: str) -> None:
        """Mark a copy whose stored bytes failed verification unreadable (every
        version using it is then served from another copy or answers an error,
        never bad bytes) and record an event."""

        def mark(c: SqliteCatalog) -> None:
            if c.mark_blob_damaged(content_id, backend):
                c.add_event("blob.corrupt", detail={"content_id": content_id, "backend": backend, "reason": reason})

        await self.catalog.write(mark)

    # -- deleting -----------------------------------------------------------

    async def release(self, releases: list[BlobRelease]) -> None:
        """Delete the bytes of copies whose content lost its last reference."""
        for r in releases:
            async with self._locks.hold(r.content_id):
                # A write of the same bytes may have stored and recorded them again meanwhile.
                if await self.catalog.run(lambda c: c.get_blob(r.content_id, r.backend)) is None:
                    backend = self.backends.get(r.backend)
                    if backend is not None:  # else left behind on a backend no longer configured
                        await backend.delete(BlobRef(r.backend, r.content_id, r.size))

    async def sweep_orphans(self) -> int:
        """Delete stored blobs that nothing in the catalog refers to: a crash
        between a blob's rename and its catalog commit leaves one behind. Safe
        while serving: each candidate is checked again under its lock, the lock
        every commit holds from rename to catalog commit."""
        removed = 0
        for name, backend in self.backends.items():
            try:
                removed += await self._sweep_backend(name, backend)
            except BackendError as e:  # unreachable now: swept at the next start
                log.warning("orphan sweep of backend %s stopped: %s", name, e)
        return removed

    async def _sweep_backend(self, name: str, backend: Backend) -> int:
        removed = 0
        async for batch in backend.blob_ids():
            known = await self.catalog.read(lambda c: c.stored_blobs(name, batch))
            for content_id in batch:
                if content_id in known:
                    continue
                async with self._locks.hold(content_id):
                    if await self.catalog.run(lambda c: c.get_blob(content_id, name)) is None:
                        await backend.delete(BlobRef(name, content_id, 0))
                        removed += 1
        return removed


def blob_ref(info: BlobInfo) -> BlobRef:
    """The backend's handle on a copy."""
    return BlobRef(info.backend, info.content_id, info.size, info.encoding, info.stored_size)


def _storage_error(backend: str, e: BackendError) -> StorageUnavailable | StorageFull:
    if isinstance(e, BackendFull):
        return StorageFull(f"backend {backend!r} is full: {e}")
    return StorageUnavailable(f"backend {backend!r}: {e}")


async def _quietly(aw) -> None:
    """Clean-up after a failure: its own error must not hide the one being raised."""
    try:
        await aw
    except BackendError:
        pass
