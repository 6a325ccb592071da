"""Single-object operations through the S3 edge of a real node: put/get/head with
metadata and digests, ranges, conditional requests, response overrides, versions
and delete markers, DeleteObjects, CopyObject."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from tests.support.s3edge import RawResponse, bytes_signed_request, signed_request

pytestmark = pytest.mark.timeout(180)

BODY = bytes(range(100))  # 100 distinct bytes: every range is recognisable


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def _status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _http_date(dt: datetime) -> str:
    return format_datetime(dt.astimezone(timezone.utc), usegmt=True)


def _get(node, bucket: str, key: str, **headers: str) -> RawResponse:
    return signed_request(node.endpoint, "GET", f"/{bucket}/{quote(key)}", headers=headers)


def _assert_xml_error(r: RawResponse, status: int, code: str) -> None:
    assert r.status == status, (r.status, r.body[:300])
    assert r.error_code == code
    assert r.header("content-type") == "application/xml"


# -- put / get / head: metadata -------------------------------------------------


def test_put_get_head_keep_metadata_and_stored_headers(s3, bucket: str) -> None:
    expires = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    put = s3.put_object(
        Bucket=bucket, Key="doc.txt", Body=b"hello world",
        Metadata={"project": "mesh", "Mixed-Case": "Value With Spaces"},
        ContentType="text/plain; charset=utf-8", ContentEncoding="identity",
        ContentDisposition='attachment; filename="doc.txt"', ContentLanguage="de-CH",
        CacheControl="max-age=3600, public", Expires=expires,
    )
    assert put["ETag"] == f'"{hashlib.md5(b"hello world").hexdigest()}"'
    assert put["VersionId"]
    for resp in (s3.get_object(Bucket=bucket, Key="doc.txt"), s3.head_object(Bucket=bucket, Key="doc.txt")):
        # S3 lower-cases user metadata names.
        assert resp["Metadata"] == {"project": "mesh", "mixed-case": "Value With Spaces"}
        assert resp["ContentType"] == "text/plain; charset=utf-8"
        assert resp["ContentEncoding"] == "identity"
        assert resp["ContentDisposition"] == 'attachment; filename="doc.txt"'
        assert resp["ContentLanguage"] == "de-CH"
        assert resp["CacheControl"] == "max-age=3600, public"
        assert resp["ResponseMetadata"]["HTTPHeaders"]["expires"] == _http_date(expires)
        assert resp["ETag"] == put["ETag"]
        assert resp["VersionId"] == put["VersionId"]
        assert resp["ContentLength"] == 11
        assert resp["AcceptRanges"] == "bytes"
    assert s3.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == b"hello world"


def test_default_content_type_is_binary_octet_stream(node, bucket: str) -> None:
    signed_request(node.endpoint, "PUT", f"/{bucket}/plain", body=b"x")
    r = _get(node, bucket, "plain")
    assert r.status == 200
    assert r.header("content-type") == "binary/octet-stream"


def test_last_modified_is_an_http_date_near_now(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    lm = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    assert abs((datetime.now(timezone.utc) - lm).total_seconds()) < 3600


def test_repeated_user_metadata_headers_are_comma_joined(node, bucket: str) -> None:
    r = bytes_signed_request(node.endpoint, "PUT", f"/{bucket}/rep",
                             [("x-amz-meta-a", b"one"), ("x-amz-meta-a", b"two")], b"x")
    assert r.status == 200
    r = _get(node, bucket, "rep")
    assert r.header("x-amz-meta-a") == "one,two"


def test_utf8_user_metadata_round_trips_byte_exact(node, bucket: str) -> None:
    value = "grüße ☃".encode()
    r = bytes_signed_request(node.endpoint, "PUT", f"/{bucket}/utf8", {"x-amz-meta-a": value}, b"x")
    assert r.status == 200
    got = _get(node, bucket, "utf8")
    assert got.header("x-amz-meta-a").encode("latin-1") == value  # http.client reads headers as latin-1


def test_non_utf8_user_metadata_is_a_clean_400(node, bucket: str) -> None:
    r = bytes_signed_request(node.endpoint, "PUT", f"/{bucket}/bad", {"x-amz-meta-a": b"\xff\xfe"}, b"x")
    _assert_xml_error(r, 400, "InvalidArgument")
    assert _get(node, bucket, "bad").status == 404


def test_metadata_too_large(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="big-meta", Body=b"x", Metadata={"a": "v" * 2100})
    assert _code(exc) == "MetadataTooLarge"
    assert _status(exc) == 400


def test_put_into_missing_bucket(s3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=f"t-{uuid.uuid4().hex[:16]}", Key="k", Body=b"x")
    assert _code(exc) == "NoSuchBucket"


def test_get_missing_key_and_missing_bucket(node, s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope")
    assert _code(exc) == "NoSuchKey"
    assert _status(exc) == 404
    _assert_xml_error(_get(node, f"t-{uuid.uuid4().hex[:16]}", "nope"), 404, "NoSuchBucket")
    head = signed_request(node.endpoint, "HEAD", f"/{bucket}/nope")
    assert head.status == 404
    assert head.body == b""


def test_error_documents_are_well_formed_for_any_key(node, bucket: str) -> None:
    # Control characters cannot appear in XML 1.0 at all; the echoed key must not break the document.
    r = signed_request(node.endpoint, "GET", f"/{bucket}/a%01b%00c")
    _assert_xml_error(r, 404, "NoSuchKey")


def test_streamed_get_carries_request_id_and_server(node, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)
    r = _get(node, bucket, "k")
    assert r.status == 200
    assert r.header("x-amz-request-id")
    assert r.header("server") == "meshd"


# -- Content-MD5 ----------------------------------------------------------------


def test_content_md5_good(s3, bucket: str) -> None:
    data = b"checked bytes"
    put = s3.put_object(Bucket=bucket, Key="md5", Body=data, ContentMD5=_md5_b64(data))
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_content_md5_mismatch_is_bad_digest_and_stores_nothing(node, bucket: str) -> None:
    r = signed_request(node.endpoint, "PUT", f"/{bucket}/md5bad", body=b"actual",
                       headers={"Content-MD5": _md5_b64(b"something else")})
    _assert_xml_error(r, 400, "BadDigest")
    assert _get(node, bucket, "md5bad").status == 404


@pytest.mark.parametrize("value", ["not base64!!", "AAAA", base64.b64encode(b"x" * 17).decode(), ""])
def test_content_md5_malformed_is_invalid_digest(node, bucket: str, value: str) -> None:
    r = signed_request(node.endpoint, "PUT", f"/{bucket}/md5malformed", body=b"actual",
                       headers={"Content-MD5": value})
    _assert_xml_error(r, 400, "InvalidDigest")


# -- zero-byte objects ------------------------------------------------------------


def test_zero_byte_object(node, s3, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["ContentLength"] == 0
    assert got["Body"].read() == b""
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0
    raw = _get(node, bucket, "empty")
    assert raw.status == 200
    assert raw.header("content-length") == "0"
    # No byte of an empty object can be addressed.
    r = _get(node, bucket, "empty", Range="bytes=0-")
    _assert_xml_error(r, 416, "InvalidRange")
    assert r.header("content-range") == "bytes */0"


# -- ranges -----------------------------------------------------------------------


@pytest.fixture
def hundred(s3, bucket: str) -> str:
    s3.put_object(Bucket=bucket, Key="hundred", Body=BODY)
    return bucket


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-9", 0, 9),
    ("bytes=10-10", 10, 10),
    ("bytes=5-", 5, 99),              # open
    ("bytes=-5", 95, 99),             # suffix
    ("bytes=95-200", 95, 99),         # end beyond the object: clipped
    ("bytes=-500", 0, 99),            # suffix longer than the object: all of it
    ("bytes=99-99", 99, 99),
    ("bytes=0-99999999999999999999999999999999999999", 0, 99),
])
def test_satisfiable_ranges(node, hundred: str, header: str, start: int, end: int) -> None:
    r = _get(node, hundred, "hundred", Range=header)
    assert r.status == 206
    assert r.body == BODY[start:end + 1]
    assert r.header("content-range") == f"bytes {start}-{end}/100"
    assert r.header("content-length") == str(end - start + 1)
    head = signed_request(node.endpoint, "HEAD", f"/{hundred}/hundred", headers={"Range": header})
    assert head.status == 206
    assert head.header("content-range") == f"bytes {start}-{end}/100"
    assert head.header("content-length") == str(end - start + 1)


def test_boto3_range(s3, hundred: str) -> None:
    got = s3.get_object(Bucket=hundred, Key="hundred", Range="bytes=10-19")
    assert got["Body"].read() == BODY[10:20]
    assert got["ContentRange"] == "bytes 10-19/100"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=5000-", "bytes=-0",
                                    "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable_ranges_are_416(node, hundred: str, header: str) -> None:
    r = _get(node, hundred, "hundred", Range=header)
    _assert_xml_error(r, 416, "InvalidRange")
    assert r.header("content-range") == "bytes */100"


@pytest.mark.parametrize("header", [
    "bytes=abc", "items=0-5", "bytes=5-2", "bytes=0-1,3-4", "bytes=", "bytes=-", "bytes 0-5", "0-5",
    "bytes=--5", "bytes=1-2-3", "bytes=+1-2", "bytes=0x1-2",
])
def test_invalid_range_syntax_returns_the_whole_object(node, hundred: str, header: str) -> None:
    r = _get(node, hundred, "hundred", Range=header)
    assert r.status == 200
    assert r.body == BODY
    assert r.header("content-range") is None


def test_non_ascii_digits_in_range_are_not_numbers(node, hundred: str) -> None:
    r = bytes_signed_request(node.endpoint, "GET", f"/{hundred}/hundred", {"range": "bytes=٣-".encode()})
    assert r.status == 200
    assert r.body == BODY


def test_very_long_suffix_range_is_the_whole_object(node, hundred: str) -> None:
    r = _get(node, hundred, "hundred", Range="bytes=-" + "9" * 5000)
    assert r.status == 206
    assert r.body == BODY


# -- conditional requests -------------------------------------------------------


@pytest.fixture
def cond(s3, bucket: str) -> tuple[str, str, datetime]:
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    lm = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    return bucket, put["ETag"], lm


def _cond_status(node, bucket: str, method: str = "GET", **headers: str) -> RawResponse:
    return signed_request(node.endpoint, method, f"/{bucket}/c", headers=headers)


PAST = _http_date(datetime(2001, 1, 1, tzinfo=timezone.utc))
FUTURE = _http_date(datetime.now(timezone.utc) + timedelta(days=365))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_match(node, cond, method: str) -> None:
    bucket, etag, _ = cond
    assert _cond_status(node, bucket, method, **{"If-Match": etag}).status == 200
    assert _cond_status(node, bucket, method, **{"If-Match": etag.strip('"')}).status == 200
    assert _cond_status(node, bucket, method, **{"If-Match": "*"}).status == 200
    assert _cond_status(node, bucket, method, **{"If-Match": f'"abc", {etag}'}).status == 200
    r = _cond_status(node, bucket, method, **{"If-Match": '"0123456789abcdef0123456789abcdef"'})
    assert r.status == 412
    if method == "GET":
        assert r.error_code == "PreconditionFailed"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match(node, cond, method: str) -> None:
    bucket, etag, _ = cond
    r = _cond_status(node, bucket, method, **{"If-None-Match": etag})
    assert r.status == 304
    assert r.body == b""
    assert r.header("etag") == etag
    assert _cond_status(node, bucket, method, **{"If-None-Match": "*"}).status == 304
    assert _cond_status(node, bucket, method, **{"If-None-Match": '"other"'}).status == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_modified_since(node, cond, method: str) -> None:
    bucket, _, lm = cond
    assert _cond_status(node, bucket, method, **{"If-Modified-Since": PAST}).status == 200
    assert _cond_status(node, bucket, method, **{"If-Modified-Since": FUTURE}).status == 304
    # Exactly the Last-Modified second: not modified since then.
    assert _cond_status(node, bucket, method, **{"If-Modified-Since": _http_date(lm)}).status == 304
    # An unparseable date is ignored.
    assert _cond_status(node, bucket, method, **{"If-Modified-Since": "yesterday"}).status == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_unmodified_since(node, cond, method: str) -> None:
    bucket, _, lm = cond
    assert _cond_status(node, bucket, method, **{"If-Unmodified-Since": FUTURE}).status == 200
    assert _cond_status(node, bucket, method, **{"If-Unmodified-Since": _http_date(lm)}).status == 200
    assert _cond_status(node, bucket, method, **{"If-Unmodified-Since": PAST}).status == 412
    assert _cond_status(node, bucket, method, **{"If-Unmodified-Since": "garbage"}).status == 200


def test_if_match_true_wins_over_if_unmodified_since_false(node, cond) -> None:
    bucket, etag, _ = cond
    r = _cond_status(node, bucket, **{"If-Match": etag, "If-Unmodified-Since": PAST})
    assert r.status == 200
    assert r.body == b"conditional"


def test_if_none_match_false_wins_over_if_modified_since_true(node, cond) -> None:
    bucket, etag, _ = cond
    assert _cond_status(node, bucket, **{"If-None-Match": etag, "If-Modified-Since": PAST}).status == 304


def test_if_match_false_is_412_even_with_if_none_match(node, cond) -> None:
    bucket, etag, _ = cond
    assert _cond_status(node, bucket, **{"If-Match": '"nope"', "If-None-Match": etag}).status == 412


def test_conditions_with_boto3(s3, cond) -> None:
    bucket, etag, _ = cond
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"nope"')
    assert _code(exc) == "PreconditionFailed"
    assert _status(exc) == 412
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert _status(exc) == 304


def test_conditions_with_range(node, cond) -> None:
    bucket, etag, _ = cond
    r = _cond_status(node, bucket, **{"If-Match": etag, "Range": "bytes=0-3"})
    assert r.status == 206
    assert r.body == b"cond"


# -- the <Condition> of a 412 -------------------------------------------------------


def _condition(r: RawResponse) -> str | None:
    """The <Condition> element of an S3 error document: the header that did not hold."""
    import xml.etree.ElementTree as ET

    return ET.fromstring(r.body).findtext("Condition")


@pytest.mark.parametrize("headers,condition", [
    (lambda etag: {"If-Match": '"nope"'}, "If-Match"),
    (lambda etag: {"If-Unmodified-Since": PAST}, "If-Unmodified-Since"),
    (lambda etag: {"If-Match": '"nope"', "If-None-Match": etag}, "If-Match"),
    (lambda etag: {"If-Match": '"nope"', "If-Unmodified-Since": FUTURE}, "If-Match"),
    (lambda etag: {"If-Unmodified-Since": PAST, "If-Modified-Since": FUTURE}, "If-Unmodified-Since"),
], ids=["if-match", "if-unmodified-since", "if-match-before-if-none-match", "if-match-wins",
        "if-unmodified-since-before-if-modified-since"])
def test_412_names_the_failed_condition_on_get(node, cond, headers, condition: str) -> None:
    bucket, etag, _ = cond
    r = _cond_status(node, bucket, **headers(etag))
    _assert_xml_error(r, 412, "PreconditionFailed")
    assert _condition(r) == condition


@pytest.mark.parametrize("headers,condition", [
    (lambda etag: {"x-amz-copy-source-if-match": '"nope"'}, "x-amz-copy-source-If-Match"),
    (lambda etag: {"x-amz-copy-source-if-none-match": etag}, "x-amz-copy-source-If-None-Match"),
    (lambda etag: {"x-amz-copy-source-if-modified-since": FUTURE}, "x-amz-copy-source-If-Modified-Since"),
    (lambda etag: {"x-amz-copy-source-if-unmodified-since": PAST}, "x-amz-copy-source-If-Unmodified-Since"),
    # With both: the ETag condition is the one named.
    (lambda etag: {"x-amz-copy-source-if-none-match": etag, "x-amz-copy-source-if-modified-since": FUTURE},
     "x-amz-copy-source-If-None-Match"),
    (lambda etag: {"x-amz-copy-source-if-match": '"nope"', "x-amz-copy-source-if-unmodified-since": PAST},
     "x-amz-copy-source-If-Match"),
], ids=["if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "none-match-and-modified",
        "match-and-unmodified"])
def test_412_names_the_failed_copy_source_condition(node, s3, source: dict, headers, condition: str) -> None:
    """As S3 does: the copy-source header's name, not the plain If-* one."""
    b = source["bucket"]
    r = _copy(node, b, f"/{b}/src", **headers(source["etag"]))
    _assert_xml_error(r, 412, "PreconditionFailed")
    assert _condition(r) == condition
    # UploadPartCopy checks the same headers the same way.
    upload = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    try:
        r = signed_request(node.endpoint, "PUT", f"/{b}/mp", query=f"partNumber=1&uploadId={upload}",
                           headers={"x-amz-copy-source": f"/{b}/src", **headers(source["etag"])})
        _assert_xml_error(r, 412, "PreconditionFailed")
        assert _condition(r) == condition
    finally:
        s3.abort_multipart_upload(Bucket=b, Key="mp", UploadId=upload)


