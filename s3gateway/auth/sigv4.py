"""AWS Signature Version 4 verification, for the Authorization header and for
presigned query strings.

`canonical_request` and `string_to_sign` are pure functions over a
`RequestView`, property-tested against botocore's signer. Signatures are compared
with `hmac.compare_digest`. Streaming (aws-chunked) payloads are verified chunk
by chunk in `s3gateway.auth.chunked`, seeded with `AuthResult.seed_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Protocol, Sequence
from urllib.parse import unquote, unquote_to_bytes

from wire.sigv4 import (
    ALGORITHM,
    UNSIGNED_PAYLOAD,
    sign,
    signing_key,
    string_to_sign,
    uri_encode,
)
from registry_client.identity import Credential, CredentialLookup
from s3gateway import errors as e
from s3gateway.headers import parse_http_date

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGNED_EXPIRES = 7 * 24 * 3600
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SPACES = re.compile(r"\s+")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AMZ_UNSIGNED_OK = frozenset({"x-amz-date", "x-amz-content-sha256"})


class HeaderMap(Protocol):
    def getall(self, key: str, default: list[str] = ...) -> list[str]: ...
    def get(self, key: str, default: str | None = None) -> str | None: ...
    def __contains__(self, key: object) -> bool: ...
    def keys(self) -> Iterable[str]: ...


@dataclass(frozen=True)
class RequestView:
    """What signing covers: method, raw (still-encoded) path, raw query pairs, headers."""

    method: str
    raw_path: str
    raw_query: str
    headers: HeaderMap
    # The bucket a virtual-host-style Host header names: SigV2 signs "/bucket" + path.
    virtual_bucket: str | None = None


@dataclass(frozen=True)
class AuthResult:
    credential: Credential
    payload_hash: str  # x-amz-content-sha256 (or UNSIGNED-PAYLOAD)
    signing_key: bytes
    scope: str  # date/region/s3/aws4_request
    amz_date: str
    seed_signature: str
    presigned: bool


def _reencode(raw: str, *, keep_slash: bool) -> str:
    # Decode to bytes, not text: a %XX sequence that is not UTF-8 must come
    # back as the same %XX, not as U+FFFD.
    return uri_encode(unquote_to_bytes(raw.encode("utf-8", "surrogateescape")), keep_slash=keep_slash)


def canonical_uri(raw_path: str) -> str:
    return _reencode(raw_path, keep_slash=True)


def canonical_query(raw_query: str, exclude: str | None = None) -> str:
    pairs = []
    for item in raw_query.split("&") if raw_query else ():
        if not item:
            continue
        k, _, v = item.partition("=")
        if exclude is not None and unquote(k) == exclude:
            continue
        pairs.append((_reencode(k, keep_slash=False), _reencode(v, keep_slash=False)))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_headers(headers: HeaderMap, signed: Sequence[str]) -> str:
    lines = []
    for name in signed:
        values = headers.getall(name, [])
        if not values and name != "host":
            raise e.SignatureDoesNotMatch(f"Signed header {name} is missing from the request.")
        lines.append(f"{name}:{','.join(_SPACES.sub(' ', v.strip()) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    req: RequestView, signed_headers: Sequence[str], payload_hash: str, *,
    path: str | None = None, exclude_query: str | None = None,
) -> str:
    return "\n".join((
        req.method,
        path if path is not None else canonical_uri(req.raw_path),
        canonical_query(req.raw_query, exclude_query),
        canonical_headers(req.headers, signed_headers),
        ";".join(signed_headers),
        payload_hash,
    ))


@dataclass(frozen=True)
class _Parsed:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: list[str]
    signature: str


def _parse_credential(cred: str, err: type[e.S3Error]) -> tuple[str, str, str, str]:
    parts = cred.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise err("The credential is malformed; expecting "
                  "\"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
    return parts[0], parts[1], parts[2], parts[3]


def parse_authorization(header: str) -> _Parsed:
    if header.startswith("AWS "):
        raise e.InvalidRequest("The authorization mechanism you have provided is not supported. "
                               "Please use AWS4-HMAC-SHA256.")
    algo, _, rest = header.partition(" ")
    if algo != ALGORITHM:
        raise e.AuthorizationHeaderMalformed(f"Unsupported authorization algorithm {algo[:40]!r}.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep:
            raise e.AuthorizationHeaderMalformed()
        fields[k] = v
    try:
        cred, signed, sig = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError as missing:
        raise e.AuthorizationHeaderMalformed(f"The authorization header is missing {missing.args[0]}.") from None
    ak, date, region, service = _parse_credential(cred, e.AuthorizationHeaderMalformed)
    return _Parsed(ak, date, region, service, _signed_list(signed), sig)


def _signed_list(signed: str) -> list[str]:
    names = [h.strip().lower() for h in signed.split(";") if h.strip()]
    if "host" not in names:
        raise e.AccessDenied("The host header must be signed.")
    return names


def _parse_amz_date(text: str, err: type[e.S3Error]) -> datetime:
    try:
        return datetime.strptime(text, _AMZ_DATE).replace(tzinfo=timezone.utc)
    except (ValueError, TypeError):
        raise err("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"") from None


def check_skew(request_time: str, when: datetime, now: datetime, max_skew: timedelta) -> None:
    """RequestTimeTooSkewed unless the request's time is within the allowed skew."""
    if abs(now - when) > max_skew:
        raise e.RequestTimeTooSkewed(RequestTime=request_time, ServerTime=now.strftime(_AMZ_DATE),
                                     MaxAllowedSkewMilliseconds=str(int(max_skew.total_seconds() * 1000)))


