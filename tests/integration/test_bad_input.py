"""Hostile and malformed input against a real node, over raw HTTP.

Every request uses a short socket timeout, so a server that hangs fails the
test. Every error must be an S3 error document (Code, Message, RequestId and a
matching x-amz-request-id header), never a 500 and never aiohttp's plain text.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import string
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.process import MeshdProcess
from tests.support.rawhttp import (
    UNSIGNED,
    Reply,
    assert_s3_error,
    parse_raw,
    raw_exchange,
    read_response,
    request,
    sign_headers,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def ep(node: MeshdProcess) -> str:
    return node.endpoint


@pytest.fixture
def bkt(ep: str) -> str:
    name = f"bad-{uuid.uuid4().hex[:12]}"
    assert request(ep, "PUT", f"/{name}").status == 200
    return name


@pytest.fixture(scope="module")
def strict_node(tmp_path_factory: pytest.TempPathFactory):
    """A node of this module's own with short timeouts and a small XML limit,
    so stalls are answered quickly and fuzzed requests cannot touch other tests' buckets."""
    root = tmp_path_factory.mktemp("strict")
    cfg = root / "meshd.toml"
    cfg.write_text(
        "[s3]\n"
        "body_read_timeout_seconds = 2\n"
        "keepalive_timeout_seconds = 2\n"
        "max_xml_body_bytes = 4096\n"
    )
    proc = MeshdProcess(root / "data", config=cfg).start()
    yield proc
    proc.stop()


