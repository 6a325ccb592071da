"""SigV2 verification against botocore's V2 signers as the reference
implementation (`HmacV1Auth` for the Authorization header, `HmacV1QueryAuth`
for presigned URLs), and against the worked examples of the AWS
"Signing and Authenticating REST Requests" (RESTAuthentication) document.

Requests are handed to `authenticate()` as they would arrive: raw path, raw
query, a CIMultiDict of headers, and the bucket a virtual-host Host names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from s3gateway import errors as e
from s3gateway.auth import sigv2
from s3gateway.auth.sigv4 import UNSIGNED_PAYLOAD, AuthResult, RequestView, authenticate
from tests.support.keys import Keys
from tests.support.signing import Signed, wire_path
from tests.support.signing_v2 import sign_v2

AK, SK = "AKIDV2TESTKEY0000001", "v2/secret+with=odd chars0123"
REGION = "us-east-1"
SKEW = timedelta(minutes=15)
pytestmark = pytest.mark.timeout(120)
HYP = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The AWS document's example credentials.
DOC_AK, DOC_SK = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"




LOOKUP = Keys(**{AK: SK, DOC_AK: DOC_SK})


# --- helpers -------------------------------------------------------------------------------

def view(s: Signed, *, virtual_bucket: str | None = None, method: str | None = None,
         path: str | None = None, query: str | None = None,
         headers: list[tuple[str, str]] | None = None) -> RequestView:
    return RequestView(method or s.method, s.raw_path if path is None else path,
                       s.raw_query if query is None else query,
                       CIMultiDict(s.headers if headers is None else headers), virtual_bucket)


def date_of(s: Signed) -> datetime:
    when = parsedate_to_datetime(s.header("date"))
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def query_param(s: Signed, name: str) -> str:
    for item in s.raw_query.split("&"):
        k, _, v = item.partition("=")
        if k == name:
            return v
    raise KeyError(name)


def expires_of(s: Signed) -> datetime:
    return datetime.fromtimestamp(int(query_param(s, "Expires")), timezone.utc)


def check(v: RequestView, now: datetime) -> AuthResult:
    result = authenticate(v, LOOKUP, REGION, now, SKEW)
    assert result is not None
    return result


def sign_header(method: str, path: str, query=(), headers=(), *, secret: str = SK,
                virtual_bucket: str | None = None) -> Signed:
    endpoint = f"http://{virtual_bucket}.localhost:9000" if virtual_bucket else "http://localhost:9000"
    auth_path = f"/{virtual_bucket}{path}" if virtual_bucket else None
    return sign_v2(method, endpoint, path, query, headers, access_key=AK, secret_key=secret, auth_path=auth_path)


def presign(method: str, path: str, query=(), headers=(), *, expires: int = 3600, secret: str = SK,
            virtual_bucket: str | None = None) -> Signed:
    endpoint = f"http://{virtual_bucket}.localhost:9000" if virtual_bucket else "http://localhost:9000"
    auth_path = f"/{virtual_bucket}{path}" if virtual_bucket else None
    return sign_v2(method, endpoint, path, query, headers, access_key=AK, secret_key=secret,
                   auth_path=auth_path, presign_expires=expires)


def hmac_sha1(secret: str, text: str) -> str:
    """An independent V2 signer for hand-built strings to sign (the AWS document's rules)."""
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()


def http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(timezone.utc), usegmt=True)


# --- strategies ----------------------------------------------------------------------------

buckets = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]", fullmatch=True)
keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
subresources = st.lists(st.tuples(st.sampled_from(sorted(sigv2.SUBRESOURCES)), values), max_size=3)
plain_params = st.lists(st.tuples(st.sampled_from(["prefix", "list-type", "max-keys", "x-id", "marker",
                                                   "delimiter", "encoding-type"]), values), max_size=3)
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=16)
meta_names = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=10)
amz_headers = st.lists(st.tuples(meta_names.map(lambda n: f"x-amz-meta-{n}"), header_text), max_size=4)
methods = st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"])