# -- response-* overrides -----------------------------------------------------------


def test_response_overrides(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ContentType="text/plain", CacheControl="no-cache")
    got = s3.get_object(
        Bucket=bucket, Key="o",
        ResponseContentType="application/json", ResponseContentLanguage="fr",
        ResponseExpires=datetime(2030, 1, 1, tzinfo=timezone.utc), ResponseCacheControl="max-age=5",
        ResponseContentDisposition="inline; filename=x.json", ResponseContentEncoding="identity",
    )
    assert got["ContentType"] == "application/json"
    assert got["ContentLanguage"] == "fr"
    assert got["CacheControl"] == "max-age=5"
    assert got["ContentDisposition"] == "inline; filename=x.json"
    assert got["ContentEncoding"] == "identity"
    assert got["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Tue, 01 Jan 2030 00:00:00 GMT"
    # The stored headers are unchanged.
    head = s3.head_object(Bucket=bucket, Key="o")
    assert head["ContentType"] == "text/plain"
    assert head["CacheControl"] == "no-cache"


# -- versions and delete markers ------------------------------------------------


def test_every_put_is_a_new_version(s3, bucket: str) -> None:
    ids = [s3.put_object(Bucket=bucket, Key="v", Body=f"body {i}".encode())["VersionId"] for i in range(3)]
    assert len(set(ids)) == 3
    for i, vid in enumerate(ids):
        got = s3.get_object(Bucket=bucket, Key="v", VersionId=vid)
        assert got["Body"].read() == f"body {i}".encode()
        assert got["VersionId"] == vid
        assert s3.head_object(Bucket=bucket, Key="v", VersionId=vid)["ContentLength"] == len(f"body {i}")
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"body 2"
    listed = s3.list_object_versions(Bucket=bucket, Prefix="v")["Versions"]
    assert {v["VersionId"] for v in listed} == set(ids)


def test_delete_version_permanently(s3, bucket: str) -> None:
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"two")["VersionId"]
    resp = s3.delete_object(Bucket=bucket, Key="v", VersionId=v2)
    assert resp["VersionId"] == v2
    assert not resp.get("DeleteMarker")
    assert s3.get_object(Bucket=bucket, Key="v")["Body"].read() == b"one"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="v", VersionId=v2)
    assert _code(exc) == "NoSuchVersion"
    assert _status(exc) == 404
    s3.delete_object(Bucket=bucket, Key="v", VersionId=v1)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="v")
    assert _code(exc) == "NoSuchKey"