def _md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def _head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _raw_error(data: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, body = parse_raw(data)
    assert got == status, data[:400]
    root = ET.fromstring(body)
    assert root.tag == "Error"
    fields = {c.tag: c.text or "" for c in root}
    assert fields["Code"] == code, fields
    assert fields["RequestId"] == headers["x-amz-request-id"]
    assert fields["Message"]
    return fields


def _healthy(ep: str) -> None:
    assert request(ep, "GET", "/").status == 200


# -- malformed XML ---------------------------------------------------------

BAD_XML = [
    b"<not xml",
    b"<a></b>",
    b"\x00\xff\xfe garbage",
    b"<?xml version='1.0'?><Unexpected/>",
    b"<!DOCTYPE x [<!ENTITY e 'boom'>]><Root>&e;</Root>",
    b"<Root>text only</Root><Second/>",
]


def _xml_targets(ep: str, bucket: str) -> list[tuple[str, str, dict[str, str] | None]]:
    """(method, target, headers-or-None-for-content-md5) for each XML-taking operation."""
    upload = request(ep, "POST", f"/{bucket}/mpu?uploads")
    assert upload.status == 200
    upload_id = ET.fromstring(upload.body).findtext("{*}UploadId")
    assert request(ep, "PUT", f"/{bucket}/tagged", body=b"x").status == 200
    return [
        ("POST", f"/{bucket}/mpu?uploadId={upload_id}", {}),
        ("POST", f"/{bucket}?delete", None),
        ("PUT", f"/{bucket}?cors", {}),
        ("PUT", f"/{bucket}/tagged?tagging", {}),
        ("PUT", f"/bad-new-{uuid.uuid4().hex[:10]}", {}),
    ]


@pytest.mark.parametrize("body", BAD_XML, ids=range(len(BAD_XML)))
def test_malformed_xml_bodies_are_malformed_xml(ep: str, bkt: str, body: bytes) -> None:
    for method, target, headers in _xml_targets(ep, bkt):
        hdrs = {"Content-MD5": _md5(body)} if headers is None else headers
        reply = request(ep, method, target, hdrs, body)
        assert_s3_error(reply, 400, "MalformedXML")
    # A CreateBucket with a bad configuration created nothing.
    listing = request(ep, "GET", "/")
    assert b"bad-new-" not in listing.body


def test_wrong_shapes_in_valid_xml(ep: str, bkt: str) -> None:
    upload = request(ep, "POST", f"/{bkt}/mpu?uploads")
    upload_id = ET.fromstring(upload.body).findtext("{*}UploadId")
    target = f"/{bkt}/mpu?uploadId={upload_id}"
    for body in (
        b"<CompleteMultipartUpload/>",
        b"<CompleteMultipartUpload><Part>text</Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part>"
        b"</CompleteMultipartUpload>",
    ):
        assert_s3_error(request(ep, "POST", target, body=body), 400, "MalformedXML")
    # The upload survives bad completion attempts.
    assert request(ep, "GET", target).status == 200
    tagging = b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>"
    assert request(ep, "PUT", f"/{bkt}/t", body=b"1").status == 200
    assert_s3_error(request(ep, "PUT", f"/{bkt}/t?tagging", body=tagging), 400, "MalformedXML")
    delete = b"<Delete><Object><VersionId>1</VersionId></Object></Delete>"
    assert_s3_error(request(ep, "POST", f"/{bkt}?delete", {"Content-MD5": _md5(delete)}, delete),
                    400, "MalformedXML")


def test_oversized_xml_is_rejected_not_read_forever(strict_node: MeshdProcess) -> None:
    ep = strict_node.endpoint
    name = f"big-{uuid.uuid4().hex[:10]}"
    assert request(ep, "PUT", f"/{name}").status == 200
    assert request(ep, "PUT", f"/{name}/k", body=b"x").status == 200
    big = (b"<Tagging><TagSet>" + b"<Tag><Key>a</Key><Value>b</Value></Tag>" * 2000
           + b"</TagSet></Tagging>")
    assert len(big) > 4096
    reply = request(ep, "PUT", f"/{name}/k?tagging", body=big, payload=UNSIGNED)
    assert_s3_error(reply, 400, "MaxMessageLengthExceeded")
    # Without a Content-Length (chunked transfer) the limit still applies while streaming.
    headers = sign_headers(ep, "PUT", f"/{name}/k?tagging", {"Transfer-Encoding": "chunked"},
                           payload=UNSIGNED)
    chunk = big[:3000]
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
    data = raw_exchange(ep, _head("PUT", f"/{name}/k?tagging", headers) + body)
    _raw_error(data, 400, "MaxMessageLengthExceeded")
    _healthy(ep)


# -- oversized and broken request heads --------------------------------------

def test_huge_header_value_gets_s3_error(ep: str) -> None:
    data = raw_exchange(ep, _head("GET", "/", {"Host": "x", "X-Big": "a" * 20480}))
    _raw_error(data, 400, "RequestHeaderSectionTooLarge")
    _healthy(ep)


def test_too_many_headers_gets_s3_error(ep: str) -> None:
    many = {f"X-H{i}": "v" for i in range(300)}
    data = raw_exchange(ep, _head("GET", "/", {"Host": "x", **many}))
    _raw_error(data, 400, "RequestHeaderSectionTooLarge")


def test_huge_request_line_gets_s3_error(ep: str) -> None:
    data = raw_exchange(ep, _head("GET", "/b/" + "k" * 20000, {"Host": "x"}))
    _raw_error(data, 400, "RequestHeaderSectionTooLarge")


@pytest.mark.parametrize("raw", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header Name: v\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
], ids=["tls", "version", "cl-text", "cl-negative", "header-name", "no-host"])
def test_unparseable_requests_get_s3_errors(ep: str, raw: bytes) -> None:
    status, headers, body = parse_raw(raw_exchange(ep, raw))
    assert 400 <= status < 500
    root = ET.fromstring(body)
    assert root.tag == "Error" and root.findtext("Code")
    assert root.findtext("RequestId") == headers["x-amz-request-id"]
    assert b"Traceback" not in body
    _healthy(ep)


@pytest.mark.parametrize("method", ["PATCH", "PROPFIND", "TRACE", "MKCOL", "COPY"])
def test_unknown_methods_are_method_not_allowed(ep: str, bkt: str, method: str) -> None:
    assert request(ep, "PUT", f"/{bkt}/k", body=b"x").status == 200
    for target in (f"/{bkt}/k", f"/{bkt}", "/"):
        assert_s3_error(request(ep, method, target), 405, "MethodNotAllowed")


