"""AWS Signature Version 2 verification (HMAC-SHA1), for the `Authorization:
AWS <AccessKeyId>:<Signature>` header and for presigned `AWSAccessKeyId` /
`Expires` / `Signature` query strings.

boto3 still presigns with V2 by default in us-east-1, as does `aws s3 presign`
in awscli v1, and s3cmd speaks it with `--signature-v2`; MinIO and Ceph RGW
accept it, so meshd does too. The string to sign follows the AWS
"RESTAuthentication" document and botocore's `HmacV1Auth` / `HmacV1QueryAuth`
(the reference implementation the tests sign with):

    VERB \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n
    CanonicalizedAmzHeaders CanonicalizedResource

Clients differ in small ways (which date line, whether sub-resource values are
decoded, "?uploads" against "?uploads="), so a request verifies if any of a
few spellings of *the same* request matches; each spelling covers the same
method, headers, resource and sub-resources, so none of them lets a request
change what was signed. Signatures are compared with `hmac.compare_digest`.

V2 has no streaming mode: aws-chunked bodies need SigV4 and are refused. The
body is checked against Content-MD5 (the object service does that) or against
a signed hex `x-amz-content-sha256` when the client sends one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from typing import Iterable
from urllib.parse import unquote, unquote_to_bytes

from registry_client.identity import CredentialLookup
from s3gateway import errors as e
from s3gateway.auth.sigv4 import (
    _HEX64,
    MAX_PRESIGNED_EXPIRES,
    STREAMING_MODES,
    UNSIGNED_PAYLOAD,
    AuthResult,
    HeaderMap,
    RequestView,
    _lookup,
    canonical_uri,
    check_skew,
)
from s3gateway.headers import parse_http_date

# Query parameters that name a sub-resource and so belong to the canonical
# resource: botocore's HmacV1Auth.QSAOfInterest (a superset of the AWS list and
# of s3cmd's). Every query key meshd's router acts on is here, or answers
# NotImplemented, so V2's unsigned query parameters cannot pick an operation.
SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads",
    "uploadId", "response-content-type", "response-content-language", "response-expires",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "delete", "lifecycle", "tagging", "restore", "storageClass", "notification", "replication",
    "analytics", "metrics", "inventory", "select", "select-type", "object-lock",
})
QUERY_AUTH_PARAMS = ("AWSAccessKeyId", "Signature", "Expires")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_ISO = "%Y-%m-%dT%H:%M:%SZ"
_MAX_EXPIRES_DIGITS = 12  # far beyond a week from now, and far below int()'s digit limit


# --- detection -------------------------------------------------------------------------

def is_v2_header(header: str) -> bool:
    return header.startswith("AWS ")


def is_v2_query(raw_query: str) -> bool:
    """True when the query carries V2 query-auth parameters (decoded names, so
    "X-Amz-Signature" is not "Signature")."""
    return any(unquote(k) in ("AWSAccessKeyId", "Signature") for k, _ in _raw_pairs(raw_query))


# --- the string to sign ----------------------------------------------------------------

def _raw_pairs(raw_query: str) -> list[tuple[str, str | None]]:
    """(raw key, raw value or None when the item has no "=") in wire order."""
    pairs: list[tuple[str, str | None]] = []
    for item in raw_query.split("&") if raw_query else ():
        if not item:
            continue
        k, sep, v = item.partition("=")
        pairs.append((k, v if sep else None))
    return pairs


def _decode(raw: str) -> str:
    # As sigv4 does: a %XX that is not UTF-8 stays the same bytes, not U+FFFD.
    return unquote_to_bytes(raw.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def canonical_subresources(raw_query: str, *, decode_values: bool = True, bare_empty: bool = False) -> str:
    """"?k=v&k2" for the sub-resources in the query, sorted by name (stably, as
    botocore does), or "". Names are matched decoded, so "version%49d" cannot
    slip a versionId past the signature. `decode_values` False keeps values as
    sent (s3cmd signs them encoded); `bare_empty` writes "k=" as "k"."""
    items: list[tuple[str, str | None]] = []
    for raw_k, raw_v in _raw_pairs(raw_query):
        name = _decode(raw_k)
        if name not in SUBRESOURCES:
            continue
        value = raw_v if raw_v is None or not decode_values else _decode(raw_v)
        if bare_empty and value == "":
            value = None
        items.append((name, value))
    items.sort(key=lambda kv: kv[0])
    if not items:
        return ""
    return "?" + "&".join(k if v is None else f"{k}={v}" for k, v in items)


def canonical_amz_headers(
    headers: HeaderMap, extra: Iterable[tuple[str, str]] = (), *, without_date: bool = False
) -> str:
    """"name:v1,v2\\n" for every x-amz-* header, lower-case names, sorted. `extra`
    adds x-amz-* query parameters of a presigned URL (botocore moves signed
    headers there); a name sent as a header wins over the same name in the query.
    `without_date` leaves out x-amz-date, for when it is signed as the Date line."""
    values: dict[str, list[str]] = {}
    for name in headers.keys():
        lname = name.lower()
        if without_date and lname == "x-amz-date":
            continue
        if lname.startswith("x-amz-") and lname not in values:
            values[lname] = [v.strip() for v in headers.getall(name, [])]
    from_query: dict[str, list[str]] = {}
    for name, value in extra:
        lname = name.lower()
        if lname.startswith("x-amz-") and lname not in values:
            from_query.setdefault(lname, []).append(value.strip())
    values.update(from_query)
    return "".join(f"{k}:{','.join(values[k])}\n" for k in sorted(values))


def string_to_sign(
    method: str, content_md5: str, content_type: str, date: str, amz_headers: str, resource: str
) -> str:
    return f"{method}\n{content_md5}\n{content_type}\n{date}\n{amz_headers}{resource}"


def _mac(secret: str, message: str) -> bytes:
    # Header bytes that are not UTF-8 arrive as surrogate escapes: sign the bytes as sent.
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8", "surrogateescape"), hashlib.sha1).digest()


def sign(secret: str, message: str) -> str:
    """The V2 signature: base64(HMAC-SHA1(secret, string to sign))."""
    return base64.b64encode(_mac(secret, message)).decode("ascii")


def resource_paths(req: RequestView) -> list[str]:
    """The bucket-qualified path as sent, then spellings other clients sign: the
    AWS re-encoding of the path, and "/bucket/" for a path-style bucket request."""
    prefix = f"/{req.virtual_bucket}" if req.virtual_bucket is not None else ""
    paths = [prefix + req.raw_path]
    reencoded = prefix + canonical_uri(req.raw_path)
    if reencoded not in paths:
        paths.append(reencoded)
    if req.virtual_bucket is None and req.raw_path.count("/") == 1 and len(req.raw_path) > 1:
        paths.append(req.raw_path + "/")
    return paths


def _resources(req: RequestView) -> list[str]:
    queries: list[str] = []
    for decode_values in (True, False):
        for bare_empty in (False, True):
            q = canonical_subresources(req.raw_query, decode_values=decode_values, bare_empty=bare_empty)
            if q not in queries:
                queries.append(q)
    return [path + q for path in resource_paths(req) for q in queries]


def _verify(
    secret: str, given: str, method: str, content_md5: str, content_type: str,
    dated_headers: list[tuple[str, str]], resources: list[str],
) -> None:
    """Match `given` against each (Date line, CanonicalizedAmzHeaders) and resource spelling."""
    try:
        # A "+" left unencoded in a query string arrives as a space.
        given_raw = base64.b64decode(given.strip().replace(" ", "+"), validate=True)
    except (binascii.Error, ValueError):
        raise e.SignatureDoesNotMatch() from None
    for date, amz_headers in dated_headers:
        for resource in resources:
            message = string_to_sign(method, content_md5, content_type, date, amz_headers, resource)
            if hmac.compare_digest(_mac(secret, message), given_raw):
                return
    raise e.SignatureDoesNotMatch()


# --- payload ---------------------------------------------------------------------------

def _payload_hash(headers: HeaderMap) -> str:
    """A signed hex x-amz-content-sha256 still gets the body checked; aws-chunked
    needs SigV4's signing key and chunk signatures, which V2 does not have."""
    payload = headers.get("x-amz-content-sha256")
    if payload is None or payload == UNSIGNED_PAYLOAD:
        return UNSIGNED_PAYLOAD
    if payload in STREAMING_MODES:
        raise e.InvalidRequest("aws-chunked payloads (STREAMING-*) require AWS4-HMAC-SHA256 "
                               "(Signature Version 4).")
    if not _HEX64.match(payload):
        raise e.InvalidArgument("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                                "STREAMING-* or a hex SHA-256 digest.")
    return payload


# --- header auth -----------------------------------------------------------------------

def parse_header(header: str) -> tuple[str, str]:
    """(access key, signature) from "AWS <AccessKeyId>:<Signature>"."""
    access_key, sep, signature = header[len("AWS "):].strip().partition(":")
    if not sep or not access_key or not signature:
        raise e.InvalidArgument("AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
                                ArgumentName="Authorization", ArgumentValue=header[:200])
    return access_key, signature


def _parse_date(text: str) -> datetime | None:
    """An HTTP date (what V2 clients send in Date and x-amz-date), or the SigV4
    form some send in x-amz-date; None if neither."""
    parsed = parse_http_date(text)
    if parsed is not None:
        return parsed
    try:
        return datetime.strptime(text.strip(), _AMZ_DATE).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _check_skew(text: str, now: datetime, max_skew: timedelta) -> datetime:
    when = _parse_date(text)
    if when is None:
        raise e.AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    check_skew(text, when, now, max_skew)
    return when


def _dated_headers(
    headers: HeaderMap, now: datetime, max_skew: timedelta
) -> tuple[datetime, list[tuple[str, str]]]:
    """(the request time, the (Date line, CanonicalizedAmzHeaders) pairs to try).

    x-amz-date, when sent, is the request time. The AWS document's rule then
    signs an empty Date line (s3cmd does); its DELETE example signs the
    x-amz-date value as the Date line instead, without an x-amz-date header
    line; botocore signs the Date header, which is tried only when it too is
    within the skew."""
    amz_date = headers.get("x-amz-date")
    date = headers.get("date")
    if amz_date is None:
        if date is None:
            raise e.AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
        return _check_skew(date, now, max_skew), [(date.strip(), canonical_amz_headers(headers))]
    when = _check_skew(amz_date, now, max_skew)
    amz = canonical_amz_headers(headers)
    pairs = [("", amz), (amz_date.strip(), canonical_amz_headers(headers, without_date=True))]
    date_when = _parse_date(date) if date is not None else None
    if date is not None and date_when is not None and abs(now - date_when) <= max_skew:
        pairs.append((date.strip(), amz))
    return when, pairs


def authenticate_header(
    req: RequestView, header: str, lookup: CredentialLookup, now: datetime, max_skew: timedelta
) -> AuthResult:
    access_key, signature = parse_header(header)
    when, dated_headers = _dated_headers(req.headers, now, max_skew)
    payload = _payload_hash(req.headers)
    cred = _lookup(lookup, access_key)
    _verify(cred.secret_key, signature, req.method, (req.headers.get("content-md5") or "").strip(),
            (req.headers.get("content-type") or "").strip(), dated_headers, _resources(req))
    return AuthResult(cred, payload, b"", "", when.strftime(_AMZ_DATE), "", presigned=False)


# --- query auth ------------------------------------------------------------------------

def authenticate_query(
    req: RequestView, lookup: CredentialLookup, now: datetime, max_skew: timedelta
) -> AuthResult:
    params: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for raw_k, raw_v in _raw_pairs(req.raw_query):
        k, v = _decode(raw_k), _decode(raw_v or "")
        params.setdefault(k, v)
        if k.lower().startswith("x-amz-"):
            extra.append((k, v))
    if any(name not in params for name in QUERY_AUTH_PARAMS):
        raise e.AccessDenied("Query-string authentication requires the Signature, Expires and "
                             "AWSAccessKeyId parameters")
    expires = _check_expires(params["Expires"], now, max_skew)
    payload = _payload_hash(req.headers)
    cred = _lookup(lookup, params["AWSAccessKeyId"])
    # botocore moves the signed Content-Type/Content-MD5 into the query; a sent
    # header is what the request carries, so it wins.
    content_md5 = req.headers.get("content-md5") or params.get("content-md5", "")
    content_type = req.headers.get("content-type") or params.get("content-type", "")
    _verify(cred.secret_key, params["Signature"], req.method, content_md5.strip(), content_type.strip(),
            [(params["Expires"], canonical_amz_headers(req.headers, extra))], _resources(req))
    return AuthResult(cred, payload, b"", "", expires.strftime(_AMZ_DATE), "", presigned=True)


def _check_expires(text: str, now: datetime, max_skew: timedelta) -> datetime:
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_EXPIRES_DIGITS):
        raise e.AccessDenied(f"Invalid date (should be seconds since epoch): {text[:40]}")
    seconds, now_seconds = int(text), now.timestamp()
    # Our SigV4 rule: a presigned URL lives at most a week (plus clock skew,
    # since the client's clock set Expires).
    if seconds - now_seconds > MAX_PRESIGNED_EXPIRES + max_skew.total_seconds():
        raise e.AuthorizationQueryParametersError(
            "Expires must be less than a week (in seconds) that is 604800 from now")
    expires = datetime.fromtimestamp(seconds, timezone.utc)
    if now_seconds > seconds:
        raise e.AccessDenied("Request has expired", Expires=expires.strftime(_ISO),
                             ServerTime=now.strftime(_ISO))
    return expires