def test_delete_marker_lifecycle(node, s3, bucket: str) -> None:
    v1 = s3.put_object(Bucket=bucket, Key="dm", Body=b"alive")["VersionId"]
    raw = signed_request(node.endpoint, "DELETE", f"/{bucket}/dm")
    assert raw.status == 204
    assert raw.header("x-amz-delete-marker") == "true"
    marker = raw.header("x-amz-version-id")
    assert marker and marker != v1

    got = _get(node, bucket, "dm")
    _assert_xml_error(got, 404, "NoSuchKey")
    assert got.header("x-amz-delete-marker") == "true"
    assert got.header("x-amz-version-id") == marker
    head = signed_request(node.endpoint, "HEAD", f"/{bucket}/dm")
    assert head.status == 404
    assert head.header("x-amz-delete-marker") == "true"

    # Addressing the delete marker itself: 405 MethodNotAllowed.
    by_id = signed_request(node.endpoint, "GET", f"/{bucket}/dm", query=f"versionId={marker}")
    _assert_xml_error(by_id, 405, "MethodNotAllowed")
    assert by_id.header("x-amz-delete-marker") == "true"
    head_by_id = signed_request(node.endpoint, "HEAD", f"/{bucket}/dm", query=f"versionId={marker}")
    assert head_by_id.status == 405
    # The older version is still readable by id.
    assert s3.get_object(Bucket=bucket, Key="dm", VersionId=v1)["Body"].read() == b"alive"

    versions = s3.list_object_versions(Bucket=bucket, Prefix="dm")
    assert [m["VersionId"] for m in versions["DeleteMarkers"]] == [marker]
    assert versions["DeleteMarkers"][0]["IsLatest"] is True

    # Deleting the delete marker restores the object.
    undo = signed_request(node.endpoint, "DELETE", f"/{bucket}/dm", query=f"versionId={marker}")
    assert undo.status == 204
    assert undo.header("x-amz-delete-marker") == "true"
    assert undo.header("x-amz-version-id") == marker
    assert s3.get_object(Bucket=bucket, Key="dm")["Body"].read() == b"alive"


