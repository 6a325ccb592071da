"""HTTP conditional requests against a version (RFC 9110 section 13, as S3 applies them).

Used by GET/HEAD (If-*) and by copies (x-amz-copy-source-if-*).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meshd.model import VersionRecord
from meshd.errors import KeyNotFound, NotModified, PreconditionFailed


@dataclass(frozen=True)
class Conditions:
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: datetime | None = None
    if_unmodified_since: datetime | None = None

    def __bool__(self) -> bool:
        return any((self.if_match, self.if_none_match, self.if_modified_since, self.if_unmodified_since))


def _etag_matches(header: str, etag: str) -> bool:
    bare = etag.strip('"')
    for candidate in header.split(","):
        c = candidate.strip()
        if c == "*" or c.removeprefix("W/").strip('"') == bare:
            return True
    return False


def check_conditions(v: VersionRecord, cond: Conditions, *, for_copy: bool = False) -> None:
    """Raise PreconditionFailed or NotModified as S3 does.

    S3 specifics: If-Match true wins over If-Unmodified-Since false; If-None-Match
    false wins over If-Modified-Since true. A copy answers 412 where a GET answers
    304, and names its conditions by their copy headers (x-amz-copy-source-If-Match).
    """

    def failed(name: str) -> PreconditionFailed:
        return PreconditionFailed(f"x-amz-copy-source-{name}" if for_copy else name)

    modified_s = v.last_modified_ms // 1000  # HTTP dates have whole seconds
    if cond.if_match is not None:
        if not _etag_matches(cond.if_match, v.etag):
            raise failed("If-Match")
    elif cond.if_unmodified_since is not None:
        if modified_s > int(cond.if_unmodified_since.timestamp()):
            raise failed("If-Unmodified-Since")
    if cond.if_none_match is not None:
        if _etag_matches(cond.if_none_match, v.etag):
            if for_copy:
                raise failed("If-None-Match")
            raise NotModified(v.etag, v.last_modified_ms)
    elif cond.if_modified_since is not None:
        if modified_s <= int(cond.if_modified_since.timestamp()):
            if for_copy:
                raise failed("If-Modified-Since")
            raise NotModified(v.etag, v.last_modified_ms)


@dataclass(frozen=True)
class WriteCondition:
    """S3 conditional writes: `If-None-Match: *` (only if the key has no current
    object) and `If-Match: <etag>` (only if the current object has that ETag).
    Checked again inside the catalog transaction that commits the version, so
    two racing writers cannot both pass."""

    if_none_match: bool = False
    if_match: str | None = None

    def __bool__(self) -> bool:
        return self.if_none_match or self.if_match is not None


def check_write(current: VersionRecord | None, cond: WriteCondition, key: str | None = None) -> None:
    """Raise as S3 does when a conditional write's condition does not hold for
    the key's current version (`key` names it in a NoSuchKey)."""
    exists = current is not None and not current.delete_marker
    if cond.if_none_match and exists:
        raise PreconditionFailed("If-None-Match")
    if cond.if_match is not None:
        if not exists:
            raise KeyNotFound(key, "the object named by If-Match does not exist")
        assert current is not None
        if not _etag_matches(cond.if_match, current.etag):
            raise PreconditionFailed("If-Match")