@st.composite
def requests(draw) -> dict:
    """Arguments for a signer: method, path (path- or virtual-host style), query, headers."""
    bucket = draw(buckets)
    key = draw(st.none() | keys)
    virtual = draw(st.booleans())
    if virtual:
        path = "/" + (wire_path("x", key)[3:] if key is not None else "")
    else:
        path = wire_path(bucket, key)
    query = draw(subresources) + draw(plain_params)
    headers = draw(amz_headers)
    if draw(st.booleans()):
        headers.append(("Content-Type", draw(header_text.filter(bool))))
    if draw(st.booleans()):
        headers.append(("Content-MD5", base64.b64encode(hashlib.md5(draw(st.binary())).digest()).decode()))
    return {"method": draw(methods), "path": path, "query": query, "headers": headers,
            "virtual_bucket": bucket if virtual else None}


# --- botocore signs, meshd verifies --------------------------------------------------------

@HYP
@given(requests())
def test_botocore_header_signature_verifies(r):
    s = sign_header(r["method"], r["path"], r["query"], r["headers"], virtual_bucket=r["virtual_bucket"])
    result = check(view(s, virtual_bucket=r["virtual_bucket"]), date_of(s))
    assert result.credential.access_key == AK
    assert result.payload_hash == UNSIGNED_PAYLOAD
    assert not result.presigned


@HYP
@given(requests(), st.integers(1, 7 * 24 * 3600))
def test_botocore_presigned_url_verifies(r, expires):
    # A repeated header cannot be presigned: botocore signs every value but its
    # URL carries only the first.
    r["headers"] = list({k.lower(): (k, v) for k, v in reversed(r["headers"])}.values())
    s = presign(r["method"], r["path"], r["query"], r["headers"], expires=expires,
                virtual_bucket=r["virtual_bucket"])
    # The client follows the URL with the signed Content-Type/MD5 as headers, or without.
    sent = [(k, v) for k, v in r["headers"] if k.lower() in ("content-type", "content-md5")]
    for headers in (s.headers, s.headers + sent):
        result = check(view(s, virtual_bucket=r["virtual_bucket"], headers=headers),
                       expires_of(s) - timedelta(seconds=expires))
        assert result.presigned and result.credential.access_key == AK


@HYP
@given(requests())
def test_bare_subresources_verify(r):
    """"?uploads", "?acl&versionId=1": sub-resources without "=" as clients send them."""
    names = sorted({name for name, _ in r["query"] if name in sigv2.SUBRESOURCES})
    query = "&".join(names)
    s = sign_header(r["method"], r["path"], query, r["headers"], virtual_bucket=r["virtual_bucket"])
    check(view(s, virtual_bucket=r["virtual_bucket"]), date_of(s))


def test_unsigned_plain_parameters_do_not_matter():
    """V2 signs sub-resources only: list parameters may change (as in S3)."""
    s = sign_header("GET", "/bkt", [("list-type", "2"), ("prefix", "a")])
    check(view(s, query="list-type=2&prefix=b&max-keys=3"), date_of(s))


# --- any tamper fails ----------------------------------------------------------------------

