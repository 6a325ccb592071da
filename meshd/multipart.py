"""Multipart uploads: create, upload parts, list, abort, complete into one version.

Parts are blobs like any other (staged, hashed, committed on the bucket's
backend) referenced by the upload until it completes or is aborted. Complete
streams the parts, in order, into one new blob, hashed on the way for its
content id, so every version has one blob and a whole-object SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, AsyncIterable, AsyncIterator

from meshd.conditions import WriteCondition
from meshd.errors import InvalidPart, InvalidPartOrder, ObjectCorrupt, PartTooSmall, StorageUnavailable, TooLarge
from meshd.hlc import hlc_millis
from meshd.model import PartPage, PartRecord, UploadPage, UploadRecord, VersionRecord
from meshd.names import validate_key
from meshd.transfers import CompletedPart, Expected, NewObject, composite_checksums

if TYPE_CHECKING:
    from meshd.objects import ObjectService

MAX_PART_NUMBER = 10000


class MultipartUploads:
    def __init__(self, objects: ObjectService) -> None:
        self.objects = objects
        self.catalog = objects.catalog
        self.blobs = objects.blobs
        self.limits = objects.limits

    async def create(
        self, bucket: str, key: str, owner: str, new: NewObject, checksum_algorithm: str | None
    ) -> UploadRecord:
        validate_key(key)
        self.objects.check_writable(bucket, key)
        hlc = self.objects.clock.now()
        upload = UploadRecord(
            # The timestamp first, so ids sort by initiation as S3 lists the
            # uploads of one key; the random rest makes them unguessable.
            upload_id=f"{hlc:016x}{secrets.token_urlsafe(18)}", bucket=bucket, key=key,
            initiated_ms=hlc_millis(hlc), owner=owner,
            content_type=new.content_type, headers=new.headers, user_meta=new.user_meta,
            tags=new.tags, checksum_algorithm=checksum_algorithm,
            backend=self.objects.settings.backend_for(bucket),
        )
        await self.catalog.write(lambda c: c.create_upload(upload))
        return upload

    async def get(self, bucket: str, key: str, upload_id: str) -> UploadRecord:
        def lookup(c) -> UploadRecord:
            c.get_bucket(bucket)  # NoSuchBucket beats NoSuchUpload
            return c.get_upload(bucket, key, upload_id)

        return await self.catalog.run(lookup)

    async def upload_part(
        self, upload: UploadRecord, part_number: int, body: AsyncIterable[bytes], expected: Expected
    ) -> PartRecord:
        if upload.checksum_algorithm and upload.checksum_algorithm not in expected.algorithms:
            expected.algorithms = (*expected.algorithms, upload.checksum_algorithm)
        staged, digests = await self.blobs.stage(self._backend(upload), body, expected, self.limits.max_part_bytes)
        part = PartRecord(
            upload_id=upload.upload_id, part_number=part_number, size=digests.size,
            etag=f'"{digests.md5_hex()}"', sha256=digests.sha256_hex(),
            last_modified_ms=hlc_millis(self.objects.clock.now()), checksums=digests.checksum_values(),
        )
        released = await self.blobs.commit(staged, part.sha256, lambda c: c.put_part(part))
        await self.blobs.release(released)
        return part

    async def list_parts(self, upload: UploadRecord, after: int, limit: int) -> PartPage:
        return await self.catalog.run(lambda c: c.list_parts(upload.upload_id, after, limit))

    async def list(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str | None,
        upload_id_marker: str | None, limit: int,
    ) -> UploadPage:
        return await self.catalog.read(
            lambda c: c.list_uploads(bucket, prefix, delimiter, key_marker, upload_id_marker, limit)
        )

    async def abort(self, upload: UploadRecord) -> None:
        released = await self.catalog.write(lambda c: c.finish_upload(upload, None))
        await self.blobs.release(released)

    async def complete(
        self, upload: UploadRecord, requested: list[CompletedPart], condition: WriteCondition = WriteCondition()
    ) -> VersionRecord:
        """Assemble the listed parts, in order, into one new version.

        The parts are streamed into one new blob, hashed on the way for its
        content id (not MD5: the ETag comes from the parts' MD5s), so memory
        stays flat and hashing and disk IO run in worker threads."""
        self.objects.check_writable(upload.bucket, upload.key)
        chosen = await self._chosen_parts(upload, requested)
        if condition:  # before the assembly; checked again at the commit
            await self.objects.check_write(upload.bucket, upload.key, condition)
        limit = self.limits.max_parts * self.limits.max_part_bytes
        if sum(p.size for p in chosen) > limit:
            raise TooLarge(f"the object is larger than {limit} bytes")

        async def concatenated() -> AsyncIterator[bytes]:
            for p in chosen:
                async for chunk in await self._part_bytes(p):
                    yield chunk

        staged, digests = await self.blobs.stage(self._backend(upload), concatenated(), Expected(), limit, md5=False)
        md5s = b"".join(bytes.fromhex(p.etag.strip('"')) for p in chosen)
        etag = f'"{hashlib.md5(md5s).hexdigest()}-{len(chosen)}"'
        new = NewObject(upload.content_type, upload.headers, upload.user_meta, upload.tags)
        version = self.objects.new_version(
            upload.bucket, upload.key, new, size=digests.size, etag=etag, sha256=digests.sha256_hex(),
            checksums=composite_checksums(upload.checksum_algorithm, chosen), parts_count=len(chosen),
        )
        released = await self.blobs.commit(
            staged, digests.sha256_hex(), lambda c: c.finish_upload(upload, version, condition))
        await self.blobs.release(released)
        return version

    def _backend(self, upload: UploadRecord) -> str:
        return upload.backend or self.limits.default_backend

    async def _part_bytes(self, part: PartRecord) -> AsyncIterator[bytes]:
        """A part's bytes from the first intact copy the node records."""
        copies = await self.blobs.copies(part.sha256)
        for info in copies:
            if not info.damaged:
                return self.blobs.read(info, 0, part.size)
        if copies:
            raise ObjectCorrupt(f"the stored bytes of part {part.part_number} failed verification")
        raise StorageUnavailable(f"the bytes of part {part.part_number} are not recorded on this node")

    async def _chosen_parts(self, upload: UploadRecord, requested: list[CompletedPart]) -> list[PartRecord]:
        """The stored parts the client listed, checked as S3 checks them."""
        if not requested:
            raise InvalidPart("you must specify at least one part")
        numbers = [p.part_number for p in requested]
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            raise InvalidPartOrder("the list of parts was not in ascending order")
        if len(requested) > self.limits.max_parts:
            raise TooLarge(f"an object has at most {self.limits.max_parts} parts")
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
            if i < len(requested) - 1 and part.size < self.limits.min_part_bytes:
                raise PartTooSmall(f"part {want.part_number} is smaller than the minimum part size")
            chosen.append(part)
        return chosen
