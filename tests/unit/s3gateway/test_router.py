"""s3gateway/router.py: method + Host + path + query -> one Op (after Garage's router tests).

The requests in the table are the sample requests of the Amazon S3 API reference
(docs.aws.amazon.com/AmazonS3/latest/API/API_<Operation>.html), each sent both
virtual-host style (Host: bucket.s3.localhost) and path style (Host: localhost).
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3gateway.errors import (
    InvalidArgument,
    InvalidURI,
    MethodNotAllowed,
    NotImplemented_,
    S3Error,
)
from s3gateway.router import (
    Endpoint,
    Op,
    parse_endpoint,
    parse_part_number,
    parse_query,
    split_path,
)

DOMAINS = ("localhost", "s3.localhost")


def route(method: str, target: str, host: str = "localhost:9000",
          headers: dict[str, str] | None = None, domains: tuple[str, ...] = DOMAINS) -> Endpoint:
    """What s3gateway.app.dispatch does with a request line and its headers."""
    raw_path, _, raw_query = target.partition("?")
    bucket, key = split_path(raw_path, host, domains)
    query = dict(parse_query(raw_query))
    return parse_endpoint(method, bucket, key, query, headers or {})


class Case(NamedTuple):
    op: Op
    method: str
    key_and_query: str  # path below the bucket, as sent virtual-host style
    headers: dict[str, str] = {}
    key: str | None = None


COPY = {"x-amz-copy-source": "/source-bucket/source-object"}
UPLOAD_ID = "VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA"

# Requests on a bucket or an object named "examplebucket" / "my-image.jpg".
CASES = [
    Case(Op.CreateBucket, "PUT", "/"),
    Case(Op.DeleteBucket, "DELETE", "/"),
    Case(Op.HeadBucket, "HEAD", "/"),
    Case(Op.GetBucketLocation, "GET", "/?location"),
    Case(Op.GetBucketVersioning, "GET", "/?versioning"),
    Case(Op.PutBucketVersioning, "PUT", "/?versioning"),
    Case(Op.GetBucketCors, "GET", "/?cors"),
    Case(Op.PutBucketCors, "PUT", "/?cors"),
    Case(Op.DeleteBucketCors, "DELETE", "/?cors"),
    Case(Op.GetBucketAcl, "GET", "/?acl"),
    Case(Op.ListObjects, "GET", "/"),
    Case(Op.ListObjects, "GET", "/?prefix=N&marker=Ned&max-keys=40"),
    Case(Op.ListObjects, "GET", "/?delimiter=/&prefix=photos/2006/"),
    Case(Op.ListObjectsV2, "GET", "/?list-type=2"),
    Case(Op.ListObjectsV2, "GET", "/?list-type=2&max-keys=3&prefix=E&start-after=ExampleGuide.pdf"),
    Case(Op.ListObjectsV2, "GET", "/?list-type=2&delimiter=/&prefix=photos/2006/"),
    Case(Op.ListObjectsV2, "GET", "/?list-type=2&continuation-token=1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="),
    Case(Op.ListObjectsV2, "GET", "/?list-type=2&fetch-owner=true&encoding-type=url"),
    Case(Op.ListObjectVersions, "GET", "/?versions"),
    Case(Op.ListObjectVersions, "GET", "/?versions&key-marker=key2"),
    Case(Op.ListObjectVersions, "GET", "/?versions&key-marker=key3&version-id-marker=t46ZenlYTZBnj"),
    Case(Op.ListMultipartUploads, "GET", "/?uploads"),
    Case(Op.ListMultipartUploads, "GET", "/?uploads&max-uploads=3"),
    Case(Op.ListMultipartUploads, "GET", "/?uploads&delimiter=/&prefix=photos/2006/"),
    Case(Op.DeleteObjects, "POST", "/?delete"),
    Case(Op.PutObject, "PUT", "/my-image.jpg", key="my-image.jpg"),
    Case(Op.PutObject, "PUT", "/my-image.jpg", {"x-amz-storage-class": "STANDARD"}, key="my-image.jpg"),
    Case(Op.CopyObject, "PUT", "/my-second-image.jpg", COPY, key="my-second-image.jpg"),
    Case(Op.GetObject, "GET", "/my-image.jpg", key="my-image.jpg"),
    Case(Op.GetObject, "GET", "/my-image.jpg?versionId=3HL4kqtJlcpXroDTDmJ%2Brmsr", key="my-image.jpg"),
    Case(Op.GetObject, "GET", "/Junk3.txt?response-cache-control=No-cache&response-content-disposition="
                              "attachment%3B%20filename%3Dtesting.txt", key="Junk3.txt"),
    Case(Op.GetObject, "GET", "/my-image.jpg?partNumber=1", key="my-image.jpg"),
    Case(Op.HeadObject, "HEAD", "/my-image.jpg", key="my-image.jpg"),
    Case(Op.HeadObject, "HEAD", "/my-image.jpg?versionId=3HL4kqtJlcpXroDTDmJ%2Brmsr", key="my-image.jpg"),
    Case(Op.DeleteObject, "DELETE", "/my-second-image.jpg", key="my-second-image.jpg"),
    Case(Op.DeleteObject, "DELETE", "/my-third-image.jpg?versionId=UIORUnfndfiufdisojhr398493jfdkjFJjkndnqUifhnw89493jJFJ",
         key="my-third-image.jpg"),
    Case(Op.GetObjectAcl, "GET", "/my-image.jpg?acl", key="my-image.jpg"),
    Case(Op.GetObjectTagging, "GET", "/example-object?tagging", key="example-object"),
    Case(Op.PutObjectTagging, "PUT", "/object-key?tagging", key="object-key"),
    Case(Op.DeleteObjectTagging, "DELETE", "/exampleobject?tagging", key="exampleobject"),
    Case(Op.DeleteObjectTagging, "DELETE", "/exampleobject?tagging&versionId=ydlaNkwWm0SfKJR.T1b1fIdPRbldTYRI",
         key="exampleobject"),
    Case(Op.CreateMultipartUpload, "POST", "/example-object?uploads", key="example-object"),
    Case(Op.UploadPart, "PUT", f"/my-movie.m2ts?partNumber=1&uploadId={UPLOAD_ID}", key="my-movie.m2ts"),
    Case(Op.UploadPart, "PUT", f"/my-movie.m2ts?uploadId={UPLOAD_ID}&partNumber=10000", key="my-movie.m2ts"),
    Case(Op.UploadPartCopy, "PUT", f"/newobject?partNumber=2&uploadId={UPLOAD_ID}",
         {**COPY, "x-amz-copy-source-range": "bytes=500-6291456"}, key="newobject"),
    Case(Op.CompleteMultipartUpload, "POST", f"/example-object?uploadId={UPLOAD_ID}", key="example-object"),
    Case(Op.AbortMultipartUpload, "DELETE", f"/example-object?uploadId={UPLOAD_ID}", key="example-object"),
    Case(Op.ListParts, "GET", f"/example-object?uploadId={UPLOAD_ID}&max-parts=2&part-number-marker=1",
         key="example-object"),
    Case(Op.Preflight, "OPTIONS", "/"),
    Case(Op.Preflight, "OPTIONS", "/exampleobject", key="exampleobject"),
]


def test_every_op_has_a_case():
    assert {c.op for c in CASES} | {Op.ListBuckets} == set(Op)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op.value}:{c.method} {c.key_and_query}")
def test_virtual_host_style(case: Case):
    ep = route(case.method, case.key_and_query, "examplebucket.s3.localhost:9000", case.headers)
    assert (ep.op, ep.bucket, ep.key) == (case.op, "examplebucket", case.key)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op.value}:{c.method} {c.key_and_query}")
@pytest.mark.parametrize("host", ["localhost:9000", "127.0.0.1:9000", "s3.localhost:9000", "[::1]:9000", ""])
def test_path_style(case: Case, host: str):
    ep = route(case.method, "/examplebucket" + case.key_and_query, host, case.headers)
    assert (ep.op, ep.bucket, ep.key) == (case.op, "examplebucket", case.key)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("host", ["localhost:9000", "s3.localhost", "127.0.0.1:9000"])
def test_list_buckets(method: str, host: str):
    assert route(method, "/", host).op is Op.ListBuckets


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH", "OPTIONS"])
def test_service_level_methods_other_than_get_are_refused(method: str):
    with pytest.raises(MethodNotAllowed):
        route(method, "/")


def test_query_values_are_decoded():
    ep = route("GET", "/?list-type=2&prefix=photos%2F2006%2F&start-after=a%20b+c", "b.s3.localhost")
    assert ep.query == {"list-type": "2", "prefix": "photos/2006/", "start-after": "a b c"}
    assert route("GET", "/b/k?versionId=3HL4kq%2Brmsr").version_id == "3HL4kq+rmsr"
    assert route("GET", "/b/k?versionId=null").version_id is None


def test_upload_id_and_part_number_properties():
    ep = route("PUT", f"/b/k?partNumber=0007&uploadId={UPLOAD_ID}")
    assert ep.upload_id == UPLOAD_ID and ep.part_number == 7


# --- host names ------------------------------------------------------------------------


@pytest.mark.parametrize("host, bucket", [
    ("photos.s3.localhost:9000", "photos"),
    ("photos.s3.localhost", "photos"),
    ("Photos.S3.LocalHost:9000", "photos"),  # host names are case-insensitive
    ("photos.s3.localhost.:9000", "photos"),  # a fully qualified name's trailing dot
    ("photos.localhost:9000", "photos"),
    ("my.dotted.bucket.s3.localhost", "my.dotted.bucket"),
])
def test_virtual_host_bucket(host: str, bucket: str):
    assert split_path("/a/b", host, DOMAINS) == (bucket, "a/b")
    assert split_path("/", host, DOMAINS) == (bucket, None)


def test_longest_domain_wins_whatever_the_order():
    # "localhost" is listed first, yet "photos.s3.localhost" names "photos", not "photos.s3".
    assert split_path("/k", "photos.s3.localhost", ("localhost", "s3.localhost")) == ("photos", "k")
    assert split_path("/k", "photos.s3.localhost", ("s3.localhost", "localhost")) == ("photos", "k")


@pytest.mark.parametrize("host", [
    "localhost:9000", "s3.localhost:9000", "S3.LOCALHOST", "example.org", "127.0.0.1", "[::1]:9000",
    "[fe80::1]", "", ".localhost", "notlocalhost",
])
def test_hosts_that_name_no_bucket_are_path_style(host: str):
    assert split_path("/bucket/key", host, DOMAINS) == ("bucket", "key")


def test_no_virtual_host_domains_means_always_path_style():
    assert split_path("/bucket/key", "photos.s3.localhost", ()) == ("bucket", "key")


# --- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, key", [
    ("/b/a%2Fb", "a/b"),  # an encoded slash is part of the key
    ("/b/a/b/c", "a/b/c"),
    ("/b/%2F", "/"),
    ("/b//", "/"),
    ("/b//leading", "/leading"),
    ("/b/trailing/", "trailing/"),
    ("/b/../x", "../x"),  # no dot-segment removal: ".." is just part of the key
    ("/b/a/../../..", "a/../../.."),
    ("/b/..", ".."),
    ("/b/.", "."),
    ("/b/%2E%2E%2Fetc%2Fpasswd", "../etc/passwd"),
    ("/b/caf%C3%A9", "café"),
    ("/b/%E6%97%A5%E6%9C%AC%E8%AA%9E/%F0%9F%98%80", "日本語/😀"),
    ("/b/a+b", "a+b"),  # "+" in a path is a plus, not a space
    ("/b/a%20b", "a b"),
    ("/b/a%2Bb", "a+b"),
    ("/b/%3F%23%25", "?#%"),
    ("/b/caf%c3%a9", "café"),  # lower-case hex digits
])
def test_keys(raw: str, key: str):
    assert split_path(raw, "localhost", DOMAINS) == ("b", key)
    virtual = raw[len("/b"):]
    assert split_path(virtual, "b.s3.localhost", DOMAINS) == ("b", key)


# Any key a client can send (lone surrogates cannot be encoded as UTF-8 at all).
KEYS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200)


@given(KEYS)
@settings(max_examples=200, deadline=None)
def test_any_key_survives_encoding(key: str):
    encoded = quote(key, safe="/")
    assert split_path(f"/bucket/{encoded}", "localhost", DOMAINS) == ("bucket", key)
    assert split_path(f"/{quote(key, safe='')}", "bucket.s3.localhost", DOMAINS) == ("bucket", key)


@pytest.mark.parametrize("raw", [
    "/b/%zz",  # not hex
    "/b/%4",  # truncated
    "/b/abc%",
    "/b/%%41",
    "/b/%G0",
    "/b/%ff",  # not UTF-8
    "/b/%C3%28",  # invalid UTF-8 continuation
    "/b/%ED%A0%80",  # an encoded surrogate
    "/%C0%AF",  # overlong "/"
    "b/key",  # not absolute
    "*",
    "http://example.org/b/k",  # absolute-form request target
])
def test_invalid_path_is_invalid_uri(raw: str):
    with pytest.raises(InvalidURI) as info:
        split_path(raw, "localhost", DOMAINS)
    assert (info.value.code, info.value.status) == ("InvalidURI", 400)


@pytest.mark.parametrize("query", ["prefix=%zz", "prefix=%", "prefix=a%2", "%ff=1", "prefix=%C3%28", "x%=1"])
def test_invalid_query_is_invalid_uri(query: str):
    with pytest.raises(InvalidURI):
        parse_query(query)


# --- sub-resources we do not serve ------------------------------------------------------


@pytest.mark.parametrize("method, target", [
    ("GET", "/b?policy"), ("PUT", "/b?policy"), ("DELETE", "/b?policy"),
    ("GET", "/b?lifecycle"), ("PUT", "/b?lifecycle"), ("DELETE", "/b?lifecycle"),
    ("GET", "/b?tagging"), ("PUT", "/b?tagging"), ("DELETE", "/b?tagging"),
    ("GET", "/b?encryption"), ("GET", "/b?website"), ("GET", "/b?logging"), ("GET", "/b?notification"),
    ("GET", "/b?replication"), ("GET", "/b?object-lock"), ("GET", "/b?ownershipControls"),
    ("GET", "/b?publicAccessBlock"), ("GET", "/b?accelerate"), ("GET", "/b?requestPayment"),
    ("GET", "/b?analytics"), ("GET", "/b?metrics"), ("GET", "/b?inventory"),
    ("GET", "/b?intelligent-tiering"), ("GET", "/b?policyStatus"),
    ("PUT", "/b?acl"),  # we answer GetBucketAcl with a fixed owner, but never set one
    ("POST", "/b"),  # browser-based POST upload
    ("POST", "/b?uploads"),
    ("PUT", "/b/k?acl"), ("DELETE", "/b/k?acl"),
    ("POST", "/b/k?restore"), ("POST", "/b/k?select&select-type=2"),
    ("GET", "/b/k?retention"), ("PUT", "/b/k?retention"),
    ("GET", "/b/k?legal-hold"), ("PUT", "/b/k?legal-hold"),
    ("GET", "/b/k?torrent"), ("GET", "/b/k?attributes"),
    ("POST", "/b/k"),
])
def test_unsupported_sub_resources_are_not_implemented(method: str, target: str):
    with pytest.raises(NotImplemented_) as info:
        route(method, target)
    assert (info.value.code, info.value.status) == ("NotImplemented", 501)


@pytest.mark.parametrize("method, target", [
    ("PATCH", "/b"), ("PATCH", "/b/k"), ("TRACE", "/b/k"), ("CONNECT", "/b"), ("PROPFIND", "/b/k"),
])
def test_other_methods_are_not_allowed(method: str, target: str):
    with pytest.raises(MethodNotAllowed) as info:
        route(method, target)
    assert info.value.status == 405


# --- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "0", "10001", "-1", "+1", "1.0", "", "abc", " 1", "1 ", "0x10", "²", "١", "１", "9" * 5000,
])
@pytest.mark.parametrize("method, target", [
    ("PUT", f"/b/k?uploadId={UPLOAD_ID}&partNumber="),
    ("GET", "/b/k?partNumber="),
    ("HEAD", "/b/k?partNumber="),
])
def test_bad_part_number_is_invalid_argument(method: str, target: str, value: str):
    headers_variants = [{}, COPY] if method == "PUT" else [{}]
    for headers in headers_variants:
        with pytest.raises(InvalidArgument) as info:
            route(method, target + quote(value), headers=headers)
        assert info.value.fields["ArgumentName"] == "partNumber"
        assert info.value.status == 400


@given(st.text(max_size=8))
@settings(max_examples=200, deadline=None)
def test_part_number_parser_accepts_exactly_1_to_10000(text: str):
    valid = text.isascii() and text.isdigit() and 1 <= int(text) <= 10000
    if valid:
        assert parse_part_number(text) == int(text)
    else:
        with pytest.raises(S3Error):  # InvalidArgument, never a ValueError (a 500)
            parse_part_number(text)


@pytest.mark.parametrize("target", [f"/b/k?uploadId={UPLOAD_ID}", "/b/k?partNumber=1"])
def test_upload_part_needs_both_upload_id_and_part_number(target: str):
    with pytest.raises(InvalidArgument):
        route("PUT", target)


@pytest.mark.parametrize("value", ["3", "v2", ""])
def test_list_type_other_than_2_is_invalid(value: str):
    with pytest.raises(InvalidArgument):
        route("GET", f"/b?list-type={value}")
