"""s3gateway.headers: Range parsing (examples and properties), conditional headers,
object metadata headers in and out, tag headers."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from meshd.model import VersionRecord
from meshd.errors import RangeNotSatisfiable
from meshd.transfers import ByteRange
from s3gateway import errors as e
from s3gateway.headers import (
    apply_response_overrides,
    conditions,
    new_object_from_headers,
    object_headers,
    parse_http_date,
    parse_range,
    parse_tagging_header,
    url_encode_key,
    validate_tags,
)

# -- parse_range: examples ------------------------------------------------------


@pytest.mark.parametrize("header,size,expected", [
    ("bytes=0-9", 100, ByteRange(0, 10)),
    ("bytes=5-", 100, ByteRange(5, 95)),
    ("bytes=-5", 100, ByteRange(95, 5)),
    ("bytes=-500", 100, ByteRange(0, 100)),
    ("bytes=95-200", 100, ByteRange(95, 5)),
    ("bytes=99-99", 100, ByteRange(99, 1)),
    ("bytes=0-0", 1, ByteRange(0, 1)),
    ("  bytes=1-2  ", 10, ByteRange(1, 2)),
    ("bytes=007-009", 10, ByteRange(7, 3)),
    ("bytes=0-" + "9" * 5000, 10, ByteRange(0, 10)),
    ("bytes=-" + "9" * 5000, 10, ByteRange(0, 10)),
    ("bytes=" + "0" * 5000 + "1-2", 10, ByteRange(1, 2)),
])
def test_satisfiable(header: str, size: int, expected: ByteRange) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", [
    None, "", "bytes=", "bytes=-", "bytes=abc", "items=0-1", "bytes=5-2", "bytes=0-1,3-4",
    "bytes 0-1", "0-1", "bytes=--1", "bytes=1-2-3", "bytes=+1-2", "bytes=0x1-2", "bytes=٣-",
    "bytes=1-٣", "bytes=1 -2", "BYTES=0-1", "bytes=1.0-2",
])
def test_ignored(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize("header,size", [
    ("bytes=100-", 100), ("bytes=100-100", 100), ("bytes=-0", 100), ("bytes=0-", 0),
    ("bytes=-1", 0), ("bytes=0-0", 0), ("bytes=" + "9" * 5000 + "-", 100),
])
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(header, size)
    assert exc.value.size == size


# Offsets of 31 and more digits: past the 30 digits parse_range hands to int(),
# and past every object. A huge start is unsatisfiable (416) like any start past
# the end; a last-byte-pos below the first-byte-pos makes the header invalid, so
# it is ignored (RFC 9110 14.1.1), however long the numbers are.
D30 = "1" + "0" * 29  # 10**29
D31 = "1" + "0" * 30  # 10**30
D31_MORE = "2" + "0" * 30


def _short(value: object) -> str:
    """A test id: runs of one digit written as digit*count."""
    return re.sub(r"(\d)\1{9,}", lambda m: f"{m.group(1)}*{len(m.group(0))}", str(value))


@pytest.mark.parametrize("header,expected", [
    (f"bytes={D30}-", 416),
    (f"bytes={D31}-", 416),
    (f"bytes={D31}-{D31}", 416),
    (f"bytes={D31}-{D31_MORE}", 416),
    (f"bytes={'9' * 31}-{'9' * 40}", 416),
    (f"bytes={'4' * 5000}-{'5' * 5000}", 416),
    (f"bytes={D31_MORE}-{D31}", None),  # last < first, both past the 30 digits
    (f"bytes={'9' * 31}-{'9' * 30}", None),
    (f"bytes={'5' * 5000}-{'4' * 5000}", None),
    (f"bytes={D31}-{'9' * 30}", None),
    (f"bytes=5-{D31}", ByteRange(5, 95)),
    (f"bytes=-{D31}", ByteRange(0, 100)),
    (f"bytes={'0' * 40}5-{'0' * 40}3", None),  # leading zeros do not count
    (f"bytes={'0' * 40}3-{'0' * 40}5", ByteRange(3, 3)),
    (f"bytes=2-{'0' * 40}1", None),
    (f"bytes=0-{'0' * 40}", ByteRange(0, 1)),
    ("bytes=10-9", None),  # by value, not as text
    ("bytes=9-10", ByteRange(9, 2)),
], ids=_short)
def test_long_offsets(header: str, expected: ByteRange | int | None) -> None:
    if expected == 416:
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 100)
    else:
        assert parse_range(header, 100) == expected


def model_range(first: str, last: str, size: int) -> ByteRange | int | None:
    """`bytes=first-last` with Python's exact integers (fine below 4300 digits)."""
    a, b = int(first), int(last) if last else None
    if b is not None and b < a:
        return None
    if a >= size:
        return 416
    end = size - 1 if b is None else min(b, size - 1)
    return ByteRange(a, end - a + 1)


