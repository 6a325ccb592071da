"""HTTP header conventions of S3: object metadata in and out, dates, ranges,
conditional headers."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Mapping
from urllib.parse import parse_qsl, quote

from meshd.catalog.records import VersionRecord
from meshd.conditions import Conditions
from meshd.errors import RangeNotSatisfiable
from meshd.objects import ByteRange, NewObject
from s3gateway import errors as e

STORED_HEADERS = ("Content-Encoding", "Content-Disposition", "Content-Language", "Cache-Control", "Expires")
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
MAX_USER_METADATA_BYTES = 2048
MAX_TAGS = 10
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def http_date(ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(ms // 1000, tz=timezone.utc), usegmt=True)


def parse_http_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        dt = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One `bytes=` range as S3 accepts it; None means the whole object.
    Syntactically invalid or multi-range headers are ignored (RFC 9110)."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        n = min(n, size)
        return ByteRange(size - n, n)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return ByteRange(start, end - start + 1)


def conditions(headers: Mapping[str, str], prefix: str = "") -> Conditions:
    """If-* headers (or x-amz-copy-source-if-* with prefix='x-amz-copy-source-')."""
    return Conditions(
        if_match=headers.get(f"{prefix}if-match"),
        if_none_match=headers.get(f"{prefix}if-none-match"),
        if_modified_since=parse_http_date(headers.get(f"{prefix}if-modified-since")),
        if_unmodified_since=parse_http_date(headers.get(f"{prefix}if-unmodified-since")),
    )


def parse_tagging_header(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise e.InvalidTag("The tag header is not a valid URL-encoded query.") from None
    return validate_tags(pairs)


def validate_tags(pairs: list[tuple[str, str]]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for k, v in pairs:
        if not k or len(k) > 128 or len(v) > 256:
            raise e.InvalidTag("The TagKey or TagValue you have provided is too long or empty.")
        if k in tags:
            raise e.InvalidTag("Cannot provide multiple Tags with the same key")
        tags[k] = v
    if len(tags) > MAX_TAGS:
        raise e.InvalidTag("Object tags cannot be greater than 10")
    return tags


def new_object_from_headers(headers: Mapping[str, str]) -> NewObject:
    user_meta: dict[str, str] = {}
    size = 0
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith("x-amz-meta-"):
            k = lname[len("x-amz-meta-"):]
            user_meta[k] = value
            size += len(k) + len(value.encode())
    if size > MAX_USER_METADATA_BYTES:
        raise e.MetadataTooLarge()
    stored = {h: headers[h] for h in STORED_HEADERS if h in headers}
    tagging = headers.get("x-amz-tagging")
    storage_class = headers.get("x-amz-storage-class")
    if storage_class and storage_class not in ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA",
                                               "ONEZONE_IA", "INTELLIGENT_TIERING"):
        raise e.InvalidStorageClass()
    return NewObject(
        content_type=headers.get("Content-Type") or "binary/octet-stream",
        headers=stored,
        user_meta=user_meta,
        tags=parse_tagging_header(tagging) if tagging else {},
    )


def object_headers(v: VersionRecord, *, checksum_mode: bool = False) -> dict[str, str]:
    h = {
        "Content-Type": v.content_type,
        "ETag": v.etag,
        "Last-Modified": http_date(v.last_modified_ms),
        "Accept-Ranges": "bytes",
        "x-amz-version-id": v.version_id,
    }
    h.update(v.headers)
    for k, val in v.user_meta.items():
        h[f"x-amz-meta-{k}"] = val
    if v.tags:
        h["x-amz-tagging-count"] = str(len(v.tags))
    if checksum_mode:
        for algo, val in v.checksums.items():
            h[f"x-amz-checksum-{algo}"] = val
            if "-" in val:
                h["x-amz-checksum-type"] = "COMPOSITE"
            else:
                h["x-amz-checksum-type"] = "FULL_OBJECT"
    return h


def apply_response_overrides(h: dict[str, str], query: Mapping[str, str]) -> None:
    for param, header in RESPONSE_OVERRIDES.items():
        if param in query:
            h[header] = query[param]


def url_encode_key(key: str) -> str:
    return quote(key, safe="/")
