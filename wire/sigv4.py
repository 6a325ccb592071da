"""AWS Signature Version 4 primitives: key derivation, the string to sign, the
HMAC and AWS's URI encoding.

The bottom of both sides of the protocol: the s3 backend signs its requests to
a remote bucket with these, and the S3 edge (`s3gateway.auth.sigv4`) verifies
clients' requests with the same functions.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def uri_encode(text: str | bytes, *, keep_slash: bool) -> str:
    """AWS's URI encoding: unreserved characters kept, the rest %XX upper-case."""
    return quote(text, safe="-_.~/" if keep_slash else "-_.~")


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    # Header bytes that are not UTF-8 arrive as surrogate escapes: sign the bytes as sent.
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return "\n".join((ALGORITHM, amz_date, scope, digest))


@lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
