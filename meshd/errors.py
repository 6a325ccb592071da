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
    pass


class KeyNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    pass


class UploadNotFound(NotFound):
    pass


class DeleteMarkerHit(MeshdError):
    """The addressed version (or the current one) is a delete marker."""

    def __init__(self, version_id: str, *, addressed: bool) -> None:
        super().__init__("the object is a delete marker")
        self.version_id = version_id
        self.addressed = addressed  # True when the request named this version


class BucketExists(MeshdError):
    def __init__(self, name: str, *, owned_by_caller: bool) -> None:
        super().__init__(f"bucket {name} exists")
        self.owned_by_caller = owned_by_caller


class BucketNotEmpty(MeshdError):
    pass


class InvalidBucketName(MeshdError):
    pass


class InvalidKey(MeshdError):
    pass


class InvalidVersionId(MeshdError):
    """Text that cannot be a version id at all (as opposed to an unknown one)."""


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
    pass


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