def test_delete_of_missing_key_still_creates_a_marker(s3, bucket: str) -> None:
    resp = s3.delete_object(Bucket=bucket, Key="never-existed")
    assert resp["DeleteMarker"] is True
    assert resp["VersionId"]
    markers = s3.list_object_versions(Bucket=bucket)["DeleteMarkers"]
    assert [m["Key"] for m in markers] == ["never-existed"]


def test_delete_in_missing_bucket(s3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=f"t-{uuid.uuid4().hex[:16]}", Key="k")
    assert _code(exc) == "NoSuchBucket"


def test_unknown_well_formed_version_id_is_no_such_version(node, s3, bucket: str) -> None:
    vid = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
    unknown = ("0" * 16) + vid[16:]
    r = signed_request(node.endpoint, "GET", f"/{bucket}/k", query=f"versionId={unknown}")
    _assert_xml_error(r, 404, "NoSuchVersion")
    head = signed_request(node.endpoint, "HEAD", f"/{bucket}/k", query=f"versionId={unknown}")
    assert head.status == 404
    # Deleting a version that does not exist succeeds, as in S3, and changes nothing.
    d = signed_request(node.endpoint, "DELETE", f"/{bucket}/k", query=f"versionId={unknown}")
    assert d.status == 204
    assert s3.get_object(Bucket=bucket, Key="k")["VersionId"] == vid