def _tampered(kind: str, s: Signed, r: dict) -> RequestView:
    vb = r["virtual_bucket"]
    hdrs = list(s.headers)
    match kind:
        case "method":
            return view(s, virtual_bucket=vb, method="PATCH")
        case "path":
            return view(s, virtual_bucket=vb, path=s.raw_path + "x")
        case "bucket":
            return view(s, virtual_bucket=(vb or "other") + "z")
        case "add-subresource":
            return view(s, virtual_bucket=vb, query=s.raw_query + "&versionId=other")
        case "encoded-subresource":
            return view(s, virtual_bucket=vb, query=s.raw_query + "&version%49d=other")
        case "change-subresource":
            return view(s, virtual_bucket=vb, query=s.raw_query.replace("tagging=t1", "tagging=t2"))
        case "drop-subresource":
            return view(s, virtual_bucket=vb, query=s.raw_query.replace("tagging=t1", "x-id=t1"))
        case "add-amz-header":
            return view(s, virtual_bucket=vb, headers=hdrs + [("x-amz-copy-source", "/other/secret")])
        case "change-amz-header":  # a header wins over the same name in a presigned query
            return view(s, virtual_bucket=vb, headers=[(k, v) for k, v in hdrs if k.lower() != "x-amz-meta-signed"]
                        + [("x-amz-meta-signed", "yes!")])
        case "content-type":
            return view(s, virtual_bucket=vb, headers=[(k, v) for k, v in hdrs if k.lower() != "content-type"]
                        + [("Content-Type", "application/evil")])
        case "content-md5":
            md5 = base64.b64encode(hashlib.md5(b"tampered").digest()).decode()
            return view(s, virtual_bucket=vb, headers=[(k, v) for k, v in hdrs if k.lower() != "content-md5"]
                        + [("Content-MD5", md5)])
        case "signature":
            sig = query_param(s, "Signature") if "Signature=" in s.raw_query else s.header("authorization")[-28:]
            other = "A" + sig[1:] if sig[0] != "A" else "B" + sig[1:]
            if "Signature=" in s.raw_query:
                return view(s, virtual_bucket=vb, query=s.raw_query.replace(sig, other))
            return view(s, virtual_bucket=vb, headers=[
                (k, v.replace(sig, other) if k.lower() == "authorization" else v) for k, v in hdrs])
    raise AssertionError(kind)


TAMPERS = ["method", "path", "bucket", "add-subresource", "encoded-subresource", "change-subresource",
           "drop-subresource", "add-amz-header", "change-amz-header", "content-type", "content-md5",
           "signature"]


@HYP
@given(requests(), st.sampled_from(TAMPERS), st.booleans())
def test_any_tamper_fails(r, kind, presigned):
    query = r["query"] + [("tagging", "t1")]
    headers = r["headers"] + [("x-amz-meta-signed", "yes")]
    if presigned:
        headers = list({k.lower(): (k, v) for k, v in reversed(headers)}.values())  # see above
        s = presign(r["method"], r["path"], query, headers, virtual_bucket=r["virtual_bucket"])
        headers_sent = s.headers + [(k, v) for k, v in headers if k.lower() in ("content-type", "content-md5")]
        s = Signed(s.method, s.target, headers_sent, s.body)
        now = expires_of(s) - timedelta(seconds=3600)
    else:
        s = sign_header(r["method"], r["path"], query, headers, virtual_bucket=r["virtual_bucket"])
        now = date_of(s)
    check(view(s, virtual_bucket=r["virtual_bucket"]), now)  # untouched, it verifies
    with pytest.raises(e.SignatureDoesNotMatch):
        authenticate(_tampered(kind, s, r), LOOKUP, REGION, now, SKEW)


def test_changed_date_fails():
    s = sign_header("GET", "/bkt/key")
    later = http_date(date_of(s) + timedelta(seconds=1))
    hdrs = [(k, later if k.lower() == "date" else v) for k, v in s.headers]
    with pytest.raises(e.SignatureDoesNotMatch):
        check(view(s, headers=hdrs), date_of(s))


def test_changed_expires_fails():
    s = presign("GET", "/bkt/key")
    expires = query_param(s, "Expires")
    q = s.raw_query.replace(f"Expires={expires}", f"Expires={int(expires) + 1}")
    with pytest.raises(e.SignatureDoesNotMatch):
        check(view(s, query=q), expires_of(s) - timedelta(hours=1))


