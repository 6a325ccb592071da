"""Names the object service accepts: bucket names, keys and version ids (S3's rules)."""

from __future__ import annotations

import re

from meshd.errors import InvalidBucketName, InvalidKey, InvalidVersionId, KeyTooLong

MAX_KEY_BYTES = 1024
# fullmatch, not match with "^...$": "$" also matches before a trailing newline ("abc\n").
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# str(VersionId): a 16-hex-digit HLC timestamp, then the origin node id.
_VERSION_ID_RE = re.compile(r"[0-9a-f]{16}[0-9A-Za-z_.-]{1,64}")


def validate_bucket_name(name: str) -> None:
    if (
        not _BUCKET_RE.fullmatch(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or _IPV4_RE.match(name)
        or name.startswith(("xn--", "sthree-"))
        or name.endswith(("-s3alias", "--ol-s3"))
    ):
        raise InvalidBucketName(name)


def validate_key(key: str) -> None:
    if not key:
        raise InvalidKey("the key is empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyTooLong("the key is longer than 1024 bytes")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey("the key is not valid UTF-8") from None


def validate_version_id(version_id: str) -> None:
    """Reject text that cannot name any version (S3: 400), before it reaches the catalog."""
    if not _VERSION_ID_RE.fullmatch(version_id):
        raise InvalidVersionId(version_id[:100])
