"""Object tagging and bucket CORS (configuration, preflight, actual requests)
through the S3 edge of a real node."""

from __future__ import annotations

import uuid
from urllib.parse import quote
from xml.sax.saxutils import escape

import pytest
from botocore.exceptions import ClientError

from tests.support.s3edge import RawResponse, signed_request

pytestmark = pytest.mark.timeout(120)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def _status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def _tags(pairs: dict[str, str]) -> dict:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in pairs.items()]}


def _as_dict(tag_set: list[dict]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_set}


# -- tagging ------------------------------------------------------------------


def test_put_get_delete_object_tagging(s3, bucket: str) -> None:
    vid = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
    got = s3.get_object_tagging(Bucket=bucket, Key="k")
    assert got["TagSet"] == []
    assert got["VersionId"] == vid

    put = s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=_tags({"a": "1", "b c": "d e"}))
    assert put["VersionId"] == vid
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == {"a": "1", "b c": "d e"}
    assert s3.get_object(Bucket=bucket, Key="k")["TagCount"] == 2

    # Putting a tag set replaces the whole set.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=_tags({"only": "one"}))
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == {"only": "one"}

    deleted = s3.delete_object_tagging(Bucket=bucket, Key="k")
    assert deleted["VersionId"] == vid
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="k")
    # Tagging changes no version.
    assert [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]] == [vid]


def test_delete_object_tagging_answers_204(node, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=b")
    r = signed_request(node.endpoint, "DELETE", f"/{bucket}/k", query="tagging=")
    assert r.status == 204
    assert r.header("x-amz-version-id")


def test_tagging_header_on_put(node, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="project=mesh&empty=&sp%20ace=a%2Fb")
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == {
        "project": "mesh", "empty": "", "sp ace": "a/b"}
    raw = signed_request(node.endpoint, "GET", f"/{bucket}/k")
    assert raw.header("x-amz-tagging-count") == "3"


def test_tagging_a_specific_version(s3, bucket: str) -> None:
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"1", Tagging="gen=1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"2", Tagging="gen=2")["VersionId"]
    s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=v1, Tagging=_tags({"gen": "old"}))
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1)["TagSet"]) == {"gen": "old"}
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == {"gen": "2"}
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v2)["VersionId"] == v2