_long_digits = st.builds(
    lambda zeros, digits: "0" * zeros + digits,
    st.integers(0, 3),
    st.one_of(st.integers(0, 200).map(str),  # within small objects
              st.integers(28, 45).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))),
)


@settings(max_examples=300, deadline=None)
@given(first=_long_digits, last=st.one_of(st.just(""), _long_digits), size=st.integers(0, 150))
def test_first_last_ranges_match_exact_arithmetic(first: str, last: str, size: int) -> None:
    try:
        got = parse_range(f"bytes={first}-{last}", size)
    except RangeNotSatisfiable:
        got = 416
    assert got == model_range(first, last, size)


# -- parse_range: properties ------------------------------------------------------

_digits = st.one_of(st.just(""), st.integers(0, 2**70).map(str), st.text("0123456789", max_size=60))
_structured = st.builds(lambda a, b, pre, post: f"{pre}{a}-{b}{post}", _digits, _digits,
                        st.sampled_from(["bytes=", "bytes= ", " bytes=", "byte=", "", "bytes=bytes="]),
                        st.sampled_from(["", " ", ",", ",0-1", "-", "\t"]))
_headers = st.one_of(st.none(), st.text(max_size=40), _structured)
_sizes = st.one_of(st.integers(0, 1000), st.integers(0, 2**63))


@settings(max_examples=300, deadline=None)
@given(header=_headers, size=_sizes)
def test_parse_range_is_none_in_bounds_or_unsatisfiable(header: str | None, size: int) -> None:
    try:
        rng = parse_range(header, size)
    except RangeNotSatisfiable as exc:
        assert exc.size == size
        return
    if rng is None:
        return
    assert isinstance(rng, ByteRange)
    assert 0 <= rng.start <= rng.end < size
    assert rng.length == rng.end - rng.start + 1 >= 1


@settings(max_examples=200, deadline=None)
@given(first=st.integers(0, 10**6), span=st.integers(0, 10**6), size=st.integers(0, 2 * 10**6))
def test_bounded_range_matches_slicing(first: int, span: int, size: int) -> None:
    last = first + span
    data_len = size
    try:
        rng = parse_range(f"bytes={first}-{last}", size)
    except RangeNotSatisfiable:
        assert first >= size
        return
    assert first < size
    assert rng is not None
    # The range selects exactly what Python slicing selects (clipped at the end).
    assert (rng.start, rng.end + 1) == (first, min(last + 1, data_len))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 10**6), size=st.integers(0, 10**6))
def test_suffix_range_is_the_last_n_bytes(n: int, size: int) -> None:
    try:
        rng = parse_range(f"bytes=-{n}", size)
    except RangeNotSatisfiable:
        assert n == 0 or size == 0
        return
    assert rng == ByteRange(size - min(n, size), min(n, size))


# -- dates and conditional headers --------------------------------------------------


