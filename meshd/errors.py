"""Errors of the object service, in its own words.

The S3 edge maps each of these to an S3 error code and status in exactly one
place (`s3gateway.errors.from_domain`); nothing below the edge knows S3 codes.
"""

from __future__ import annotations


class MeshdError(Exception):
    """Base of every expected, client-visible failure."""


class NotFound(MeshdError):
    pass


class BucketNotFound(NotFound):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"no bucket {bucket!r}")
        self.bucket = bucket


class KeyNotFound(NotFound):
    def __init__(self, key: str | None, message: str | None = None) -> None:
        super().__init__(message or f"no key {key!r}")
        self.key = key  # None when the request named no key of its own


class VersionNotFound(NotFound):
    def __init__(self, version_id: str) -> None:
        super().__init__(f"no version {version_id!r}")
        self.version_id = version_id


class UploadNotFound(NotFound):
    def __init__(self, upload_id: str) -> None:
        super().__init__(f"no upload {upload_id!r}")
        self.upload_id = upload_id


class DeleteMarkerHit(MeshdError):
    """The addressed version (or the current one) is a delete marker."""

    def __init__(self, version_id: str, *, addressed: bool) -> None:
        super().__init__("the object is a delete marker")
        self.version_id = version_id
        self.addressed = addressed  # True when the request named this version


class BucketExists(MeshdError):
    def __init__(self, bucket: str, *, owned_by_caller: bool) -> None:
        super().__init__(f"bucket {bucket} exists")
        self.bucket = bucket
        self.owned_by_caller = owned_by_caller


class BucketNotEmpty(MeshdError):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket {bucket} is not empty")
        self.bucket = bucket


class InvalidBucketName(MeshdError):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"invalid bucket name {bucket!r}")
        self.bucket = bucket


class InvalidKey(MeshdError):
    """A key S3 does not accept (empty, not UTF-8)."""


class KeyTooLong(InvalidKey):
    pass


class InvalidVersionId(MeshdError):
    """Text that cannot be a version id at all (as opposed to an unknown one)."""

    def __init__(self, text: str) -> None:
        super().__init__(f"invalid version id {text!r}")
        self.text = text


class DigestMismatch(MeshdError):
    """Bytes received do not match a digest the client sent."""

    def __init__(self, which: str) -> None:
        super().__init__(f"the {which} you specified did not match the calculated value")
        self.which = which  # "md5", "content-sha256" (x-amz-content-sha256), or a checksum name


class SizeMismatch(MeshdError):
    """Fewer or more bytes than the declared length arrived."""


class TooLarge(MeshdError):
    pass


class PartTooSmall(MeshdError):
    pass


class InvalidPart(MeshdError):
    pass


class InvalidPartOrder(MeshdError):
    pass


class PreconditionFailed(MeshdError):
    def __init__(self, condition: str) -> None:
        super().__init__(f"the {condition} condition does not hold")
        self.condition = condition  # the header that failed: "If-Match", ...


class NotModified(MeshdError):
    def __init__(self, etag: str, last_modified_ms: int) -> None:
        super().__init__("not modified")
        self.etag = etag
        self.last_modified_ms = last_modified_ms


class RangeNotSatisfiable(MeshdError):
    def __init__(self, size: int) -> None:
        super().__init__("the requested range is not satisfiable")
        self.size = size


class StorageError(MeshdError):
    """The node's storage, not the request, is the problem: the S3 edge logs
    the detail for the operator and answers the client a generic error."""


class StorageUnavailable(StorageError):
    """The backend holding these bytes failed or is unreachable."""


class IngestedReadOnly(MeshdError):
    """A write or delete inside a prefix that is ingested read-only from disk."""


class StorageFull(StorageError):
    pass


class ObjectCorrupt(StorageError):
    """Stored bytes failed verification; they are not served."""
