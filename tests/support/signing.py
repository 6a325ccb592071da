"""Sign arbitrary requests with botocore's own signers (the reference
implementation), for tests that send what boto3's operations never would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.utils import percent_encode, percent_encode_sequence


class _FixedPayloadAuth(S3SigV4Auth):
    """Header auth with a chosen x-amz-content-sha256 (e.g. a STREAMING-* mode)."""

    def __init__(self, credentials, service, region, payload: str) -> None:
        super().__init__(credentials, service, region)
        self._payload = payload

    def payload(self, request) -> str:
        return self._payload


@dataclass(frozen=True)
class Signed:
    method: str
    target: str  # raw path + "?" + raw query, exactly as sent on the wire
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def raw_path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def raw_query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def wire_path(bucket: str, key: str | None = None) -> str:
    """The path botocore's serializer puts on the wire for a bucket/key."""
    path = "/" + percent_encode(bucket, safe="/~")
    if key is not None:
        path += "/" + percent_encode(key, safe="/~")
    return path


def sign(
    method: str,
    endpoint: str,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    access_key: str,
    secret_key: str,
    region: str,
    payload: str | None = None,
    unsigned_payload: bool = False,
    presign_expires: int | None = None,
) -> Signed:
    """Sign `method endpoint+path?query` with botocore. `payload` fixes
    x-amz-content-sha256; `unsigned_payload` makes it UNSIGNED-PAYLOAD (as
    botocore does over https); `presign_expires` makes a presigned URL instead."""
    url = endpoint.rstrip("/") + path
    if query:
        url += "?" + percent_encode_sequence(list(query))
    creds = Credentials(access_key, secret_key)
    req = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        req.headers[name] = value  # HTTPHeaders: assignment appends, so repeats are kept
    if presign_expires is not None:
        S3SigV4QueryAuth(creds, "s3", region, expires=presign_expires).add_auth(req)
    elif payload is not None:
        _FixedPayloadAuth(creds, "s3", region, payload).add_auth(req)
    else:
        if unsigned_payload:
            req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
        S3SigV4Auth(creds, "s3", region).add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    # req.headers, not prepared.headers: the latter is a dict and drops repeats.
    out = list(req.headers.items())
    if body and not any(k.lower() == "content-length" for k, _ in out):
        out.append(("Content-Length", str(len(body))))
    if not any(k.lower() == "host" for k, _ in out):
        out.insert(0, ("Host", parts.netloc))
    return Signed(method, target, out, body)