def test_non_http_method_token_is_an_s3_error(ep: str) -> None:
    data = raw_exchange(ep, b"FROBNICATE / HTTP/1.1\r\nHost: x\r\n\r\n")
    _raw_error(data, 405, "MethodNotAllowed")


def test_odd_request_targets(ep: str) -> None:
    _raw_error(raw_exchange(ep, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 400, "InvalidURI")
    _raw_error(raw_exchange(ep, b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
               405, "MethodNotAllowed")


# -- names, keys, paths --------------------------------------------------------

@pytest.mark.parametrize("name", [
    "ab", "a" * 64, "UPPER", "under_score", "-lead", "trail-", "dots..dots", "192.168.1.1",
    "xn--punycode", "x-s3alias", "sp ace", "é-accent", "dash.-dot", "newline-at-end\n",
])
def test_invalid_bucket_names(ep: str, name: str) -> None:
    reply = request(ep, "PUT", "/" + quote(name))
    assert_s3_error(reply, 400, "InvalidBucketName")
    assert request(ep, "HEAD", "/" + quote(name)).status in (400, 404)


KEYS = [
    "ünïcødé/日本語.txt", "emoji😀", "../escape", "..", ".", "a/../b", "./x", "a/./b", "a//b",
    "//lead", "trail/", "a%2Fb", "with space", "a+b", "q?x=1", "hash#frag", "semi;colon",
    "back\\slash", "pct%", "~tilde", "x" * 1024, "é" * 512, "ctrl\x01key", "cr\rlf\nkey", "tab\tkey",
]


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_odd_keys_round_trip_exactly(node: MeshdProcess, bucket: str, key: str) -> None:
    s3 = node.client()
    body = key.encode() + b"|payload"
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [key]
    # Raw path, encoded the way AWS encodes it: the same object.
    raw = request(node.endpoint, "GET", f"/{bucket}/" + quote(key, safe="/~"))
    assert raw.status == 200 and raw.body == body
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_control_characters_in_listings(ep: str, bkt: str) -> None:
    """As S3 does: character references without encoding-type, %XX with it."""
    assert request(ep, "PUT", f"/{bkt}/a%01b%0Dc", body=b"x").status == 200
    plain = request(ep, "GET", f"/{bkt}?list-type=2")
    assert b"<Key>a&#x1;b&#xD;c</Key>" in plain.body
    encoded = request(ep, "GET", f"/{bkt}?list-type=2&encoding-type=url")
    assert ET.fromstring(encoded.body).findtext("{*}Contents/{*}Key") == "a%01b%0Dc"
    versions = request(ep, "GET", f"/{bkt}?versions&encoding-type=url")
    assert ET.fromstring(versions.body).findtext("{*}Version/{*}Key") == "a%01b%0Dc"


def test_dot_segments_are_not_resolved(ep: str, bkt: str) -> None:
    """`/bucket/a/../b` names key "a/../b", not "b" (S3 does not normalise paths)."""
    assert request(ep, "PUT", f"/{bkt}/a/../b", body=b"dots").status == 200
    assert request(ep, "GET", f"/{bkt}/b").status == 404
    assert request(ep, "GET", f"/{bkt}/a/../b").body == b"dots"
    assert request(ep, "GET", f"/{bkt}/a/%2E%2E/b").body == b"dots"
    assert request(ep, "PUT", f"/{bkt}/%2Fslash", body=b"s").status == 200
    assert request(ep, "GET", f"/{bkt}//slash").body == b"s"


def test_key_length_limit(ep: str, bkt: str) -> None:
    assert request(ep, "PUT", f"/{bkt}/" + "k" * 1024, body=b"ok").status == 200
    for key in ("k" * 1025, "é" * 513):
        assert_s3_error(request(ep, "PUT", f"/{bkt}/" + quote(key), body=b"no"), 400, "KeyTooLongError")
        assert_s3_error(request(ep, "POST", f"/{bkt}/" + quote(key) + "?uploads"), 400, "KeyTooLongError")


@pytest.mark.parametrize("path", ["/b/%zz", "/b/a%2", "/b/%", "/b/%ff%fe", "/b/%c3"])
def test_bad_percent_encoding_is_invalid_uri(ep: str, path: str) -> None:
    for sign in (True, False):
        assert_s3_error(request(ep, "GET", path, sign=sign), 400, "InvalidURI")


def test_bad_query_encoding_is_invalid_uri(ep: str, bkt: str) -> None:
    assert_s3_error(request(ep, "GET", f"/{bkt}?prefix=%ff%fe"), 400, "InvalidURI")


# -- ranges --------------------------------------------------------------------

@pytest.mark.parametrize("header,status,body", [
    ("bytes=0-4", 206, b"01234"),
    ("bytes=5-", 206, b"56789"),
    ("bytes=-3", 206, b"789"),
    ("bytes=0-99999999999999999999999", 206, b"0123456789"),
    ("bytes=-99999999999999999999999", 206, b"0123456789"),
    # Syntactically invalid or multi-range: ignored, the whole object (as S3 does).
    ("bytes=abc", 200, b"0123456789"),
    ("bytes=5-2", 200, b"0123456789"),
    ("bytes=0-1,3-4", 200, b"0123456789"),
    ("items=0-1", 200, b"0123456789"),
    ("bytes=-", 200, b"0123456789"),
    ("bytes=--1", 200, b"0123456789"),
])
def test_range_headers(ep: str, bkt: str, header: str, status: int, body: bytes) -> None:
    assert request(ep, "PUT", f"/{bkt}/r", body=b"0123456789").status == 200
    reply = request(ep, "GET", f"/{bkt}/r", {"Range": header})
    assert (reply.status, reply.body) == (status, body)


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=-0", "bytes=99999999999999999999-"])
def test_unsatisfiable_ranges(ep: str, bkt: str, header: str) -> None:
    assert request(ep, "PUT", f"/{bkt}/r", body=b"0123456789").status == 200
    fields = assert_s3_error(request(ep, "GET", f"/{bkt}/r", {"Range": header}), 416, "InvalidRange")
    assert fields.get("ActualObjectSize") == "10"


# -- sub-resources ---------------------------------------------------------------

@pytest.mark.parametrize("method,sub", [
    ("GET", "policy"), ("PUT", "lifecycle"), ("DELETE", "website"), ("GET", "encryption"),
    ("PUT", "tagging"), ("GET", "object-lock"), ("PUT", "acl"),
])
def test_unsupported_bucket_subresources_are_not_implemented(ep: str, bkt: str, method: str, sub: str) -> None:
    assert_s3_error(request(ep, method, f"/{bkt}?{sub}"), 501, "NotImplemented")
    assert request(ep, "HEAD", f"/{bkt}").status == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST"])
@pytest.mark.parametrize("sub", ["restore", "select&select-type=2", "retention", "legal-hold", "torrent"])
def test_unsupported_object_subresources_never_touch_the_object(
    ep: str, bkt: str, method: str, sub: str
) -> None:
    assert request(ep, "PUT", f"/{bkt}/obj", body=b"keep me").status == 200
    assert_s3_error(request(ep, method, f"/{bkt}/obj?{sub}"), 501, "NotImplemented")
    assert request(ep, "GET", f"/{bkt}/obj").body == b"keep me"


def test_delete_object_acl_does_not_delete_the_object(ep: str, bkt: str) -> None:
    assert request(ep, "PUT", f"/{bkt}/obj", body=b"keep me").status == 200
    assert_s3_error(request(ep, "DELETE", f"/{bkt}/obj?acl"), 501, "NotImplemented")
    assert request(ep, "GET", f"/{bkt}/obj").body == b"keep me"


# -- bodies that end early or never arrive ----------------------------------------

def test_truncated_body_creates_nothing(ep: str, bkt: str) -> None:
    headers = sign_headers(ep, "PUT", f"/{bkt}/trunc", {"Content-Length": "1000"}, payload=UNSIGNED)
    u = urlsplit(ep)
    with socket.create_connection((u.hostname, u.port), timeout=15) as s:
        s.sendall(_head("PUT", f"/{bkt}/trunc", headers) + b"0123456789")
    # The server notices the close; the object never appears.
    assert request(ep, "HEAD", f"/{bkt}/trunc").status == 404
    listing = request(ep, "GET", f"/{bkt}?list-type=2")
    assert b"trunc" not in listing.body
    assert request(ep, "PUT", f"/{bkt}/after", body=b"fine").status == 200
    assert request(ep, "GET", f"/{bkt}/after").body == b"fine"


def test_client_that_stalls_mid_body_gets_request_timeout(strict_node: MeshdProcess) -> None:
    ep = strict_node.endpoint
    name = f"stall-{uuid.uuid4().hex[:10]}"
    assert request(ep, "PUT", f"/{name}").status == 200
    headers = sign_headers(ep, "PUT", f"/{name}/stall", {"Content-Length": "1000"}, payload=UNSIGNED)
    # Socket timeout well above the configured 2 s body timeout, far below "forever".
    data = raw_exchange(ep, _head("PUT", f"/{name}/stall", headers) + b"0123456789", timeout=30)
    _raw_error(data, 400, "RequestTimeout")
    assert request(ep, "HEAD", f"/{name}/stall").status == 404
    assert list((strict_node.data_dir / "store" / "tmp").iterdir()) == []


def test_client_that_stalls_in_headers_is_disconnected(strict_node: MeshdProcess) -> None:
    u = urlsplit(strict_node.endpoint)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        assert read_response(s) == b""  # closed by the server (keepalive_timeout = 2)
    _healthy(strict_node.endpoint)


def test_aws_chunked_body_cut_short_creates_nothing(ep: str, bkt: str) -> None:
    headers = sign_headers(ep, "PUT", f"/{bkt}/chunky", {
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "100",
        "Content-Length": "20",
    }, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    data = raw_exchange(ep, _head("PUT", f"/{bkt}/chunky", headers) + b"64\r\n0123456789abcdef", timeout=15)
    _raw_error(data, 400, "IncompleteBody")
    assert request(ep, "HEAD", f"/{bkt}/chunky").status == 404


def test_aws_chunked_decoded_length_too_long_to_parse_is_incomplete_body(ep: str, bkt: str) -> None:
    """A decoded length of more digits than Python parses (4300) is a 400, not a 500."""
    body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n"
    headers = sign_headers(ep, "PUT", f"/{bkt}/chunky", {
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "9" * 5000,
        "Content-Length": str(len(body)), "x-amz-trailer": "x-amz-checksum-crc32",
    }, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    data = raw_exchange(ep, _head("PUT", f"/{bkt}/chunky", headers) + body, timeout=15)
    _raw_error(data, 400, "IncompleteBody")
    assert request(ep, "HEAD", f"/{bkt}/chunky").status == 404


# -- fuzz ------------------------------------------------------------------------

_SUBRESOURCES = [
    "acl", "cors", "delete", "location", "versioning", "versions", "uploads", "uploadId", "partNumber",
    "tagging", "list-type", "prefix", "delimiter", "max-keys", "marker", "continuation-token",
    "start-after", "encoding-type", "key-marker", "version-id-marker", "versionId", "max-uploads",
    "max-parts", "part-number-marker", "fetch-owner", "response-content-type", "policy", "lifecycle",
    "select", "restore", "x-id", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
    "X-Amz-Expires", "X-Amz-Date",
]
_HEADERS = [
    "Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "Content-MD5",
    "Content-Type", "x-amz-copy-source", "x-amz-copy-source-range", "x-amz-metadata-directive",
    "x-amz-tagging", "x-amz-tagging-directive", "x-amz-meta-a", "x-amz-checksum-crc32",
    "x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm", "x-amz-trailer", "x-amz-storage-class",
    "x-amz-decoded-content-length", "Content-Encoding", "x-amz-checksum-mode", "Origin",
    "Access-Control-Request-Method", "x-amz-date", "Expect", "x-amz-content-sha256",
    "x-amz-bucket-object-lock-enabled", "Expires",
]
_VALUE = st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + "é", max_size=40).map(str.strip)
_SEGMENT = st.one_of(
    st.sampled_from(["", "k", "a/b", "..", "%2F", "x y", "%zz", "😀", "fuzz/../up", "+", "\x01", "a\x1fb", "\r\n"]),
    st.text(max_size=12),
)
_BODY = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    st.sampled_from([
        b"<Delete><Object><Key>k</Key></Object></Delete>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>",
        b"<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod>"
        b"<AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>",
        b"<CreateBucketConfiguration><LocationConstraint>x</LocationConstraint></CreateBucketConfiguration>",
        b"5\r\nhello\r\n0\r\n\r\n",
    ]),
)


def _encode(text: str) -> str:
    """Mostly the way SDKs encode; sometimes raw characters straight through."""
    return quote(text, safe="/~%")


@st.composite
def fuzzed_requests(draw):
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]))
    bucket = draw(st.sampled_from(["fuzz", "fuzz", "fuzz", "nope-bucket", "", "UP", "a"]))
    path = "/" + bucket
    if bucket and draw(st.booleans()):
        path += "/" + _encode(draw(_SEGMENT))
    params = draw(st.lists(st.tuples(
        st.one_of(st.sampled_from(_SUBRESOURCES), st.text(max_size=6)),
        st.one_of(st.just(""), _VALUE, st.sampled_from(["1", "0", "-1", "2", "99999999999", "url"])),
    ), max_size=4))
    query = "&".join(
        quote(k, safe="") + ("=" + quote(v, safe="") if v or draw(st.booleans()) else "") for k, v in params
    )
    headers = dict(draw(st.lists(st.tuples(st.sampled_from(_HEADERS), _VALUE), max_size=4)))
    body = draw(_BODY)
    sign = draw(st.sampled_from([True, True, True, False]))
    return method, path + ("?" + query if query else ""), headers, body, sign