def authenticate(
    req: RequestView,
    lookup: CredentialLookup,
    region: str,
    now: datetime,
    max_skew: timedelta,
) -> AuthResult | None:
    """Verify the request's signature (SigV2 ones in `s3gateway.auth.sigv2`). None
    for an anonymous request; an S3Error for any malformed, unknown, expired or
    wrong signature."""
    from s3gateway.auth import sigv2  # builds on this module's types

    header = req.headers.get("authorization")
    presigned = "X-Amz-Signature=" in req.raw_query or "X-Amz-Credential=" in req.raw_query
    presigned_v2 = sigv2.is_v2_query(req.raw_query)
    if sum((header is not None, presigned, presigned_v2)) > 1:
        raise e.InvalidArgument("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                                "Signature query string parameter or the Authorization header should be specified",
                                ArgumentName="Authorization")
    if header is not None and sigv2.is_v2_header(header):
        return sigv2.authenticate_header(req, header, lookup, now, max_skew)
    if header is not None:
        return _authenticate_header(req, header, lookup, region, now, max_skew)
    if presigned:
        return _authenticate_presigned(req, lookup, region, now, max_skew)
    if presigned_v2:
        return sigv2.authenticate_query(req, lookup, now, max_skew)
    return None


def _authenticate_header(
    req: RequestView, header: str, lookup: CredentialLookup, region: str, now: datetime,
    max_skew: timedelta,
) -> AuthResult:
    p = parse_authorization(header)
    amz_date_text = req.headers.get("x-amz-date")
    if amz_date_text is not None:
        when = _parse_amz_date(amz_date_text, e.AccessDenied)
    else:
        date_header = req.headers.get("date")
        parsed = parse_http_date(date_header) if date_header else None
        if parsed is None:
            raise e.AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
        # RFC 2822 "-0000" parses as a naive datetime; it still means UTC.
        when = parsed.astimezone(timezone.utc) if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        amz_date_text = when.strftime(_AMZ_DATE)
    check_skew(amz_date_text, when, now, max_skew)
    _check_scope(p, when, region, e.AuthorizationHeaderMalformed)
    payload = req.headers.get("x-amz-content-sha256")
    if payload is None:
        raise e.InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    if payload not in (UNSIGNED_PAYLOAD, *STREAMING_MODES) and not _HEX64.match(payload):
        raise e.InvalidArgument("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                                "STREAMING-* or a hex SHA-256 digest.")
    cred = _lookup(lookup, p.access_key)
    scope = f"{p.date}/{p.region}/{p.service}/aws4_request"
    key = signing_key(cred.secret_key, p.date, p.region, p.service)
    _check_signature(req, p.signed_headers, payload, key, amz_date_text, scope, p.signature, None)
    return AuthResult(cred, payload, key, scope, amz_date_text, p.signature, presigned=False)


def _authenticate_presigned(
    req: RequestView, lookup: CredentialLookup, region: str, now: datetime, max_skew: timedelta
) -> AuthResult:
    q: dict[str, str] = {}
    for item in req.raw_query.split("&"):
        k, _, v = item.partition("=")
        q[unquote(k)] = unquote(v)
    err = e.AuthorizationQueryParametersError
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders",
                 "X-Amz-Signature", "X-Amz-Expires"):
        if name not in q:
            raise err(f"Query-string authentication version 4 requires the X-Amz-Algorithm, "
                      f"X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
                      f"and X-Amz-Expires parameters; {name} is missing.")
    if q["X-Amz-Algorithm"] != ALGORITHM:
        raise err("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    ak, date, reg, service = _parse_credential(q["X-Amz-Credential"], err)
    p = _Parsed(ak, date, reg, service, _signed_list(q["X-Amz-SignedHeaders"]), q["X-Amz-Signature"])
    when = _parse_amz_date(q["X-Amz-Date"], err)
    expires_text = q["X-Amz-Expires"]
    if not (expires_text.isascii() and expires_text.isdigit()):
        raise err("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires > MAX_PRESIGNED_EXPIRES:
        raise err("X-Amz-Expires must be less than a week (in seconds) that is 604800")
    if when - now > max_skew:
        raise e.AccessDenied("Request is not valid yet")
    if now > when + timedelta(seconds=expires):
        raise e.AccessDenied("Request has expired", Expires=(when + timedelta(seconds=expires)).strftime(_AMZ_DATE),
                             ServerTime=now.strftime(_AMZ_DATE))
    _check_scope(p, when, region, err)
    cred = _lookup(lookup, p.access_key)
    scope = f"{p.date}/{p.region}/{p.service}/aws4_request"
    key = signing_key(cred.secret_key, p.date, p.region, p.service)
    payload = q.get("X-Amz-Content-Sha256") or req.headers.get("x-amz-content-sha256") or UNSIGNED_PAYLOAD
    signed_payload = q.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)
    _check_signature(req, p.signed_headers, signed_payload, key, q["X-Amz-Date"], scope, p.signature,
                     "X-Amz-Signature")
    return AuthResult(cred, payload, key, scope, q["X-Amz-Date"], p.signature, presigned=True)


def _check_scope(p: _Parsed, when: datetime, region: str, err: type[e.S3Error]) -> None:
    if p.date != when.strftime("%Y%m%d"):
        raise err(f"Invalid credential date \"{p.date}\". This date is not the same as X-Amz-Date: "
                  f"\"{when.strftime('%Y%m%d')}\".")
    if p.region != region:
        raise err(f"The authorization header is malformed; the region '{p.region}' is wrong; "
                  f"expecting '{region}'", Region=region)
    if p.service != "s3":
        raise err(f"The authorization header is malformed; incorrect service \"{p.service}\". "
                  "This endpoint belongs to \"s3\".")


def _lookup(lookup: CredentialLookup, access_key: str) -> Credential:
    cred = lookup.get(access_key)
    if cred is None:
        raise e.InvalidAccessKeyId(AWSAccessKeyId=access_key)
    return cred


def _check_amz_headers_signed(headers: HeaderMap, signed_headers: list[str]) -> None:
    """Every x-amz-* header must be signed, as S3 requires: otherwise one could
    be added in transit, or to a presigned URL (x-amz-copy-source turns a
    presigned PUT into a copy of anything the signer can read). Two are exempt:
    with header auth the signature covers them anyway (the date is in the
    string to sign, the payload hash ends the canonical request); a presigned
    URL ignores the date header, and a payload hash only adds a body check."""
    signed = set(signed_headers)
    unsigned = sorted({k.lower() for k in headers.keys() if k.lower().startswith("x-amz-")}
                      - signed - _AMZ_UNSIGNED_OK)
    if unsigned:
        raise e.AccessDenied("There were headers present in the request which were not signed",
                             HeadersNotSigned=", ".join(unsigned))


def _check_signature(
    req: RequestView, signed_headers: list[str], payload: str, key: bytes, amz_date: str,
    scope: str, given: str, exclude_query: str | None,
) -> None:
    _check_amz_headers_signed(req.headers, signed_headers)
    if not _HEX64.match(given):
        raise e.SignatureDoesNotMatch()
    # Clients encode the path the AWS way, so re-encoding the decoded path gives
    # what they signed; a client that signed its raw path differently still
    # verifies through the second candidate.
    candidates = [canonical_uri(req.raw_path)]
    if req.raw_path != candidates[0]:
        candidates.append(req.raw_path)
    for path in candidates:
        canonical = canonical_request(req, signed_headers, payload, path=path, exclude_query=exclude_query)
        expected = sign(key, string_to_sign(amz_date, scope, canonical))
        if hmac.compare_digest(expected.encode(), given.encode()):
            return
    raise e.SignatureDoesNotMatch()
