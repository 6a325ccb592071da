"""HTTP header conventions of S3: object metadata in and out, dates, ranges,
conditional headers."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Mapping
from urllib.parse import parse_qsl, quote

from meshd.model import VersionRecord
from meshd.conditions import Conditions
from meshd.errors import RangeNotSatisfiable
from meshd.transfers import ByteRange, NewObject
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
_TAG_PUNCTUATION = frozenset("_.:/=+-@")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# ASCII digits only: \d would also accept other scripts' digits, which int() reads.
_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# Python refuses to parse very long digit strings; any offset this long is past every object.
_MAX_OFFSET_DIGITS = 30


def http_date(ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(ms // 1000, tz=timezone.utc), usegmt=True)


def parse_http_date(text: str | None) -> datetime | None:
    """An HTTP date in UTC, or None if `text` is not one."""
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)
        # RFC 2822 "-0000" parses as a naive datetime; it still means UTC.
        return parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: "31 Dec 9999 23:59 -0100"
        return None


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One `bytes=` range as S3 accepts it; None means the whole object.
    Syntactically invalid or multi-range headers are ignored (RFC 9110)."""
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if not m:
        return None
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = _offset(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        n = min(n, size)
        return ByteRange(size - n, n)
    start = _offset(first)
    if last and _number_order(last) < _number_order(first):
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(_offset(last), size - 1) if last else size - 1
    return ByteRange(start, end - start + 1)


def _offset(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_OFFSET_DIGITS else 10**_MAX_OFFSET_DIGITS


def _number_order(digits: str) -> tuple[int, str]:
    """Orders digit strings by their value at any length (_offset caps long ones,
    so it cannot tell which of two offsets past every object comes first)."""
    digits = digits.lstrip("0")
    return len(digits), digits


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
        text.encode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise e.InvalidTag("The tag header is not a valid URL-encoded query.") from None
    return validate_tags(pairs)


def validate_tags(pairs: list[tuple[str, str]]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for k, v in pairs:
        if not k or len(k) > 128 or len(v) > 256:
            raise e.InvalidTag("The TagKey or TagValue you have provided is too long or empty.")
        if not _tag_text(k) or not _tag_text(v):
            raise e.InvalidTag("The TagKey or TagValue you have provided contains invalid characters.")
        if k.startswith("aws:"):
            raise e.InvalidTag("Your TagKey cannot be prefixed with aws:")
        if k in tags:
            raise e.InvalidTag("Cannot provide multiple Tags with the same key")
        tags[k] = v
    if len(tags) > MAX_TAGS:
        raise e.InvalidTag("Object tags cannot be greater than 10")
    return tags


def _tag_text(s: str) -> bool:
    """S3's tag pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$."""
    return all(c in _TAG_PUNCTUATION or unicodedata.category(c)[0] in "LZN" for c in s)


def _utf8(name: str, value: str) -> str:
    """Header bytes that are not UTF-8 arrive as surrogate escapes and cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise e.InvalidArgument(f"The value of {name} is not valid UTF-8.", ArgumentName=name) from None
    return value


def new_object_from_headers(headers: Mapping[str, str]) -> NewObject:
    user_meta: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith("x-amz-meta-"):
            k = lname[len("x-amz-meta-"):]
            value = _utf8(name, value)
            # A repeated header is one value, comma-joined, as S3 stores it.
            user_meta[k] = f"{user_meta[k]},{value}" if k in user_meta else value
    if sum(len(k) + len(v.encode()) for k, v in user_meta.items()) > MAX_USER_METADATA_BYTES:
        raise e.MetadataTooLarge()
    stored = {h: _utf8(h, headers[h]) for h in STORED_HEADERS if h in headers}
    tagging = headers.get("x-amz-tagging")
    storage_class = headers.get("x-amz-storage-class")
    if storage_class and storage_class not in ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA",
                                               "ONEZONE_IA", "INTELLIGENT_TIERING"):
        raise e.InvalidStorageClass()
    return NewObject(
        content_type=_utf8("Content-Type", headers.get("Content-Type") or "binary/octet-stream"),
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
            value = query[param]
            # A header value cannot carry control characters (and CR/LF would inject headers).
            if _CONTROL_RE.search(value):
                raise e.InvalidArgument(f"Invalid value for {param}.", ArgumentName=param)
            h[header] = value


def url_encode_key(key: str) -> str:
    return quote(key, safe="/")