def test_parse_http_date() -> None:
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == datetime(1994, 11, 6, 8, 49, 37, tzinfo=timezone.utc)
    # Dates without a zone are taken as UTC, so comparisons never mix naive and aware.
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37").tzinfo is not None
    for bad in (None, "", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT", "\x00"):
        assert parse_http_date(bad) is None


@pytest.mark.parametrize("text,utc", [
    # A numeric offset is applied: 08:12:31 at +0200 is 06:12:31 UTC (RFC 5322 3.3).
    ("Tue, 15 Nov 1994 08:12:31 +0200", (1994, 11, 15, 6, 12, 31)),
    ("Tue, 15 Nov 1994 08:12:31 -0500", (1994, 11, 15, 13, 12, 31)),
    ("Tue, 15 Nov 1994 08:12:31 +1400", (1994, 11, 14, 18, 12, 31)),  # across midnight
    ("Tue, 15 Nov 1994 08:12:31 +0000", (1994, 11, 15, 8, 12, 31)),
    ("Tue, 15 Nov 1994 08:12:31 -0000", (1994, 11, 15, 8, 12, 31)),  # "-0000": UTC, parsed naive
    ("Tue, 15 Nov 1994 08:12:31 GMT", (1994, 11, 15, 8, 12, 31)),
    ("Tue, 15 Nov 1994 08:12:31 UTC", (1994, 11, 15, 8, 12, 31)),
    ("Tue, 15 Nov 1994 08:12:31 EST", (1994, 11, 15, 13, 12, 31)),  # RFC 5322 obsolete zone names
    ("Tue, 15 Nov 1994 08:12:31 PDT", (1994, 11, 15, 15, 12, 31)),
    # The obsolete forms HTTP recipients must accept (RFC 9110 5.6.7).
    ("Tuesday, 15-Nov-94 08:12:31 GMT", (1994, 11, 15, 8, 12, 31)),
    ("Tue Nov 15 08:12:31 1994", (1994, 11, 15, 8, 12, 31)),
])
def test_parse_http_date_reads_the_zone(text: str, utc: tuple[int, ...]) -> None:
    dt = parse_http_date(text)
    assert dt is not None
    # Not just the same instant: a UTC datetime, so what is compared and printed is UTC.
    assert dt.utcoffset() == timedelta(0) and dt.tzinfo is timezone.utc
    assert (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second) == utc


def test_if_unmodified_since_with_an_offset_compares_the_instant() -> None:
    """An object modified at 07:00:00 UTC: "08:30 +0200" is 06:30 UTC, before it
    (412); read as 08:30 UTC it would pass."""
    from meshd.conditions import check_conditions
    from meshd.errors import PreconditionFailed

    v = _version(last_modified_ms=int(datetime(1994, 11, 15, 7, 0, 0, tzinfo=timezone.utc).timestamp() * 1000))
    with pytest.raises(PreconditionFailed):
        check_conditions(v, conditions(CIMultiDict({"If-Unmodified-Since": "Tue, 15 Nov 1994 08:30:00 +0200"})))
    check_conditions(v, conditions(CIMultiDict({"If-Unmodified-Since": "Tue, 15 Nov 1994 07:30:00 +0000"})))
    check_conditions(v, conditions(CIMultiDict({"If-Unmodified-Since": "Tue, 15 Nov 1994 02:30:00 -0500"})))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parse_http_date_never_raises(text: str) -> None:
    dt = parse_http_date(text)
    assert dt is None or dt.tzinfo is not None


def test_conditions_from_headers_and_copy_headers() -> None:
    h = CIMultiDict({
        "If-Match": '"a"', "If-None-Match": '"b"',
        "If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT", "If-Unmodified-Since": "garbage",
        "x-amz-copy-source-if-match": '"c"',
    })
    c = conditions(h)
    assert c.if_match == '"a"' and c.if_none_match == '"b"'
    assert c.if_modified_since == datetime(1994, 11, 6, 8, 49, 37, tzinfo=timezone.utc)
    assert c.if_unmodified_since is None
    copy = conditions(h, "x-amz-copy-source-")
    assert copy.if_match == '"c"'
    assert copy.if_none_match is None
    assert not conditions(CIMultiDict())


# -- metadata in ---------------------------------------------------------------------


def test_new_object_from_headers() -> None:
    h = CIMultiDict([
        ("Content-Type", "text/csv"), ("Cache-Control", "no-cache"), ("Expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
        ("Content-Disposition", "inline"), ("Content-Language", "en"), ("Content-Encoding", "gzip"),
        ("X-Amz-Meta-Project", "mesh"), ("x-amz-meta-multi", "a"), ("x-amz-meta-multi", "b"),
        ("x-amz-tagging", "t=1&u=2"), ("Authorization", "ignored"),
    ])
    new = new_object_from_headers(h)
    assert new.content_type == "text/csv"
    assert new.user_meta == {"project": "mesh", "multi": "a,b"}
    assert new.headers == {"Cache-Control": "no-cache", "Expires": "Thu, 01 Jan 2037 00:00:00 GMT",
                           "Content-Disposition": "inline", "Content-Language": "en", "Content-Encoding": "gzip"}
    assert new.tags == {"t": "1", "u": "2"}


def test_new_object_defaults() -> None:
    new = new_object_from_headers(CIMultiDict())
    assert new.content_type == "binary/octet-stream"
    assert new.user_meta == {} and new.headers == {} and new.tags == {}


def test_user_metadata_limit_counts_names_and_utf8_bytes() -> None:
    new_object_from_headers(CIMultiDict({"x-amz-meta-a": "v" * 2047}))
    with pytest.raises(e.MetadataTooLarge):
        new_object_from_headers(CIMultiDict({"x-amz-meta-a": "v" * 2048}))
    with pytest.raises(e.MetadataTooLarge):
        new_object_from_headers(CIMultiDict({"x-amz-meta-a": "é" * 1024}))


@pytest.mark.parametrize("name", ["x-amz-meta-a", "Content-Type", "Cache-Control"])
def test_non_utf8_header_bytes_are_invalid_argument(name: str) -> None:
    # aiohttp hands non-UTF-8 header bytes over as surrogate escapes.
    value = b"\xff\xfe".decode("utf-8", "surrogateescape")
    with pytest.raises(e.InvalidArgument):
        new_object_from_headers(CIMultiDict({name: value}))


def test_invalid_storage_class() -> None:
    with pytest.raises(e.InvalidStorageClass):
        new_object_from_headers(CIMultiDict({"x-amz-storage-class": "GLACIER_FOREVER"}))
    assert new_object_from_headers(CIMultiDict({"x-amz-storage-class": "STANDARD"})).content_type


# meshd keeps every object the same way: the classes it accepts change nothing
# (listings say STANDARD); the archive classes (their objects need a restore
# before a GET) and the ones S3 itself refuses outside Outposts and directory
# buckets are InvalidStorageClass, as is anything else, in any other spelling.
@pytest.mark.parametrize("storage_class", [
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "",  # an empty header is no header
])
def test_accepted_storage_classes_store_like_standard(storage_class: str) -> None:
    h = CIMultiDict({"Content-Type": "text/plain", "x-amz-meta-a": "1", "x-amz-storage-class": storage_class})
    plain = CIMultiDict({"Content-Type": "text/plain", "x-amz-meta-a": "1"})
    assert new_object_from_headers(h) == new_object_from_headers(plain)


@pytest.mark.parametrize("storage_class", [
    "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS", "EXPRESS_ONEZONE", "SNOW", "FSX_OPENZFS",
    "standard", "Standard", " STANDARD", "STANDARD ", "STANDARD_IA,STANDARD", "GLACIER_FOREVER", "*",
])
def test_other_storage_classes_are_invalid(storage_class: str) -> None:
    with pytest.raises(e.InvalidStorageClass) as info:
        new_object_from_headers(CIMultiDict({"x-amz-storage-class": storage_class}))
    assert (info.value.status, info.value.code) == (400, "InvalidStorageClass")


@pytest.mark.parametrize("checksum_type", ["FULL_OBJECT", "COMPOSITE", "full_object", "junk", ""])
def test_request_checksum_type_is_ignored(checksum_type: str) -> None:
    """x-amz-checksum-type on a PUT (or CreateMultipartUpload) is not read: no
    error, and the object is the same as without it."""
    h = CIMultiDict({"x-amz-meta-a": "1", "x-amz-checksum-type": checksum_type})
    assert new_object_from_headers(h) == new_object_from_headers(CIMultiDict({"x-amz-meta-a": "1"}))


# -- tags ------------------------------------------------------------------------------


def test_parse_tagging_header() -> None:
    assert parse_tagging_header("a=1&b=&c%20d=e%2Ff") == {"a": "1", "b": "", "c d": "e/f"}
    assert parse_tagging_header("a") == {"a": ""}
    for bad in ("a=1&a=2", "%ff=1", "k=%ff", "aws:x=1", "a<b=1", "=v"):
        with pytest.raises(e.InvalidTag):
            parse_tagging_header(bad)
    with pytest.raises(e.InvalidTag):
        parse_tagging_header(b"k=\xff".decode("utf-8", "surrogateescape"))


def test_validate_tags_limits() -> None:
    assert validate_tags([("k" * 128, "v" * 256)]) == {"k" * 128: "v" * 256}
    assert len(validate_tags([(f"k{i}", "") for i in range(10)])) == 10
    assert validate_tags([("Grüße 数据", "+ - = . _ : / @")]) == {"Grüße 数据": "+ - = . _ : / @"}
    for pairs in ([("k" * 129, "v")], [("k", "v" * 257)], [("", "v")],
                  [(f"k{i}", "") for i in range(11)], [("a", "1"), ("a", "2")],
                  [("k", "semi;colon")], [("aws:k", "v")], [("tab\t", "v")]):
        with pytest.raises(e.InvalidTag):
            validate_tags(pairs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=140), st.text(max_size=270)), max_size=12))
