"""Sign requests with botocore's Signature Version 2 signers (`HmacV1Auth` for
the Authorization header, `HmacV1QueryAuth` for presigned URLs), the reference
implementation for meshd's SigV2 verifier."""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlsplit

from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence

from tests.support.signing import Signed


def sign_v2(
    method: str,
    endpoint: str,
    path: str,
    query: Sequence[tuple[str, str]] | str = (),
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    access_key: str,
    secret_key: str,
    auth_path: str | None = None,
    presign_expires: int | None = None,
) -> Signed:
    """Sign `method endpoint+path?query`. `query` is pairs (percent-encoded as
    botocore does) or an already-encoded string. `auth_path` is what botocore
    signs for virtual-host style ("/bucket" + path). `presign_expires` makes a
    presigned URL instead of an Authorization header."""
    url = endpoint.rstrip("/") + path
    encoded = query if isinstance(query, str) else percent_encode_sequence(list(query))
    if encoded:
        url += "?" + encoded
    creds = Credentials(access_key, secret_key)
    req = AWSRequest(method=method, url=url, data=body)
    req.auth_path = auth_path
    for name, value in headers:
        req.headers[name] = value
    if presign_expires is not None:
        HmacV1QueryAuth(creds, expires=presign_expires).add_auth(req)
    else:
        HmacV1Auth(creds).add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    # A client following a presigned URL sends the URL alone: the signed headers
    # are in its query (and the signer's Date is its Expires).
    out = [] if presign_expires is not None else list(req.headers.items())
    if body and not any(k.lower() == "content-length" for k, _ in out):
        out.append(("Content-Length", str(len(body))))
    if not any(k.lower() == "host" for k, _ in out):
        out.insert(0, ("Host", parts.netloc))
    return Signed(method, target, out, body)