def _check_reply(method: str, reply: Reply) -> None:
    assert reply.status < 500 or reply.status == 501, (reply.status, reply.body[:600])
    assert reply.header("x-amz-request-id")
    if reply.status >= 300 and reply.status != 304 and method != "HEAD":
        assert_s3_error(reply, reply.status)
    elif reply.body.startswith(b"<?xml"):
        # Well-formed, but for S3's references to characters XML 1.0 cannot carry.
        ET.fromstring(re.sub(rb"&#x(?:[0-8BCEF]|1[0-9A-F]|D[89A-F][0-9A-F]{2});", b"", reply.body))


@settings(max_examples=int(os.environ.get("MESHD_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(req=fuzzed_requests())
def test_fuzzed_requests_never_500(strict_node: MeshdProcess, req) -> None:
    ep = strict_node.endpoint
    method, target, headers, body, sign = req
    if sign and "x-amz-date" in {h.lower() for h in headers}:
        headers = {k: v for k, v in headers.items() if k.lower() != "x-amz-date"}
    try:
        reply = request(ep, method, target, headers, body, sign=sign, timeout=20,
                        payload=headers.get("x-amz-content-sha256"))
    except (ValueError, UnicodeEncodeError):  # http.client refused to send it
        assume(False)
        return
    _check_reply(method, reply)


@pytest.fixture(scope="module", autouse=True)
def _fuzz_bucket(strict_node: MeshdProcess):
    assert request(strict_node.endpoint, "PUT", "/fuzz").status in (200, 409)
    yield
    # The node survived whatever the fuzzer sent.
    _healthy(strict_node.endpoint)