def test_wrong_secret():
    s = sign_header("GET", "/bkt/key", secret="not-the-secret")
    with pytest.raises(e.SignatureDoesNotMatch):
        check(view(s), date_of(s))
    p = presign("GET", "/bkt/key", secret="not-the-secret")
    with pytest.raises(e.SignatureDoesNotMatch):
        check(view(p), expires_of(p) - timedelta(hours=1))


def test_unknown_access_key():
    s = sign_v2("GET", "http://localhost:9000", "/bkt/key", access_key="AKIDNOSUCHKEY", secret_key=SK)
    with pytest.raises(e.InvalidAccessKeyId):
        check(view(s), date_of(s))
    p = sign_v2("GET", "http://localhost:9000", "/bkt/key", access_key="AKIDNOSUCHKEY", secret_key=SK,
                presign_expires=60)
    with pytest.raises(e.InvalidAccessKeyId):
        check(view(p), expires_of(p) - timedelta(seconds=60))


@pytest.mark.parametrize("sig", ["", "not base64!", "AAAA", "%%%"])
def test_malformed_signature_is_a_mismatch(sig):
    s = sign_header("GET", "/bkt/key")
    hdrs = [(k, f"AWS {AK}:{sig}" if k.lower() == "authorization" else v) for k, v in s.headers]
    with pytest.raises((e.SignatureDoesNotMatch, e.InvalidArgument)):
        check(view(s, headers=hdrs), date_of(s))


@pytest.mark.parametrize("header", ["AWS ", "AWS nocolon", f"AWS {AK}:", "AWS :c2ln"])
def test_malformed_header(header):
    s = sign_header("GET", "/bkt/key")
    hdrs = [(k, header if k.lower() == "authorization" else v) for k, v in s.headers]
    with pytest.raises(e.InvalidArgument):
        check(view(s, headers=hdrs), date_of(s))


# --- expiry ------------------------------------------------------------------------------

def test_presigned_expired():
    s = presign("GET", "/bkt/key", expires=60)
    check(view(s), expires_of(s))  # valid up to and including its Expires second
    with pytest.raises(e.AccessDenied) as exc:
        check(view(s), expires_of(s) + timedelta(seconds=1))
    assert exc.value.message == "Request has expired"
    assert set(exc.value.fields) == {"Expires", "ServerTime"}


def test_presigned_at_most_a_week():
    s = presign("GET", "/bkt/key", expires=7 * 24 * 3600)
    check(view(s), expires_of(s) - timedelta(days=7))
    s = presign("GET", "/bkt/key", expires=7 * 24 * 3600 + 3600)
    with pytest.raises(e.AuthorizationQueryParametersError):
        check(view(s), expires_of(s) - timedelta(days=7, hours=1))


@pytest.mark.parametrize("expires", ["abc", "-5", "1e9", "١٢٣", "9" * 5000, ""])
def test_presigned_bad_expires(expires):
    q = f"AWSAccessKeyId={AK}&Signature=c2ln&Expires={expires}"
    v = RequestView("GET", "/bkt/key", q, CIMultiDict([("Host", "localhost")]))
    with pytest.raises((e.AccessDenied, e.AuthorizationQueryParametersError)):
        check(v, datetime.now(timezone.utc))


@pytest.mark.parametrize("drop", sigv2.QUERY_AUTH_PARAMS)
def test_presigned_missing_parameter(drop):
    s = presign("GET", "/bkt/key")
    q = "&".join(i for i in s.raw_query.split("&") if not i.startswith(drop + "="))
    with pytest.raises(e.AccessDenied):
        check(view(s, query=q), expires_of(s) - timedelta(hours=1))


# --- date and skew -----------------------------------------------------------------------

@pytest.mark.parametrize("offset", [timedelta(minutes=16), -timedelta(minutes=16)])
def test_skewed_date(offset):
    s = sign_header("GET", "/bkt/key")
    with pytest.raises(e.RequestTimeTooSkewed):
        check(view(s), date_of(s) + offset)