def test_validate_tags_accepts_or_raises_invalid_tag(pairs: list[tuple[str, str]]) -> None:
    try:
        tags = validate_tags(pairs)
    except e.InvalidTag:
        return
    assert len(tags) == len(pairs) <= 10
    assert all(0 < len(k) <= 128 and len(v) <= 256 for k, v in tags.items())


# -- metadata out ------------------------------------------------------------------------


def _version(**kw) -> VersionRecord:
    base = dict(bucket="b", key="k", version_id="0" * 32, hlc=1, origin="0" * 16, size=3,
                etag='"abc"', sha256="00", last_modified_ms=784111777000)
    base.update(kw)
    return VersionRecord(**base)


def test_object_headers() -> None:
    v = _version(content_type="text/plain", headers={"Cache-Control": "no-cache"},
                 user_meta={"a": "1"}, tags={"t": "1", "u": "2"}, checksums={"crc32": "AAAAAA=="})
    h = object_headers(v)
    assert h["Content-Type"] == "text/plain"
    assert h["ETag"] == '"abc"'
    assert h["Last-Modified"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert h["x-amz-version-id"] == "0" * 32
    assert h["Cache-Control"] == "no-cache"
    assert h["x-amz-meta-a"] == "1"
    assert h["x-amz-tagging-count"] == "2"
    assert "x-amz-checksum-crc32" not in h
    assert object_headers(v, checksum_mode=True)["x-amz-checksum-crc32"] == "AAAAAA=="
    assert "x-amz-tagging-count" not in object_headers(_version())


@pytest.mark.parametrize("checksums,expected", [
    ({"crc32": "AAAAAA=="}, "FULL_OBJECT"),  # a PUT's checksum: of the whole object
    ({"sha256": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg="}, "FULL_OBJECT"),  # base64 has no "-"
    ({"crc32c": "AAAAAA==-3"}, "COMPOSITE"),  # a multipart upload's: of its 3 parts' checksums
    ({"sha1": "2jmj7l5rSw0yVb/vlWAYkK/YBwk=-10000"}, "COMPOSITE"),
])
def test_checksum_type_out(checksums: dict[str, str], expected: str) -> None:
    v = _version(checksums=checksums)
    h = object_headers(v, checksum_mode=True)
    assert h["x-amz-checksum-type"] == expected
    [(algo, value)] = checksums.items()
    assert h[f"x-amz-checksum-{algo}"] == value
    # Only when asked for (x-amz-checksum-mode: ENABLED), like the checksum itself.
    assert "x-amz-checksum-type" not in object_headers(v)


def test_no_checksum_no_checksum_type() -> None:
    assert not any(k.startswith("x-amz-checksum") for k in object_headers(_version(), checksum_mode=True))


def test_response_overrides() -> None:
    h = {"Content-Type": "text/plain"}
    apply_response_overrides(h, {"response-content-type": "application/json", "response-expires": "never",
                                 "response-cache-control": "no-store", "other": "x"})
    assert h == {"Content-Type": "application/json", "Expires": "never", "Cache-Control": "no-store"}


def test_url_encode_key() -> None:
    assert url_encode_key("a b/c+d☃") == "a%20b/c%2Bd%E2%98%83"