@pytest.mark.parametrize("vid", [
    "garbage", "x" * 3000, "..%2F..%2Fetc", "%E2%98%83", "%00", "0" * 16, "ABCDEF0123456789" * 2,
    "0123456789abcdef0123456789abcdef%20",
])
@pytest.mark.parametrize("method,extra", [
    ("GET", ""), ("HEAD", ""), ("DELETE", ""), ("GET", "tagging&"), ("DELETE", "tagging&"),
])
def test_malformed_version_ids_are_clean_errors(node, s3, bucket: str, vid: str, method: str, extra: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = signed_request(node.endpoint, method, f"/{bucket}/k", query=f"{extra}versionId={vid}")
    assert r.status in (400, 404), (r.status, r.body[:300])
    if method != "HEAD":
        assert r.error_code in ("InvalidArgument", "NoSuchVersion")
    # Nothing changed.
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


# -- DeleteObjects ----------------------------------------------------------------


def test_delete_objects_verbose(s3, bucket: str) -> None:
    for k in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "missing"}]})
    deleted = {d["Key"]: d for d in resp["Deleted"]}
    assert set(deleted) == {"a", "b", "missing"}
    for d in deleted.values():
        assert d["DeleteMarker"] is True
        assert d["DeleteMarkerVersionId"]
    assert "Errors" not in resp
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_delete_objects_quiet(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}], "Quiet": True})
    assert resp.get("Deleted", []) == []
    assert resp.get("Errors", []) == []
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="a")


def test_delete_objects_with_versions(s3, bucket: str) -> None:
    v1 = s3.put_object(Bucket=bucket, Key="a", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="a", Body=b"2")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="b")["VersionId"]
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "VersionId": v1}, {"Key": "b", "VersionId": marker},
    ]})
    deleted = {d["Key"]: d for d in resp["Deleted"]}
    assert deleted["a"]["VersionId"] == v1
    assert not deleted["a"].get("DeleteMarker")
    assert deleted["b"]["VersionId"] == marker
    assert deleted["b"]["DeleteMarker"] is True
    assert deleted["b"]["DeleteMarkerVersionId"] == marker
    listed = s3.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in listed["Versions"]] == [v2]
    assert "DeleteMarkers" not in listed


def test_delete_objects_reports_bad_version_ids_per_key(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"1")
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "VersionId": "not-a-version"}, {"Key": "z"},
    ]})
    assert [d["Key"] for d in resp["Deleted"]] == ["z"]
    assert [(err["Key"], err["Code"]) for err in resp["Errors"]] == [("a", "InvalidArgument")]
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"1"


