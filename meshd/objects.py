"""The object service: buckets, immutable versions, copies, tags, listings.

This is the node's native API; the S3 edge translates S3 requests into calls on
it. Bytes go through the blob store (meshd/blobs.py: staged, hashed, verified,
then committed) and metadata through the catalog; a version is committed to
the catalog only after its bytes are durable and every digest the client sent
has been checked. Reads ask the byte sources in order (meshd/sources.py).
Multipart uploads are `ObjectService.uploads` (meshd/multipart.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, AsyncIterable, Mapping, Sequence

from meshd.blobs import BlobStore
from meshd.bodies import ObjectBody
from meshd.catalog import Catalog, SqliteCatalog
from meshd.conditions import Conditions, WriteCondition, check_conditions, check_write
from meshd.config import Config, StorageSection
from meshd.digests import Digests
from meshd.errors import (
    DeleteMarkerHit,
    KeyNotFound,
    ObjectCorrupt,
    SizeMismatch,
    StorageUnavailable,
    VersionNotFound,
)
from meshd.hlc import HybridClock, VersionId, hlc_millis
from meshd.model import BucketRecord, ObjectPage, VersionPage, VersionRecord
from meshd.multipart import MultipartUploads
from meshd.names import validate_bucket_name, validate_key, validate_version_id
from meshd.sources import BackendSource, ByteSource, InlineSource, IngestSource, Wanted
from meshd.transfers import ByteRange, DeleteResult, Expected, NewObject, verify_received

if TYPE_CHECKING:
    from meshd.ingest import IngestService

EMPTY_MD5_ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'


@dataclass(frozen=True)
class ObjectSettings:
    """What the object service is configured with: `[storage]` (limits, the
    default backend) and each `[buckets.NAME] backend`."""

    storage: StorageSection = field(default_factory=StorageSection)
    bucket_backends: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Config) -> "ObjectSettings":
        return cls(cfg.storage, {bucket: b.backend for bucket, b in cfg.buckets.items()})

    def backend_for(self, bucket: str) -> str:
        """Where the new blobs of `bucket` go."""
        return self.bucket_backends.get(bucket, self.storage.default_backend)


class ObjectService:
    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        clock: HybridClock,
        node_id: str,
        settings: ObjectSettings = ObjectSettings(),
        *,
        ingested: IngestService | None = None,
        sources: Sequence[ByteSource] | None = None,
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.clock = clock
        self.node_id = node_id
        self.settings = settings
        self.limits = settings.storage
        # Files ingested read-only from disk ([[ingest]]): served from the
        # files themselves; writes inside their prefixes are refused.
        self.ingested = ingested
        # Where the bytes of a version are looked for, in order.
        self.sources: list[ByteSource] = list(sources) if sources is not None else default_sources(blobs, ingested)
        self.uploads = MultipartUploads(self)
        # Buckets are few and read on every request: keep the ones seen, until
        # any catalog change to a bucket (from this service, the ingest scan,
        # a merge) moves the catalog's bucket epoch on.
        self._buckets: dict[str, BucketRecord] = {}
        self._buckets_epoch = catalog.bucket_epoch

    # -- buckets --------------------------------------------------------

    async def create_bucket(self, name: str, owner: str) -> BucketRecord:
        validate_bucket_name(name)
        rec = BucketRecord(name, owner, hlc_millis(self.clock.now()))
        await self.catalog.write(lambda c: c.create_bucket(rec))
        return rec

    async def get_bucket(self, name: str) -> BucketRecord:
        epoch = self.catalog.bucket_epoch
        if epoch != self._buckets_epoch:
            self._buckets.clear()
            self._buckets_epoch = epoch
        cached = self._buckets.get(name)
        if cached is not None:
            return cached
        rec = await self.catalog.read(lambda c: c.get_bucket(name))
        if self.catalog.bucket_epoch == epoch:  # else a change raced with the read: do not keep it
            self._buckets[name] = rec
        return rec

    async def list_buckets(self) -> list[BucketRecord]:
        return await self.catalog.read(lambda c: c.list_buckets())

    async def delete_bucket(self, name: str) -> None:
        await self.catalog.write(lambda c: c.delete_bucket(name))

    async def set_bucket_cors(self, name: str, cors: bytes | None) -> None:
        await self.catalog.write(lambda c: c.set_bucket_cors(name, cors))

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
        self.check_writable(bucket, key)
        await self.get_bucket(bucket)  # fail before reading the body
        if condition:  # fail early too; checked again when the version commits
            await self.check_write(bucket, key, condition)
        if expected.size is not None and expected.size <= self.limits.inline_max_bytes:
            return await self._put_inline(bucket, key, body, new, expected, condition)
        staged, digests = await self.blobs.stage(
            self.settings.backend_for(bucket), body, expected, self.limits.max_object_bytes)
        version = self.new_version(
            bucket, key, new, size=digests.size, etag=f'"{digests.md5_hex()}"',
            sha256=digests.sha256_hex(), checksums=digests.checksum_values(),
        )
        await self.blobs.commit(staged, digests.sha256_hex(), lambda c: c.put_version(version, condition))
        return version

    async def check_write(self, bucket: str, key: str, condition: WriteCondition) -> None:
        current = await self.catalog.read(lambda c: c.get_version(bucket, key, None))
        check_write(current, condition, key)

    async def _put_inline(
        self, bucket: str, key: str, body: AsyncIterable[bytes], new: NewObject, expected: Expected,
        condition: WriteCondition,
    ) -> VersionRecord:
        """A small object: its bytes and its version commit in one catalog
        transaction (one fsync, no file). The body is at most inline_max_bytes."""
        digests = Digests(expected.checksum_names())
        pieces: list[bytes] = []
        async for chunk in body:
            if digests.size + len(chunk) > self.limits.inline_max_bytes:
                raise SizeMismatch("more bytes arrived than were declared")
            digests.update(chunk)
            pieces.append(chunk)
        verify_received(expected, digests)
        stored, encoding = await self.blobs.encode_inline(b"".join(pieces))
        version = self.new_version(
            bucket, key, new, size=digests.size, etag=f'"{digests.md5_hex()}"',
            sha256=digests.sha256_hex(), checksums=digests.checksum_values(),
        )
        await self.catalog.write(lambda c: c.put_inline_version(version, stored, encoding, condition))
        return version

    def new_version(
        self, bucket: str, key: str, new: NewObject, *, size: int, etag: str, sha256: str | None,
        checksums: dict[str, str], delete_marker: bool = False, parts_count: int | None = None,
    ) -> VersionRecord:
        """A version made at this node, now."""
        hlc = self.clock.now()
        return VersionRecord(
            bucket=bucket, key=key, version_id=str(VersionId(hlc, self.node_id)), hlc=hlc,
            origin=self.node_id, size=size, etag=etag, sha256=sha256,
            last_modified_ms=hlc_millis(hlc), delete_marker=delete_marker,
            content_type=new.content_type, headers=new.headers, user_meta=new.user_meta,
            checksums=checksums, tags=new.tags, parts_count=parts_count,
        )

    def check_writable(self, bucket: str, key: str) -> None:
        """Refuse writes inside a prefix ingested read-only from disk."""
        if self.ingested is not None:
            self.ingested.check_writable(bucket, key)

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
        """The bytes of a version (or of a range of it), ready to send, from the
        first source that holds them. Copies found corrupt are skipped (and if
        none is left, refused here, before any byte is sent)."""
        copies = await self.blobs.copies(v.sha256) if v.sha256 is not None else []
        wanted = Wanted(v, rng, copies)
        for source in self.sources:
            body = await source.open(wanted)
            if body is not None:
                return body
        if any(c.damaged for c in copies):
            raise ObjectCorrupt(f"the stored bytes of blob {v.sha256} failed verification; "
                                "the version is unreadable until it is repaired")
        if copies:
            raise StorageUnavailable(f"blob {v.sha256} is stored on backends not configured on this node: "
                                     + ", ".join(sorted(c.backend for c in copies)))
        raise StorageUnavailable(f"the bytes of {v.bucket}/{v.key} ({v.version_id}) are not on this node")

    # -- deleting -------------------------------------------------------

    async def delete_object(self, bucket: str, key: str, version_id: str | None) -> DeleteResult:
        validate_key(key)
        self.check_writable(bucket, key)
        if version_id is None:
            await self.get_bucket(bucket)
            marker = self.new_version(
                bucket, key, NewObject(), size=0, etag=EMPTY_MD5_ETAG, sha256=None, checksums={},
                delete_marker=True,
            )
            await self.catalog.write(lambda c: c.put_version(marker))
            return DeleteResult(marker.version_id, True)
        validate_version_id(version_id)
        hlc = self.clock.now()
        removed, released = await self.catalog.write(
            lambda c: _delete_version_checked(c, bucket, key, version_id, hlc))
        await self.blobs.release(released)
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
        self.check_writable(bucket, key)
        await self.get_bucket(bucket)
        if new is None:
            new = NewObject(src.content_type, src.headers, src.user_meta, src.tags)
        # An ingested file not yet hashed has no sha256, but bytes (re-read below).
        if src.sha256 is None and not (self.ingested is not None and self.ingested.holds(src)):
            raise KeyNotFound(src.key)
        # A checksum the source already carries need not be computed again.
        missing = tuple(a for a in checksum_algorithms if a not in src.checksums)
        target = self.settings.backend_for(bucket)
        if src.sha256 is None or missing or src.parts_count or not await self.blobs.holds(src.sha256, target):
            # Re-read the bytes once: to compute what the copy should carry, or
            # to store them on the target bucket's backend.
            staged, digests = await self.blobs.stage(
                target, (await self.open_object(src, None)).chunks, Expected(algorithms=checksum_algorithms),
                self.limits.max_object_bytes,
            )
            version = self.new_version(
                bucket, key, new, size=src.size, etag=f'"{digests.md5_hex()}"',
                sha256=digests.sha256_hex(), checksums=digests.checksum_values(),
            )
            await self.blobs.commit(staged, digests.sha256_hex(), lambda c: c.put_version(version))
            return version
        checksums = ({a: src.checksums[a] for a in checksum_algorithms} if checksum_algorithms
                     else dict(src.checksums))
        version = self.new_version(
            bucket, key, new, size=src.size, etag=src.etag, sha256=src.sha256, checksums=checksums,
        )
        # Same bytes, same content id: only a new reference, no byte is copied.
        content_id = src.sha256
        async with self.blobs.lock(content_id):
            # Still there, intact, under the lock that deletions hold?
            if not await self.blobs.holds(content_id, target, confirm=True):
                raise StorageUnavailable(f"blob {content_id} is missing")
            await self.catalog.write(lambda c: c.put_version(version))
        return version

    # -- tags -----------------------------------------------------------

    async def set_tags(self, bucket: str, key: str, version_id: str | None, tags: dict[str, str]) -> VersionRecord:
        self.check_writable(bucket, key)
        v = await self.get_version(bucket, key, version_id)
        stamp = str(VersionId(self.clock.now(), self.node_id))
        await self.catalog.write(lambda c: c.set_tags(bucket, key, v.version_id, tags, stamp))
        return replace(v, tags=tags, tags_stamp=stamp)

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


def default_sources(blobs: BlobStore, ingested: IngestService | None) -> list[ByteSource]:
    """Inline copies, then the node's backends, then ingested files."""
    sources: list[ByteSource] = [InlineSource(blobs), BackendSource(blobs)]
    if ingested is not None:
        sources.append(IngestSource(ingested))
    return sources


def _get_version_or_bucket(c: SqliteCatalog, bucket: str, key: str, version_id: str | None) -> VersionRecord | None:
    v = c.get_version(bucket, key, version_id)
    if v is None:
        c.get_bucket(bucket)  # NoSuchBucket beats NoSuchKey
    return v


def _delete_version_checked(c: SqliteCatalog, bucket: str, key: str, version_id: str, hlc: int):
    c.get_bucket(bucket)
    return c.delete_version(bucket, key, version_id, hlc)