@pytest.mark.parametrize("offset", [timedelta(minutes=14), -timedelta(minutes=14)])
def test_date_within_skew(offset):
    s = sign_header("GET", "/bkt/key")
    check(view(s), date_of(s) + offset)


def test_missing_or_bad_date():
    s = sign_header("GET", "/bkt/key")
    without = [(k, v) for k, v in s.headers if k.lower() != "date"]
    with pytest.raises(e.AccessDenied):
        check(view(s, headers=without), date_of(s))
    with pytest.raises(e.AccessDenied):
        check(view(s, headers=without + [("Date", "yesterday")]), date_of(s))
    with pytest.raises(e.AccessDenied):
        check(view(s, headers=without + [("Date", "Fri, 31 Dec 9999 23:59:59 -0100")]), date_of(s))


def _by_hand(method: str, date_line: str, amz: str, resource: str, headers: list[tuple[str, str]]) -> RequestView:
    sig = hmac_sha1(SK, f"{method}\n\n\n{date_line}\n{amz}{resource}")
    return RequestView(method, resource, "", CIMultiDict([("Host", "localhost"), *headers,
                                                          ("Authorization", f"AWS {AK}:{sig}")]))


def test_x_amz_date_with_an_empty_date_line():
    """The AWS document's rule (and s3cmd): with x-amz-date, sign an empty Date line."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    amz_date = now.strftime("%a, %d %b %Y %H:%M:%S +0000")
    v = _by_hand("GET", "", f"x-amz-date:{amz_date}\n", "/bkt/key", [("x-amz-date", amz_date)])
    check(v, now)
    # x-amz-date is the request time: a stale Date header does not matter...
    stale = [("Date", http_date(now - timedelta(days=3))), ("x-amz-date", amz_date)]
    check(_by_hand("GET", "", f"x-amz-date:{amz_date}\n", "/bkt/key", stale), now)
    # ...but a stale x-amz-date does, whatever the Date header says.
    with pytest.raises(e.RequestTimeTooSkewed):
        check(v, now + timedelta(minutes=20))


def test_x_amz_date_in_the_date_line_as_in_the_aws_delete_example():
    now = datetime.now(timezone.utc).replace(microsecond=0)
    amz_date = now.strftime("%a, %d %b %Y %H:%M:%S +0000")
    check(_by_hand("DELETE", amz_date, "", "/bkt/key", [("x-amz-date", amz_date)]), now)


def test_botocore_with_an_x_amz_date_header():
    """botocore signs its Date header even when the caller adds x-amz-date."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    s = sign_header("GET", "/bkt/key", headers=[("x-amz-date", now.strftime("%Y%m%dT%H%M%SZ"))])
    check(view(s), now)


# --- payload modes -----------------------------------------------------------------------

def test_signed_sha256_is_kept_for_the_body_check():
    digest = hashlib.sha256(b"body").hexdigest()
    s = sign_header("PUT", "/bkt/key", headers=[("x-amz-content-sha256", digest)])
    assert check(view(s), date_of(s)).payload_hash == digest


