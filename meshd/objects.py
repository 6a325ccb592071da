"""The object service: buckets, immutable versions, multipart uploads, tags.

This is the node's native API; the S3 edge translates S3 requests into calls on
it. Bytes go through a `Backend` (staged, hashed, verified, then committed) and
metadata through the `Catalog`; a version is committed to the catalog only
after its bytes are durable and every digest the client sent has been checked.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, AsyncIterable, AsyncIterator, Callable, Mapping, TypeVar

from backends.base import (
    Backend,
    BackendError,
    BackendFull,
    BlobRef,
    StagedBlob,
)
from backends.encoded import BlobCodec, is_corruption
from meshd.catalog import (
    BlobInfo,
    BucketRecord,
    Catalog,
    ObjectPage,
    PartPage,
    PartRecord,
    UploadPage,
    UploadRecord,
    VersionPage,
    VersionRecord,
)
from meshd.catalog.store import INLINE_BACKEND, BlobRelease, SqliteCatalog
from meshd.conditions import Conditions, WriteCondition, check_conditions, check_write
from meshd.digests import Digests
from meshd.errors import (
    DeleteMarkerHit,
    InvalidPart,
    InvalidPartOrder,
    KeyNotFound,
    ObjectCorrupt,
    PartTooSmall,
    SizeMismatch,
    StorageFull,
    StorageUnavailable,
    TooLarge,
    VersionNotFound,
)
from meshd.hlc import HybridClock, VersionId, hlc_millis
from meshd.locks import KeyedLock
from meshd.names import validate_bucket_name, validate_key, validate_version_id
from meshd.transfers import (
    ByteRange,
    CompletedPart,
    DeleteResult,
    Expected,
    NewObject,
    ObjectBody,
    composite_checksums,
    rechunk,
    verify_received,
)

if TYPE_CHECKING:
    from meshd.ingest import IngestService

log = logging.getLogger("meshd.objects")

T = TypeVar("T")

MAX_PART_NUMBER = 10000


class ObjectService:
    def __init__(
        self,
        catalog: Catalog,
        backends: Mapping[str, Backend],
        clock: HybridClock,
        node_id: str,
        *,
        default_backend: str | None = None,
        bucket_backends: Mapping[str, str] | None = None,
        inline_codec: BlobCodec = BlobCodec(None),
        untrusted_backends: frozenset[str] = frozenset(),
        io_chunk_bytes: int = 1024 * 1024,
        max_object_bytes: int = 5 * 1024**3,
        max_part_bytes: int = 5 * 1024**3,
        min_part_bytes: int = 5 * 1024**2,
        max_parts: int = 10000,
        inline_max_bytes: int = 16384,
        ingested: IngestService | None = None,
    ) -> None:
        self.catalog = catalog
        # Files ingested read-only from disk ([[ingest]]): served from the
        # files themselves; writes inside their prefixes are refused.
        self.ingested = ingested
        # Every backend configured on this node, by name; new blobs of a bucket go
        # to its [buckets.NAME] backend, else to the default one.
        self.backends = dict(backends)
        self.default_backend = default_backend or next(iter(self.backends))
        self.bucket_backends = dict(bucket_backends or {})
        # Small objects kept in the catalog are encoded (encrypted) with this.
        self.inline_codec = inline_codec
        # Backends run by someone else (a remote S3 service): whole-object reads
        # from them are checked against the SHA-256 as they stream, which also
        # catches one valid encrypted blob swapped for another.
        self.untrusted_backends = untrusted_backends
        self.clock = clock
        self.node_id = node_id
        self.io_chunk_bytes = io_chunk_bytes
        self.max_object_bytes = max_object_bytes
        self.max_part_bytes = max_part_bytes
        self.min_part_bytes = min_part_bytes
        self.max_parts = max_parts
        self.inline_max_bytes = inline_max_bytes
        self._blob_locks = KeyedLock()
        # Buckets are few and read on every request: keep the ones seen. Every
        # change goes through this service, which drops the entry; the
        # generation stops a read that raced with a change from caching it.
        self._buckets: dict[str, BucketRecord] = {}
        self._bucket_generation = 0

    # -- buckets --------------------------------------------------------

    async def create_bucket(self, name: str, owner: str) -> BucketRecord:
        validate_bucket_name(name)
        rec = BucketRecord(name, owner, hlc_millis(self.clock.now()))
        await self.catalog.write(lambda c: c.create_bucket(rec))
        return rec

    async def get_bucket(self, name: str) -> BucketRecord:
        cached = self._buckets.get(name)
        if cached is not None:
            return cached
        generation = self._bucket_generation
        rec = await self.catalog.read(lambda c: c.get_bucket(name))
        if generation == self._bucket_generation:
            self._buckets[name] = rec
        return rec

    def _forget_bucket(self, name: str) -> None:
        self._bucket_generation += 1
        self._buckets.pop(name, None)

    async def list_buckets(self) -> list[BucketRecord]:
        return await self.catalog.read(lambda c: c.list_buckets())

    async def delete_bucket(self, name: str) -> None:
        self._forget_bucket(name)
        try:
            await self.catalog.write(lambda c: c.delete_bucket(name))
        finally:
            self._forget_bucket(name)

    async def set_bucket_cors(self, name: str, cors: bytes | None) -> None:
        self._forget_bucket(name)
        try:
            await self.catalog.write(lambda c: c.set_bucket_cors(name, cors))
        finally:
            self._forget_bucket(name)

    # -- writing --------------------------------------------------------

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: AsyncIterable[bytes],
        new: NewObject,
        expected: Expected,
        condition: WriteCondition = WriteCondition(),
    ) -> VersionRecord:
        validate_key(key)
        self._check_writable(bucket, key)
        await self.get_bucket(bucket)  # fail before reading the body
        if condition:  # fail early too; checked again when the version commits
            await self._check_write(bucket, key, condition)
        if expected.size is not None and expected.size <= self.inline_max_bytes:
            return await self._put_inline(bucket, key, body, new, expected, condition)
        backend = self._bucket_backend(bucket)
        staged, digests = await self._stage(backend, body, expected, self.max_object_bytes)
        version = self._new_version(
            bucket, key, new, size=digests.size, etag=f'"{digests.md5_hex()}"',
            sha256=digests.sha256_hex(), checksums=digests.checksum_values(), backend=backend.name,
        )
        await self._commit_blob(staged, version.sha256 or "", backend.name,
                                lambda c: c.put_version(version, condition))
        return version

    async def _check_write(self, bucket: str, key: str, condition: WriteCondition) -> None:
        current = await self.catalog.read(lambda c: c.get_version(bucket, key, None))
        check_write(current, condition)

    async def _put_inline(
        self, bucket: str, key: str, body: AsyncIterable[bytes], new: NewObject, expected: Expected,
        condition: WriteCondition,
    ) -> VersionRecord:
        """A small object: its bytes and its version commit in one catalog
        transaction (one fsync, no file). The body is at most inline_max_bytes."""
        digests = Digests(expected.checksum_names())
        pieces: list[bytes] = []
        async for chunk in body:
            if digests.size + len(chunk) > self.inline_max_bytes:
                raise SizeMismatch("more bytes arrived than were declared")
            digests.update(chunk)
            pieces.append(chunk)
        verify_received(expected, digests)
        stored = await self.inline_codec.encode_bytes(b"".join(pieces))
        encoding = self.inline_codec.encoding
        version = self._new_version(
            bucket, key, new, size=digests.size, etag=f'"{digests.md5_hex()}"',
            sha256=digests.sha256_hex(), checksums=digests.checksum_values(),
            backend=INLINE_BACKEND,
        )
        await self.catalog.write(lambda c: c.put_inline_version(version, stored, encoding, condition))
        return version

    def _new_version(
        self, bucket: str, key: str, new: NewObject, *, size: int, etag: str, sha256: str | None,
        checksums: dict[str, str], delete_marker: bool = False, parts_count: int | None = None,
        backend: str | None = None,
    ) -> VersionRecord:
        hlc = self.clock.now()
        return VersionRecord(
            bucket=bucket, key=key, version_id=str(VersionId(hlc, self.node_id)), hlc=hlc,
            origin=self.node_id, size=size, etag=etag, sha256=sha256,
            last_modified_ms=hlc_millis(hlc), delete_marker=delete_marker,
            content_type=new.content_type, headers=new.headers, user_meta=new.user_meta,
            checksums=checksums, tags=new.tags, parts_count=parts_count,
            backend=None if delete_marker else (backend or self._bucket_backend(bucket).name),
        )

    def _check_writable(self, bucket: str, key: str) -> None:
        """Refuse writes inside a prefix ingested read-only from disk."""
        if self.ingested is not None:
            self.ingested.check_writable(bucket, key)

    def blob_lock(self, content_id: str) -> AbstractAsyncContextManager[None]:
        """The lock every commit and deletion of this blob holds (the scrubber
        re-checks a suspect blob under it before marking it)."""
        return self._blob_locks.hold(content_id)

    def _bucket_backend(self, bucket: str) -> Backend:
        """Where the new blobs of `bucket` go."""
        return self.backends[self.bucket_backends.get(bucket, self.default_backend)]

    def _backend(self, name: str) -> Backend:
        try:
            return self.backends[name]
        except KeyError:
            # Written while other backends were configured: refuse rather than
            # look for the bytes in the wrong place.
            raise StorageUnavailable(f"the object's bytes are on backend {name!r}, "
                                     f"which is not configured on this node") from None

    async def _stage(
        self, backend: Backend, body: AsyncIterable[bytes], expected: Expected, limit: int, *, md5: bool = True
    ) -> tuple[StagedBlob, Digests]:
        """Stream the body to the backend's staging area while hashing it, then
        check every digest the client declared. Nothing is committed here."""
        digests = Digests(expected.checksum_names(), md5=md5)

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in rechunk(body, self.io_chunk_bytes):
                if digests.size + len(chunk) > limit:
                    raise TooLarge(f"the object is larger than {limit} bytes")
                await digests.aupdate(chunk)
                yield chunk

        try:
            staged = await backend.write(hashed())
        except BackendFull as e:
            raise StorageFull(f"backend {backend.name!r} is full: {e}") from e
        except BackendError as e:
            raise StorageUnavailable(f"backend {backend.name!r}: {e}") from e
        try:
            verify_received(expected, digests)
        except BaseException:
            await _quietly(backend.discard(staged))
            raise
        return staged, digests

    async def _commit(self, staged: StagedBlob, version: VersionRecord) -> VersionRecord:
        assert version.sha256 is not None and version.backend is not None
        await self._commit_blob(staged, version.sha256, version.backend, lambda c: c.put_version(version))
        return version

    async def _release(self, releases: list[BlobRelease]) -> None:
        for r in releases:
            async with self._blob_locks.hold(r.content_id):
                # A write of the same bytes may have re-referenced it meanwhile.
                if await self.catalog.run(lambda c: c.blob_refcount(r.content_id, r.backend)) == 0:
                    backend = self.backends.get(r.backend)
                    if backend is not None:  # else left behind on a backend no longer configured
                        await backend.delete(BlobRef(r.backend, r.content_id, r.size))

    async def sweep_orphan_blobs(self) -> int:
        """Delete stored blobs that nothing in the catalog refers to: a crash
        between a blob's rename and its catalog commit leaves one behind. Safe
        while serving: each candidate is checked again under its blob lock, the
        lock every commit holds from rename to catalog commit."""
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
            known = await self.catalog.read(lambda c: c.referenced_blobs(name, batch))
            for content_id in batch:
                if content_id in known:
                    continue
                async with self._blob_locks.hold(content_id):
                    if await self.catalog.run(lambda c: c.get_blob(content_id, name)) is None:
                        await backend.delete(BlobRef(name, content_id, 0))
                        removed += 1
        return removed

    # -- reading --------------------------------------------------------

    async def get_version(
        self, bucket: str, key: str, version_id: str | None, *, allow_delete_marker: bool = False
    ) -> VersionRecord:
        """The addressed version, or the current one; delete markers raise
        DeleteMarkerHit unless allowed."""
        if version_id is not None:
            validate_version_id(version_id)
        v = await self.catalog.read(lambda c: _get_version_or_bucket(c, bucket, key, version_id))
        if v is None:
            if version_id is not None:
                raise VersionNotFound(version_id)
            raise KeyNotFound(key)
        if v.delete_marker and not allow_delete_marker:
            raise DeleteMarkerHit(v.version_id, addressed=version_id is not None)
        return v

    async def head_object(
        self, bucket: str, key: str, version_id: str | None, cond: Conditions = Conditions()
    ) -> VersionRecord:
        v = await self.get_version(bucket, key, version_id)
        if cond:
            check_conditions(v, cond)
        return v

    async def open_object(self, v: VersionRecord, rng: ByteRange | None) -> ObjectBody:
        """The bytes of a version (or of a range of it), ready to stream. Blobs
        found corrupt are refused here, before any byte is sent."""
        if self.ingested is not None and self.ingested.holds(v):
            return await self.ingested.open_object(v, rng)
        start, length = (rng.start, rng.length) if rng else (0, v.size)
        if v.backend == INLINE_BACKEND:
            # Damage is found with the bytes, in the one catalog read; the S3
            # edge reads the first piece before it sends the headers.
            return ObjectBody(version=v, range=rng, length=length, file_region=None,
                              chunks=self._read_inline(v.sha256 or "", v.size, start, length))
        ref = await self._blob_ref(v.backend or self.default_backend, v.sha256 or "", v.size)
        backend = self._backend(ref.backend)
        return ObjectBody(
            version=v, range=rng, length=length,
            file_region=backend.file_region(ref, start, length) if length else None,
            chunks=self._read(ref, start, length),
        )

    async def _blob_ref(self, backend: str, content_id: str, size: int) -> BlobRef:
        """How a blob is stored (its encoding), from the catalog; refuses damaged blobs."""
        if backend != INLINE_BACKEND:
            self._backend(backend)
        info = await self.catalog.read(lambda c: c.get_blob(content_id, backend))
        if info is None:
            raise StorageUnavailable(f"blob {content_id} is not recorded on backend {backend!r}")
        if info.damaged:
            raise ObjectCorrupt(f"the stored bytes of blob {content_id} failed verification; "
                                f"the version is unreadable until it is repaired")
        return BlobRef(backend, content_id, size, info.encoding, info.stored_size)

    async def _read(self, ref: BlobRef, start: int, length: int) -> AsyncIterator[bytes]:
        if length == 0:
            return
        digests = Digests(md5=False) if ref.backend in self.untrusted_backends and length == ref.size else None
        try:
            async for chunk in self._backend(ref.backend).open(ref, start, length):
                if digests is not None:
                    await digests.aupdate(chunk)
                yield chunk
            if digests is not None and digests.sha256_hex() != ref.content_id:
                await self.record_corruption(ref.content_id, ref.backend, "SHA-256 mismatch on read")
                raise ObjectCorrupt(f"blob {ref.content_id} on {ref.backend!r} does not match its SHA-256")
        except BackendError as e:
            if is_corruption(e):
                await self.record_corruption(ref.content_id, ref.backend, str(e))
                raise ObjectCorrupt(f"blob {ref.content_id} failed verification: {e}") from e
            raise StorageUnavailable(f"backend {ref.backend!r}: {e}") from e

    async def _read_inline(self, content_id: str, size: int, start: int, length: int) -> AsyncIterator[bytes]:
        if length == 0:
            return
        found = await self.catalog.read(lambda c: c.get_inline(content_id))
        if found is None:
            raise StorageUnavailable(f"inline blob {content_id} is missing")
        if found.damaged:  # a plain inline blob has no tag: only the scrubber's mark stops it
            raise ObjectCorrupt(f"the stored bytes of inline blob {content_id} failed verification; "
                                f"the version is unreadable until it is repaired")
        try:
            yield await self.inline_codec.decode_bytes(found.encoding, found.data, size, start, length)
        except BackendError as e:
            if is_corruption(e):
                await self.record_corruption(content_id, INLINE_BACKEND, str(e))
                raise ObjectCorrupt(f"inline blob {content_id} failed verification: {e}") from e
            raise StorageUnavailable(str(e)) from e

    async def record_corruption(self, content_id: str, backend: str, reason: str) -> None:
        """Mark a blob whose stored bytes failed verification unreadable (every
        version using it answers an error, never bad bytes) and record an event."""
        changed = await self.catalog.write(lambda c: c.mark_blob_damaged(content_id, backend))
        if changed:
            await self.catalog.write(lambda c: c.add_event(
                "blob.corrupt", detail={"content_id": content_id, "backend": backend, "reason": reason}))

    # -- deleting -------------------------------------------------------

    async def delete_object(self, bucket: str, key: str, version_id: str | None) -> DeleteResult:
        validate_key(key)
        self._check_writable(bucket, key)
        if version_id is None:
            await self.get_bucket(bucket)
            marker = self._new_version(
                bucket, key, NewObject(), size=0, etag='"d41d8cd98f00b204e9800998ecf8427e"',
                sha256=None, checksums={}, delete_marker=True,
            )
            await self.catalog.write(lambda c: c.put_version(marker))
            return DeleteResult(marker.version_id, True)
        validate_version_id(version_id)
        removed, release = await self.catalog.write(
            lambda c: _delete_version_checked(c, bucket, key, version_id)
        )
        if release is not None:
            await self._release([release])
        # S3 answers 204 even for a version that does not exist.
        return DeleteResult(version_id, bool(removed and removed.delete_marker))

    # -- copying --------------------------------------------------------

    async def copy_object(
        self,
        src: VersionRecord,
        bucket: str,
        key: str,
        new: NewObject | None,
        checksum_algorithms: tuple[str, ...] = (),
    ) -> VersionRecord:
        """A new version of `bucket/key` with the bytes of `src`; metadata copied
        when `new` is None (COPY directive), replaced otherwise."""
        validate_key(key)
        self._check_writable(bucket, key)
        await self.get_bucket(bucket)
        if new is None:
            new = NewObject(src.content_type, src.headers, src.user_meta, src.tags)
        # An ingested file not yet hashed has no sha256, but bytes (re-read below).
        if src.sha256 is None and not (self.ingested is not None and self.ingested.holds(src)):
            raise KeyNotFound(src.key)
        # A checksum the source already carries need not be computed again.
        missing = tuple(a for a in checksum_algorithms if a not in src.checksums)
        target = self._bucket_backend(bucket)
        elsewhere = src.backend not in (INLINE_BACKEND, target.name)
        if missing or src.parts_count or elsewhere:
            # Re-read the bytes once: to compute what the copy should carry, or
            # to store them on the target bucket's backend.
            staged, digests = await self._stage(
                target, (await self.open_object(src, None)).chunks, Expected(algorithms=checksum_algorithms),
                self.max_object_bytes,
            )
            version = self._new_version(
                bucket, key, new, size=src.size, etag=f'"{digests.md5_hex()}"',
                sha256=digests.sha256_hex(), checksums=digests.checksum_values(), backend=target.name,
            )
            return await self._commit(staged, version)
        checksums = ({a: src.checksums[a] for a in checksum_algorithms} if checksum_algorithms
                     else dict(src.checksums))
        version = self._new_version(
            bucket, key, new, size=src.size, etag=src.etag, sha256=src.sha256,
            checksums=checksums,
        )
        # Same bytes, same content id: only a new reference, no byte is copied.
        source_backend = src.backend or self.default_backend
        async with self._blob_locks.hold(src.sha256):
            ref = await self._blob_ref(source_backend, src.sha256, src.size)  # damaged: refused
            if source_backend != INLINE_BACKEND and await self._backend(ref.backend).stat(ref) is None:
                raise StorageUnavailable(f"blob {src.sha256} is missing")
            version = replace(version, backend=source_backend)
            await self.catalog.write(lambda c: c.put_version(version))
        return version

    # -- tags -----------------------------------------------------------

    async def set_tags(self, bucket: str, key: str, version_id: str | None, tags: dict[str, str]) -> VersionRecord:
        self._check_writable(bucket, key)
        v = await self.get_version(bucket, key, version_id)
        await self.catalog.write(lambda c: c.set_tags(bucket, key, v.version_id, tags))
        return replace(v, tags=tags)

    # -- listing --------------------------------------------------------
    # On the read connection: a 1000-entry page takes milliseconds, which the
    # writer thread (and every PUT queued behind it) need not wait for.

    async def list_objects(
        self, bucket: str, prefix: str, delimiter: str, after: str | None, limit: int
    ) -> ObjectPage:
        return await self.catalog.read(lambda c: c.list_objects(bucket, prefix, delimiter, after, limit))

    async def list_versions(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str | None,
        version_id_marker: str | None, limit: int,
    ) -> VersionPage:
        return await self.catalog.read(
            lambda c: c.list_versions(bucket, prefix, delimiter, key_marker, version_id_marker, limit)
        )

    # -- multipart ------------------------------------------------------

    async def create_upload(
        self, bucket: str, key: str, owner: str, new: NewObject, checksum_algorithm: str | None
    ) -> UploadRecord:
        validate_key(key)
        self._check_writable(bucket, key)
        hlc = self.clock.now()
        upload = UploadRecord(
            # The timestamp first, so ids sort by initiation as S3 lists the
            # uploads of one key; the random rest makes them unguessable.
            upload_id=f"{hlc:016x}{secrets.token_urlsafe(18)}", bucket=bucket, key=key,
            initiated_ms=hlc_millis(hlc), owner=owner,
            content_type=new.content_type, headers=new.headers, user_meta=new.user_meta,
            tags=new.tags, checksum_algorithm=checksum_algorithm, backend=self._bucket_backend(bucket).name,
        )
        await self.catalog.write(lambda c: c.create_upload(upload))
        return upload

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadRecord:
        return await self.catalog.run(lambda c: _get_upload_checked(c, bucket, key, upload_id))

    async def upload_part(
        self, upload: UploadRecord, part_number: int, body: AsyncIterable[bytes], expected: Expected
    ) -> PartRecord:
        if upload.checksum_algorithm and upload.checksum_algorithm not in expected.algorithms:
            expected.algorithms = (*expected.algorithms, upload.checksum_algorithm)
        backend = upload.backend or self.default_backend
        staged, digests = await self._stage(self._backend(backend), body, expected, self.max_part_bytes)
        part = PartRecord(
            upload_id=upload.upload_id, part_number=part_number, size=digests.size,
            etag=f'"{digests.md5_hex()}"', sha256=digests.sha256_hex(),
            last_modified_ms=hlc_millis(self.clock.now()), checksums=digests.checksum_values(),
        )
        replaced = await self._commit_blob(staged, part.sha256, backend, lambda c: c.put_part(part, backend))
        if replaced is not None:
            await self._release([replaced])
        return part

    async def list_parts(self, upload: UploadRecord, after: int, limit: int) -> PartPage:
        return await self.catalog.run(lambda c: c.list_parts(upload.upload_id, after, limit))

    async def list_uploads(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str | None,
        upload_id_marker: str | None, limit: int,
    ) -> UploadPage:
        return await self.catalog.read(
            lambda c: c.list_uploads(bucket, prefix, delimiter, key_marker, upload_id_marker, limit)
        )

    async def abort_upload(self, upload: UploadRecord) -> None:
        released = await self.catalog.write(
            lambda c: c.finish_upload(upload, upload.backend or self.default_backend, None)
        )
        await self._release(released)

    async def complete_upload(
        self, upload: UploadRecord, requested: list[CompletedPart], condition: WriteCondition = WriteCondition()
    ) -> VersionRecord:
        """Assemble the listed parts, in order, into one new version.

        The parts are streamed into one new blob, hashed on the way for its
        content id (not MD5: the ETag comes from the parts' MD5s), so memory
        stays flat and hashing and disk IO run in worker threads."""
        self._check_writable(upload.bucket, upload.key)
        chosen = await self._chosen_parts(upload, requested)
        if condition:  # before the assembly; checked again at the commit
            await self._check_write(upload.bucket, upload.key, condition)
        limit = self.max_parts * self.max_part_bytes
        if sum(p.size for p in chosen) > limit:
            raise TooLarge(f"the object is larger than {limit} bytes")
        backend = upload.backend or self.default_backend

        async def concatenated() -> AsyncIterator[bytes]:
            for p in chosen:
                async for chunk in self._read(await self._blob_ref(backend, p.sha256, p.size), 0, p.size):
                    yield chunk

        staged, digests = await self._stage(self._backend(backend), concatenated(), Expected(), limit, md5=False)
        md5s = b"".join(bytes.fromhex(p.etag.strip('"')) for p in chosen)
        etag = f'"{hashlib.md5(md5s).hexdigest()}-{len(chosen)}"'
        checksums = composite_checksums(upload.checksum_algorithm, chosen)
        new = NewObject(upload.content_type, upload.headers, upload.user_meta, upload.tags)
        version = self._new_version(
            upload.bucket, upload.key, new, size=digests.size, etag=etag,
            sha256=digests.sha256_hex(), checksums=checksums, parts_count=len(chosen),
        )
        released = await self._commit_blob(
            staged, digests.sha256_hex(), backend, lambda c: c.finish_upload(upload, backend, version, condition)
        )
        await self._release(released)
        return version

    async def _chosen_parts(self, upload: UploadRecord, requested: list[CompletedPart]) -> list[PartRecord]:
        """The stored parts the client listed, checked as S3 checks them."""
        if not requested:
            raise InvalidPart("you must specify at least one part")
        numbers = [p.part_number for p in requested]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise InvalidPartOrder("the list of parts was not in ascending order")
        if len(requested) > self.max_parts:
            raise TooLarge(f"an object has at most {self.max_parts} parts")
        # Every stored part, whatever max_parts is: numbers run up to 10000.
        page = await self.list_parts(upload, 0, MAX_PART_NUMBER)
        stored = {p.part_number: p for p in page.parts}
        chosen: list[PartRecord] = []
        for i, want in enumerate(requested):
            part = stored.get(want.part_number)
            if part is None or part.etag.strip('"') != want.etag.strip().strip('"') or any(
                algo in part.checksums and part.checksums[algo] != value.strip()
                for algo, value in want.checksums.items()
            ):
                raise InvalidPart(f"part {want.part_number} was not found or its ETag does not match")
            if i < len(requested) - 1 and part.size < self.min_part_bytes:
                raise PartTooSmall(f"part {want.part_number} is smaller than the minimum part size")
            chosen.append(part)
        return chosen

    async def _commit_blob(
        self, staged: StagedBlob, content_id: str, backend_name: str, record: Callable[[SqliteCatalog], T]
    ) -> T:
        """Put staged bytes in place as `content_id`, then run the catalog step
        that references them, both under the blob's lock.

        Content the catalog already holds (intact) is not stored twice: the
        staged copy is dropped. Otherwise the staged bytes are committed, over a
        damaged copy or a crash's leftover if there is one, and their encoding
        recorded. If the catalog step fails (the upload was aborted or completed
        meanwhile), bytes nothing references are deleted again instead of
        lingering as an orphan blob."""
        backend = self._backend(backend_name)
        async with self._blob_locks.hold(content_id):
            known = await self.catalog.read(lambda c: c.get_blob(content_id, backend_name))
            if known is not None and not known.damaged:
                await _quietly(backend.discard(staged))
                return await self.catalog.write(lambda c: _with_blob(c, known, record))
            try:
                await backend.commit(staged, content_id)
            except BackendError as e:
                await _quietly(backend.discard(staged))
                if isinstance(e, BackendFull):
                    raise StorageFull(f"backend {backend_name!r} is full: {e}") from e
                raise StorageUnavailable(f"backend {backend_name!r}: {e}") from e
            info = BlobInfo(content_id, backend_name, staged.size, staged.encoding, staged.stored, 0)
            try:
                return await self.catalog.write(lambda c: _with_blob(c, info, record, repair=known is not None))
            except BaseException:
                if await self.catalog.run(lambda c: c.blob_refcount(content_id, backend_name)) == 0:
                    await _quietly(backend.delete(BlobRef(backend_name, content_id, staged.size)))
                raise


def _with_blob(c: SqliteCatalog, info: BlobInfo, record: Callable[[SqliteCatalog], T], *, repair: bool = False) -> T:
    """Record how a blob is stored, then the step that references it (one transaction)."""
    c.add_blob(info.content_id, info.backend, info.size, info.encoding, info.stored_size, replace=repair)
    return record(c)


async def _quietly(aw) -> None:
    """Clean-up after a failure: its own error must not hide the one being raised."""
    try:
        await aw
    except BackendError:
        pass


def _get_version_or_bucket(c, bucket: str, key: str, version_id: str | None) -> VersionRecord | None:
    v = c.get_version(bucket, key, version_id)
    if v is None:
        c.get_bucket(bucket)  # NoSuchBucket beats NoSuchKey
    return v


def _delete_version_checked(c, bucket: str, key: str, version_id: str):
    c.get_bucket(bucket)
    return c.delete_version(bucket, key, version_id)


def _get_upload_checked(c, bucket: str, key: str, upload_id: str) -> UploadRecord:
    c.get_bucket(bucket)
    return c.get_upload(bucket, key, upload_id)