def test_too_many_tags(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    eleven = {f"k{i}": "v" for i in range(11)}
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=_tags(eleven))
    assert _code(exc) == "InvalidTag"
    assert _status(exc) == 400
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k2", Body=b"x", Tagging="&".join(f"{k}=v" for k in eleven))
    assert _code(exc) == "InvalidTag"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k2")
    # Exactly ten is fine.
    ten = {f"k{i}": "v" for i in range(10)}
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=_tags(ten))
    assert len(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == 10


@pytest.mark.parametrize("key,value", [
    ("k" * 129, "v"),          # key too long
    ("k", "v" * 257),          # value too long
    ("", "v"),                 # empty key
    ("aws:reserved", "v"),     # reserved prefix
    ("a<b", "v"),              # outside S3's tag alphabet
    ("k", "semi;colon"),
])
def test_invalid_tags(node, s3, bucket: str, key: str, value: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="keep=me")
    doc = (f"<Tagging><TagSet><Tag><Key>{escape(key)}</Key><Value>{escape(value)}</Value></Tag>"
           f"</TagSet></Tagging>").encode()
    r = signed_request(node.endpoint, "PUT", f"/{bucket}/k", query="tagging=", body=doc)
    assert r.status == 400
    assert r.error_code == "InvalidTag"
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == {"keep": "me"}
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k3", Body=b"x", Tagging=f"{quote(key)}={quote(value)}")
    assert _code(exc) == "InvalidTag"


def test_tag_limits_are_inclusive_and_unicode(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    tags = {"k" * 128: "v" * 256, "Grüße ☃"[:6]: "数据 + - = . _ : / @"}
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging=_tags(tags))
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == tags


def test_duplicate_tag_keys(node, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    body = (b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag>"
            b"<Tag><Key>a</Key><Value>2</Value></Tag></TagSet></Tagging>")
    r = signed_request(node.endpoint, "PUT", f"/{bucket}/k", query="tagging=", body=body)
    assert r.status == 400
    assert r.error_code == "InvalidTag"


def test_tag_whitespace_is_kept_exactly(node, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    doc = b"""<Tagging>
      <TagSet>
        <Tag><Key> padded key </Key><Value>  </Value></Tag>
      </TagSet>
    </Tagging>"""
    r = signed_request(node.endpoint, "PUT", f"/{bucket}/k", query="tagging=", body=doc)
    assert r.status == 200, r.body
    assert _as_dict(s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"]) == {" padded key ": "  "}
    empty = b"<Tagging><TagSet>\n  </TagSet></Tagging>"
    assert signed_request(node.endpoint, "PUT", f"/{bucket}/k", query="tagging=", body=empty).status == 200
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []


@pytest.mark.parametrize("body", [
    b"", b"<Tagging><TagSet><Tag><Key>a</Key>", b"<Tags/>", b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>",
])
def test_malformed_tagging_xml(node, s3, bucket: str, body: bytes) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = signed_request(node.endpoint, "PUT", f"/{bucket}/k", query="tagging=", body=body)
    assert r.status == 400
    assert r.error_code == "MalformedXML"


def test_tagging_missing_object_and_version(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=bucket, Key="nope")
    assert _code(exc) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="nope", Tagging=_tags({"a": "b"}))
    assert _code(exc) == "NoSuchKey"
    vid = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=bucket, Key="k", VersionId="0" * 16 + vid[16:])
    assert _code(exc) == "NoSuchVersion"


def test_tagging_a_delete_marker(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=bucket, Key="k")
    assert _status(exc) == 404
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=marker, Tagging=_tags({"a": "b"}))
    assert _status(exc) == 405


# -- CORS ----------------------------------------------------------------------


RULES = [
    {"AllowedOrigins": ["https://app.example.org"], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["x-amz-*", "content-type"], "ExposeHeaders": ["ETag", "x-amz-version-id"],
     "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["http://*.lab.example"], "AllowedMethods": ["HEAD", "GET"]},
]


@pytest.fixture
def cors_bucket(s3, bucket: str) -> str:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    s3.put_object(Bucket=bucket, Key="obj", Body=b"cross-origin")
    return bucket


def _preflight(node, bucket: str, origin: str | None, method: str | None, headers: str | None = None,
               path: str = "/obj") -> RawResponse:
    h = {}
    if origin is not None:
        h["Origin"] = origin
    if method is not None:
        h["Access-Control-Request-Method"] = method
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    return signed_request(node.endpoint, "OPTIONS", f"/{bucket}{path}", headers=h, sign=False)


def test_get_bucket_cors_round_trip(s3, cors_bucket: str) -> None:
    rules = s3.get_bucket_cors(Bucket=cors_bucket)["CORSRules"]
    assert len(rules) == 2
    assert rules[0]["AllowedOrigins"] == ["https://app.example.org"]
    assert rules[0]["AllowedMethods"] == ["GET", "PUT"]
    assert rules[0]["AllowedHeaders"] == ["x-amz-*", "content-type"]
    assert rules[0]["ExposeHeaders"] == ["ETag", "x-amz-version-id"]
    assert rules[0]["MaxAgeSeconds"] == 600
    assert rules[1]["AllowedOrigins"] == ["http://*.lab.example"]


def test_bucket_without_cors(node, s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=bucket)
    assert _code(exc) == "NoSuchCORSConfiguration"
    assert _status(exc) == 404
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x")
    r = _preflight(node, bucket, "https://app.example.org", "GET")
    assert r.status == 403
    assert r.header("access-control-allow-origin") is None
    got = signed_request(node.endpoint, "GET", f"/{bucket}/obj", headers={"Origin": "https://app.example.org"})
    assert got.status == 200
    assert got.header("access-control-allow-origin") is None


def test_delete_bucket_cors(node, s3, cors_bucket: str) -> None:
    r = signed_request(node.endpoint, "DELETE", f"/{cors_bucket}", query="cors=")
    assert r.status == 204
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=cors_bucket)
    assert _code(exc) == "NoSuchCORSConfiguration"
    assert _preflight(node, cors_bucket, "https://app.example.org", "GET").status == 403


def test_cors_on_missing_bucket(s3) -> None:
    name = f"t-{uuid.uuid4().hex[:16]}"
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": RULES})
    assert _code(exc) == "NoSuchBucket"
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_cors(Bucket=name)
    assert _code(exc) == "NoSuchBucket"


def test_preflight_allowed(node, cors_bucket: str) -> None:
    r = _preflight(node, cors_bucket, "https://app.example.org", "PUT", "Content-Type, X-Amz-Meta-Foo")
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "https://app.example.org"
    assert "PUT" in r.header("access-control-allow-methods")
    allowed = {h.strip().lower() for h in r.header("access-control-allow-headers").split(",")}
    assert allowed == {"content-type", "x-amz-meta-foo"}
    assert r.header("access-control-max-age") == "600"
    assert "ETag" in r.header("access-control-expose-headers")


def test_preflight_wildcard_origin_and_bucket_path(node, cors_bucket: str) -> None:
    r = _preflight(node, cors_bucket, "http://node7.lab.example", "HEAD", path="")
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "http://node7.lab.example"


@pytest.mark.parametrize("origin,method,headers", [
    ("https://evil.example", "GET", None),              # origin not listed
    ("https://app.example.org", "DELETE", None),        # method not allowed
    ("http://node7.lab.example", "PUT", None),           # method of another rule
    ("https://app.example.org", "GET", "authorization-x"),  # header not allowed
    ("http://lab.example", "GET", None),                 # wildcard needs a subdomain
])
def test_preflight_denied(node, cors_bucket: str, origin: str, method: str, headers: str | None) -> None:
    r = _preflight(node, cors_bucket, origin, method, headers)
    assert r.status == 403
    assert r.error_code == "AccessForbidden"
    assert r.header("access-control-allow-origin") is None


def test_preflight_without_origin_or_method(node, cors_bucket: str) -> None:
    assert _preflight(node, cors_bucket, None, "GET").status == 400
    assert _preflight(node, cors_bucket, "https://app.example.org", None).status == 400


def test_preflight_on_missing_bucket(node) -> None:
    r = _preflight(node, f"t-{uuid.uuid4().hex[:16]}", "https://app.example.org", "GET")
    assert r.status == 403


def test_actual_requests_with_origin(node, cors_bucket: str) -> None:
    get = signed_request(node.endpoint, "GET", f"/{cors_bucket}/obj", headers={"Origin": "https://app.example.org"})
    assert get.status == 200
    assert get.body == b"cross-origin"
    assert get.header("access-control-allow-origin") == "https://app.example.org"
    assert "ETag" in get.header("access-control-expose-headers")
    assert get.header("x-amz-request-id")
    head = signed_request(node.endpoint, "HEAD", f"/{cors_bucket}/obj", headers={"Origin": "http://a.lab.example"})
    assert head.header("access-control-allow-origin") == "http://a.lab.example"
    ranged = signed_request(node.endpoint, "GET", f"/{cors_bucket}/obj",
                            headers={"Origin": "https://app.example.org", "Range": "bytes=0-4"})
    assert ranged.status == 206
    assert ranged.header("access-control-allow-origin") == "https://app.example.org"
    # Errors carry CORS headers too, so a browser can read them.
    missing = signed_request(node.endpoint, "GET", f"/{cors_bucket}/nope", headers={"Origin": "https://app.example.org"})
    assert missing.status == 404
    assert missing.header("access-control-allow-origin") == "https://app.example.org"
    other = signed_request(node.endpoint, "GET", f"/{cors_bucket}/obj", headers={"Origin": "https://evil.example"})
    assert other.status == 200
    assert other.header("access-control-allow-origin") is None


def _put_cors(node, bucket: str, body: bytes) -> RawResponse:
    import base64
    import hashlib

    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    return signed_request(node.endpoint, "PUT", f"/{bucket}", query="cors=", body=body, headers={"Content-MD5": md5})


@pytest.mark.parametrize("body,code", [
    (b"<CORSConfiguration/>", "MalformedXML"),
    (b"<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>",
     "MalformedXML"),
    (b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin></CORSRule></CORSConfiguration>",
     "MalformedXML"),
    (b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"
     b"</CORSRule></CORSConfiguration>", "InvalidRequest"),
    (b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
     b"<MaxAgeSeconds>soon</MaxAgeSeconds></CORSRule></CORSConfiguration>", "MalformedXML"),
    (b"<CORSConfiguration><CORSRule>", "MalformedXML"),
    (b"not xml", "MalformedXML"),
])
def test_put_bucket_cors_invalid(node, s3, bucket: str, body: bytes, code: str) -> None:
    r = _put_cors(node, bucket, body)
    assert r.status == 400
    assert r.error_code == code
    with pytest.raises(ClientError):
        s3.get_bucket_cors(Bucket=bucket)


def test_put_bucket_cors_wildcard_origin(node, s3, bucket: str) -> None:
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]})
    s3.put_object(Bucket=bucket, Key="obj", Body=b"x")
    r = _preflight(node, bucket, "https://anyone.example", "GET")
    assert r.status == 200
    assert r.header("access-control-allow-origin") == "*"
    got = signed_request(node.endpoint, "GET", f"/{bucket}/obj", headers={"Origin": "https://anyone.example"})
    assert got.header("access-control-allow-origin") == "*"