@pytest.mark.parametrize("mode", ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"])
def test_aws_chunked_needs_sigv4(mode):
    s = sign_header("PUT", "/bkt/key", headers=[("x-amz-content-sha256", mode)])
    with pytest.raises(e.InvalidRequest):
        check(view(s), date_of(s))
    p = presign("PUT", "/bkt/key")
    with pytest.raises(e.InvalidRequest):
        check(view(p, headers=p.headers + [("x-amz-content-sha256", mode)]), expires_of(p) - timedelta(hours=1))


def test_bad_content_sha256():
    s = sign_header("PUT", "/bkt/key", headers=[("x-amz-content-sha256", "nope")])
    with pytest.raises(e.InvalidArgument):
        check(view(s), date_of(s))


# --- dispatch ------------------------------------------------------------------------------

def test_two_auth_mechanisms_are_refused():
    s = sign_header("GET", "/bkt/key")
    p = presign("GET", "/bkt/key")
    with pytest.raises(e.InvalidArgument):
        check(view(s, query=p.raw_query), date_of(s))
    q = p.raw_query + "&X-Amz-Signature=" + "0" * 64
    with pytest.raises(e.InvalidArgument):
        check(view(p, query=q), expires_of(p) - timedelta(hours=1))


def test_anonymous_is_still_anonymous():
    v = RequestView("GET", "/bkt/key", "prefix=Signature", CIMultiDict([("Host", "localhost")]))
    assert authenticate(v, LOOKUP, REGION, datetime.now(timezone.utc), SKEW) is None


# --- the AWS document's examples ---------------------------------------------------------

def _doc(method: str, path: str, query: str, headers: list[tuple[str, str]], sig: str | None,
         virtual_bucket: str | None) -> RequestView:
    if sig is not None:
        headers = [*headers, ("Authorization", f"AWS {DOC_AK}:{sig}")]
    return RequestView(method, path, query, CIMultiDict(headers), virtual_bucket)


@pytest.mark.parametrize("method,path,query,headers,sig,vb", [
    # Object GET, virtual-host style.
    ("GET", "/photos/puppy.jpg", "", [("Host", "johnsmith.s3.amazonaws.com"),
                                      ("Date", "Tue, 27 Mar 2007 19:36:42 +0000")],
     "bWq2s1WEIj+Ydj0vQ697zp+IXMU=", "johnsmith"),
    # Object PUT with a Content-Type.
    ("PUT", "/photos/puppy.jpg", "", [("Content-Type", "image/jpeg"), ("Content-Length", "94328"),
                                      ("Host", "johnsmith.s3.amazonaws.com"),
                                      ("Date", "Tue, 27 Mar 2007 21:15:45 +0000")],
     "MyyxeRY7whkBe+bq8fHCL/2kKUg=", "johnsmith"),
    # List: the bucket alone is "/johnsmith/"; prefix, max-keys and marker are not signed.
    ("GET", "/", "prefix=photos&max-keys=50&marker=puppy", [("User-Agent", "Mozilla/5.0"),
                                                            ("Host", "johnsmith.s3.amazonaws.com"),
                                                            ("Date", "Tue, 27 Mar 2007 19:42:41 +0000")],
     "htDYFYduRNen8P9ZfE/s9SuKy0U=", "johnsmith"),
    # A sub-resource.
    ("GET", "/", "acl", [("Host", "johnsmith.s3.amazonaws.com"), ("Date", "Tue, 27 Mar 2007 19:44:46 +0000")],
     "c2WLPFtWHVgbEmeEG93a4cG37dM=", "johnsmith"),
    # Path style, x-amz-date signed as the Date line.
    ("DELETE", "/johnsmith/photos/puppy.jpg", "", [("User-Agent", "dotnet"), ("Host", "s3.amazonaws.com"),
                                                   ("Date", "Tue, 27 Mar 2007 21:20:27 +0000"),
                                                   ("x-amz-date", "Tue, 27 Mar 2007 21:20:26 +0000")],
     "lx3byBScXR6KzyMaifNkardMwNk=", None),
    # CNAME-style bucket, repeated and mixed-case x-amz-meta headers, Content-MD5.
    ("PUT", "/db-backup.dat.gz", "", [
        ("User-Agent", "curl/7.15.5"), ("Host", "static.johnsmith.net:8080"),
        ("Date", "Tue, 27 Mar 2007 21:06:08 +0000"), ("x-amz-acl", "public-read"),
        ("content-type", "application/x-download"), ("Content-MD5", "4gJE4saaMU4BqNR0kLY+lw=="),
        ("X-Amz-Meta-ReviewedBy", "joe@johnsmith.net"), ("X-Amz-Meta-ReviewedBy", "jane@johnsmith.net"),
        ("X-Amz-Meta-FileChecksum", "0x02661779"), ("X-Amz-Meta-ChecksumAlgorithm", "crc32"),
        ("Content-Disposition", "attachment; filename=database.dat"), ("Content-Encoding", "gzip"),
        ("Content-Length", "5913339")],
     "ilyl83RwaSoYIEdixDQcA4OnAnc=", "static.johnsmith.net"),
    # ListAllMyBuckets.
    ("GET", "/", "", [("Host", "s3.amazonaws.com"), ("Date", "Wed, 28 Mar 2007 01:29:59 +0000")],
     "qGdzdERIC03wnaRNKh6OqZehG9s=", None),
    # Unicode keys: the path as sent, percent-encoding and all.
    ("GET", "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re", "", [
        ("Host", "s3.amazonaws.com"), ("Date", "Wed, 28 Mar 2007 01:49:49 +0000")],
     "DNEZGsoieTZ92F3bUfSPQcbGmlM=", None),
])
def test_aws_document_examples(method, path, query, headers, sig, vb):
    v = _doc(method, path, query, headers, sig, vb)
    now = parsedate_to_datetime(dict(headers).get("x-amz-date") or dict(headers)["Date"])
    assert check(v, now).credential.access_key == DOC_AK


def test_aws_document_query_string_example():
    q = f"AWSAccessKeyId={DOC_AK}&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620"
    v = _doc("GET", "/photos/puppy.jpg", q, [("Host", "johnsmith.s3.amazonaws.com")], None, "johnsmith")
    assert check(v, datetime.fromtimestamp(1175139620 - 60, timezone.utc)).presigned
    with pytest.raises(e.AccessDenied):
        check(v, datetime.fromtimestamp(1175139621, timezone.utc))
    # The same URL with "+" left unencoded in the signature (it arrives as a space).
    q2 = q.replace("%2B", "+")
    v2 = _doc("GET", "/photos/puppy.jpg", q2, [("Host", "johnsmith.s3.amazonaws.com")], None, "johnsmith")
    check(v2, datetime.fromtimestamp(1175139620 - 60, timezone.utc))


# --- garbage in, an S3 error out -------------------------------------------------------------

any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@HYP
@given(any_text, st.none() | any_text, st.none() | any_text, any_text)
def test_garbage_header_auth_is_an_s3_error(cred, date, amz_date, query):
    headers = [("Host", "localhost"), ("Authorization", "AWS " + cred)]
    headers += [("Date", date)] if date is not None else []
    headers += [("x-amz-date", amz_date)] if amz_date is not None else []
    v = RequestView("GET", "/bkt/key", query, CIMultiDict(headers))
    with pytest.raises(e.S3Error):
        authenticate(v, LOOKUP, REGION, datetime.now(timezone.utc), SKEW)


@HYP
@given(any_text, any_text, any_text, any_text)
def test_garbage_query_auth_is_an_s3_error(access_key, signature, expires, extra):
    q = f"AWSAccessKeyId={access_key}&Signature={signature}&Expires={expires}&{extra}"
    v = RequestView("GET", "/bkt/key", q, CIMultiDict([("Host", "localhost")]))
    with pytest.raises(e.S3Error):
        authenticate(v, LOOKUP, REGION, datetime.now(timezone.utc), SKEW)


def test_sigv4_date_past_year_9999_is_an_s3_error():
    """Found while testing V2 dates: SigV4's Date parser raised OverflowError (a 500)."""
    v = RequestView("GET", "/bkt/key", "", CIMultiDict([
        ("Host", "localhost"), ("Date", "Fri, 31 Dec 9999 23:59:59 -0100"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("Authorization", f"AWS4-HMAC-SHA256 Credential={AK}/20200101/{REGION}/s3/aws4_request, "
                          f"SignedHeaders=host, Signature={'0' * 64}")]))
    with pytest.raises(e.AccessDenied):
        authenticate(v, LOOKUP, REGION, datetime.now(timezone.utc), SKEW)