def _delete_doc(keys: list[str], quiet: bool = False) -> bytes:
    objs = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    return f"<Delete><Quiet>{str(quiet).lower()}</Quiet>{objs}</Delete>".encode()


def _post_delete(node, bucket: str, body: bytes) -> RawResponse:
    return signed_request(node.endpoint, "POST", f"/{bucket}", query="delete=", body=body,
                          headers={"Content-MD5": _md5_b64(body)})


def test_delete_objects_1000_keys_ok_1001_malformed(node, s3, bucket: str) -> None:
    ok = _post_delete(node, bucket, _delete_doc([f"k{i}" for i in range(1000)], quiet=True))
    assert ok.status == 200, ok.body[:300]
    too_many = _post_delete(node, bucket, _delete_doc([f"k{i}" for i in range(1001)]))
    _assert_xml_error(too_many, 400, "MalformedXML")


@pytest.mark.parametrize("body", [
    b"<Delete><Object><Key>a</Key></Object>",          # truncated
    b"not xml at all",
    b"<Remove><Object><Key>a</Key></Object></Remove>",  # wrong root
    b"<Delete></Delete>",                              # no objects
    b"<Delete><Object></Object></Delete>",              # object without a key
    b"<Delete><Object><Key>a</Key></Object><Object><VersionId>x</VersionId></Object></Delete>",
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "x">]><Delete><Object><Key>&e;</Key></Object></Delete>',
])
def test_delete_objects_malformed_xml(node, s3, bucket: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    r = _post_delete(node, bucket, body)
    _assert_xml_error(r, 400, "MalformedXML")
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"x"


def test_delete_objects_keeps_key_whitespace_exactly(node, s3, bucket: str) -> None:
    for k in (" lead", "trail ", "lead", "trail"):
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
    <Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
      <Object>
        <Key> lead</Key>
      </Object>
      <Object><Key>trail </Key></Object>
    </Delete>"""
    r = _post_delete(node, bucket, body)
    assert r.status == 200, r.body[:300]
    remaining = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert remaining == ["lead", "trail"]


def test_delete_objects_without_content_md5(node, bucket: str) -> None:
    r = signed_request(node.endpoint, "POST", f"/{bucket}", query="delete=", body=_delete_doc(["a"]))
    _assert_xml_error(r, 400, "InvalidRequest")


def test_delete_objects_bad_content_md5(node, bucket: str) -> None:
    body = _delete_doc(["a"])
    r = signed_request(node.endpoint, "POST", f"/{bucket}", query="delete=", body=body,
                       headers={"Content-MD5": _md5_b64(b"other")})
    _assert_xml_error(r, 400, "BadDigest")


def test_delete_objects_missing_bucket(s3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=f"t-{uuid.uuid4().hex[:16]}", Delete={"Objects": [{"Key": "a"}]})
    assert _code(exc) == "NoSuchBucket"


# -- CopyObject ---------------------------------------------------------------------


@pytest.fixture
def source(s3, bucket: str) -> dict:
    put = s3.put_object(Bucket=bucket, Key="src", Body=b"source bytes", ContentType="text/x-src",
                        Metadata={"origin": "lab"}, CacheControl="no-store", Tagging="team=a&level=1")
    return {"bucket": bucket, "key": "src", "etag": put["ETag"], "version": put["VersionId"]}


def test_copy_with_metadata_copy(s3, source: dict) -> None:
    b = source["bucket"]
    resp = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"})
    # A single-part source is referenced, not re-read: same bytes, same ETag.
    assert resp["CopyObjectResult"]["ETag"] == source["etag"]
    assert resp["CopySourceVersionId"] == source["version"]
    assert resp["VersionId"] and resp["VersionId"] != source["version"]
    got = s3.get_object(Bucket=b, Key="dst")
    assert got["Body"].read() == b"source bytes"
    assert got["ContentType"] == "text/x-src"
    assert got["Metadata"] == {"origin": "lab"}
    assert got["CacheControl"] == "no-store"
    assert got["ETag"] == source["etag"]
    tags = s3.get_object_tagging(Bucket=b, Key="dst")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("level", "1"), ("team", "a")]


def test_copy_with_metadata_replace(s3, source: dict) -> None:
    b = source["bucket"]
    s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"}, MetadataDirective="REPLACE",
                   ContentType="application/x-new", Metadata={"fresh": "yes"})
    head = s3.head_object(Bucket=b, Key="dst")
    assert head["ContentType"] == "application/x-new"
    assert head["Metadata"] == {"fresh": "yes"}
    assert "CacheControl" not in head
    # Tags follow the tagging directive (default COPY), not the metadata directive.
    tags = s3.get_object_tagging(Bucket=b, Key="dst")["TagSet"]
    assert sorted(t["Key"] for t in tags) == ["level", "team"]


def test_copy_with_tagging_replace(s3, source: dict) -> None:
    b = source["bucket"]
    s3.copy_object(Bucket=b, Key="d1", CopySource={"Bucket": b, "Key": "src"},
                   TaggingDirective="REPLACE", Tagging="new=tag")
    assert s3.get_object_tagging(Bucket=b, Key="d1")["TagSet"] == [{"Key": "new", "Value": "tag"}]
    assert s3.head_object(Bucket=b, Key="d1")["Metadata"] == {"origin": "lab"}
    s3.copy_object(Bucket=b, Key="d2", CopySource={"Bucket": b, "Key": "src"}, TaggingDirective="REPLACE")
    assert s3.get_object_tagging(Bucket=b, Key="d2")["TagSet"] == []


def test_copy_bad_directive(node, source: dict) -> None:
    b = source["bucket"]
    r = signed_request(node.endpoint, "PUT", f"/{b}/dst",
                       headers={"x-amz-copy-source": f"/{b}/src", "x-amz-metadata-directive": "MOVE"})
    _assert_xml_error(r, 400, "InvalidArgument")


def test_copy_of_a_specific_source_version(s3, source: dict) -> None:
    b = source["bucket"]
    s3.put_object(Bucket=b, Key="src", Body=b"newer bytes")
    resp = s3.copy_object(Bucket=b, Key="dst",
                          CopySource={"Bucket": b, "Key": "src", "VersionId": source["version"]})
    assert resp["CopySourceVersionId"] == source["version"]
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"source bytes"


def test_copy_onto_itself(s3, source: dict) -> None:
    b = source["bucket"]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=b, Key="src", CopySource={"Bucket": b, "Key": "src"})
    assert _code(exc) == "InvalidRequest"
    assert _status(exc) == 400
    # With REPLACE it is allowed: a new version with new metadata.
    r = s3.copy_object(Bucket=b, Key="src", CopySource={"Bucket": b, "Key": "src"},
                       MetadataDirective="REPLACE", Metadata={"changed": "1"})
    assert r["VersionId"] != source["version"]
    assert s3.head_object(Bucket=b, Key="src")["Metadata"] == {"changed": "1"}
    # Copying an older version onto its own key restores it.
    s3.put_object(Bucket=b, Key="src", Body=b"overwritten")
    s3.copy_object(Bucket=b, Key="src", CopySource={"Bucket": b, "Key": "src", "VersionId": source["version"]})
    assert s3.get_object(Bucket=b, Key="src")["Body"].read() == b"source bytes"


def _copy(node, bucket: str, src: str, dst: str = "dst", **headers: str) -> RawResponse:
    return signed_request(node.endpoint, "PUT", f"/{bucket}/{dst}",
                          headers={"x-amz-copy-source": src, **headers})


@pytest.mark.parametrize("headers_fn,status", [
    (lambda etag: {"x-amz-copy-source-if-match": etag}, 200),
    (lambda etag: {"x-amz-copy-source-if-match": '"nope"'}, 412),
    (lambda etag: {"x-amz-copy-source-if-none-match": etag}, 412),
    (lambda etag: {"x-amz-copy-source-if-none-match": '"nope"'}, 200),
    (lambda etag: {"x-amz-copy-source-if-modified-since": PAST}, 200),
    (lambda etag: {"x-amz-copy-source-if-modified-since": FUTURE}, 412),
    (lambda etag: {"x-amz-copy-source-if-unmodified-since": FUTURE}, 200),
    (lambda etag: {"x-amz-copy-source-if-unmodified-since": PAST}, 412),
    # If-Match true wins over If-Unmodified-Since false.
    (lambda etag: {"x-amz-copy-source-if-match": etag, "x-amz-copy-source-if-unmodified-since": PAST}, 200),
    # If-None-Match false with If-Modified-Since true: 412.
    (lambda etag: {"x-amz-copy-source-if-none-match": etag, "x-amz-copy-source-if-modified-since": PAST}, 412),
])
def test_copy_conditions(node, s3, source: dict, headers_fn, status: int) -> None:
    b = source["bucket"]
    r = _copy(node, b, f"/{b}/src", **headers_fn(source["etag"]))
    assert r.status == status, r.body[:300]
    if status == 412:
        assert r.error_code == "PreconditionFailed"
        with pytest.raises(ClientError):
            s3.head_object(Bucket=b, Key="dst")
    else:
        assert b"<CopyObjectResult" in r.body
        assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"source bytes"


def test_copy_conditions_with_boto3(s3, source: dict) -> None:
    b = source["bucket"]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"}, CopySourceIfMatch='"nope"')
    assert _code(exc) == "PreconditionFailed"
    assert _status(exc) == 412


def test_copy_from_missing_source(node, s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "nope"})
    assert _code(exc) == "NoSuchKey"
    assert _status(exc) == 404
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": f"t-{uuid.uuid4().hex[:16]}", "Key": "k"})
    assert _code(exc) == "NoSuchBucket"
    r = _copy(node, bucket, "no-key-at-all")
    _assert_xml_error(r, 400, "InvalidArgument")


def test_copy_from_deleted_source(node, s3, source: dict) -> None:
    b = source["bucket"]
    marker = s3.delete_object(Bucket=b, Key="src")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"})
    assert _code(exc) == "NoSuchKey"
    r = _copy(node, b, f"/{b}/src?versionId={marker}")
    _assert_xml_error(r, 400, "InvalidRequest")
    # The version under the marker can still be copied by id.
    s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src", "VersionId": source["version"]})
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"source bytes"


def test_copy_into_missing_bucket(s3, source: dict) -> None:
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=f"t-{uuid.uuid4().hex[:16]}", Key="dst",
                       CopySource={"Bucket": source["bucket"], "Key": "src"})
    assert _code(exc) == "NoSuchBucket"


UNICODE_KEY = "dir/ünïcødé ☃ + & ? # %.txt"


def test_copy_source_unicode_key_with_boto3(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=UNICODE_KEY, Body=b"unicode")
    s3.copy_object(Bucket=bucket, Key="copy of " + UNICODE_KEY, CopySource={"Bucket": bucket, "Key": UNICODE_KEY})
    assert s3.get_object(Bucket=bucket, Key="copy of " + UNICODE_KEY)["Body"].read() == b"unicode"


@pytest.mark.parametrize("leading_slash", [True, False])
def test_copy_source_url_encoded_by_hand(node, s3, bucket: str, leading_slash: bool) -> None:
    s3.put_object(Bucket=bucket, Key=UNICODE_KEY, Body=b"unicode")
    src = ("/" if leading_slash else "") + f"{bucket}/{quote(UNICODE_KEY, safe='/')}"
    r = _copy(node, bucket, src, dst=quote("dst ☃"))
    assert r.status == 200, r.body[:300]
    assert s3.get_object(Bucket=bucket, Key="dst ☃")["Body"].read() == b"unicode"
    # "+" in a copy source is a literal plus, not a space.
    s3.put_object(Bucket=bucket, Key="a+b", Body=b"plus")
    assert _copy(node, bucket, f"/{bucket}/a+b", dst="p").status == 200
    assert s3.get_object(Bucket=bucket, Key="p")["Body"].read() == b"plus"


def test_copy_keeps_checksums_of_the_source(s3, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="ck", Body=b"checksummed", ChecksumAlgorithm="SHA256")
    s3.copy_object(Bucket=bucket, Key="ck2", CopySource={"Bucket": bucket, "Key": "ck"})
    head = s3.head_object(Bucket=bucket, Key="ck2", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == put["ChecksumSHA256"]
    assert head["ETag"] == put["ETag"]


@pytest.mark.parametrize("source_algo", ["SHA256", "CRC32"])
def test_copy_with_requested_checksum(s3, bucket: str, source_algo: str) -> None:
    data = b"checksum me on copy"
    put = s3.put_object(Bucket=bucket, Key="ck", Body=data, ChecksumAlgorithm=source_algo)
    resp = s3.copy_object(Bucket=bucket, Key="ck2", CopySource={"Bucket": bucket, "Key": "ck"},
                          ChecksumAlgorithm="SHA256")
    assert resp["CopyObjectResult"]["ETag"] == put["ETag"]
    expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert resp["CopyObjectResult"]["ChecksumSHA256"] == expected
    head = s3.head_object(Bucket=bucket, Key="ck2", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected
    assert s3.get_object(Bucket=bucket, Key="ck2")["Body"].read() == data


def test_copy_of_copy_survives_deleting_the_original(s3, source: dict) -> None:
    b = source["bucket"]
    s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"})
    s3.delete_object(Bucket=b, Key="src", VersionId=source["version"])
    # The shared blob is still referenced by the copy.
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"source bytes"


def test_copy_across_buckets_ignores_request_metadata_under_copy(s3, source: dict) -> None:
    other = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=other)
    resp = s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": source["bucket"], "Key": "src"},
                          Metadata={"ignored": "yes"}, ContentType="text/ignored")
    assert resp["CopyObjectResult"]["ETag"] == source["etag"]
    head = s3.head_object(Bucket=other, Key="dst")
    assert head["Metadata"] == {"origin": "lab"}
    assert head["ContentType"] == "text/x-src"


# -- keys that look like paths ------------------------------------------------------


@pytest.mark.parametrize("raw,key", [
    ("a/../b", "a/../b"), ("../x", "../x"), ("a//b", "a//b"), ("./c", "./c"), ("d/", "d/"),
    ("%2E%2E/e", "../e"), ("%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "../../etc/passwd"),
])
def test_path_like_keys_are_literal(node, s3, bucket: str, raw: str, key: str) -> None:
    r = signed_request(node.endpoint, "PUT", f"/{bucket}/{raw}", body=key.encode())
    assert r.status == 200, r.body[:300]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()


# -- hostile header and query values ----------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("value", ["a%0D%0ASet-Cookie%3A%20x", "a%00b", "a%0Ab"])
def test_response_override_with_control_characters(node, s3, bucket: str, method: str, value: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = signed_request(node.endpoint, method, f"/{bucket}/k", query=f"response-content-type={value}")
    assert r.status == 400
    assert r.header("set-cookie") is None
    if method == "GET":
        assert r.error_code == "InvalidArgument"


@pytest.mark.parametrize("source", [b"/{b}/k\xff", b"/{b}/k%FF", b"/{b}/k?versionId=\xff", b"/{b}/k?versionId=abc",
                                    b"/{b}/k?other=1", b"/", b""])
def test_copy_source_garbage_is_a_clean_400(node, s3, bucket: str, source: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = bytes_signed_request(node.endpoint, "PUT", f"/{bucket}/dst",
                             {"x-amz-copy-source": source.replace(b"{b}", bucket.encode())})
    _assert_xml_error(r, 400, "InvalidArgument")
