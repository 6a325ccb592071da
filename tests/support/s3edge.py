"""Raw, SigV4-signed HTTP requests to a meshd node, for what boto3 hides or refuses to send
(invalid bucket names, malformed XML, odd headers, exact status lines and bodies)."""

from __future__ import annotations

import hashlib
import http.client
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def error_code(self) -> str | None:
        """The <Code> of an S3 error document, or None."""
        if not self.body:
            return None
        root = ET.fromstring(self.body)
        code = root.find("Code")
        return code.text if code is not None else None


def signed_request(
    endpoint: str,
    method: str,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    sign: bool = True,
) -> RawResponse:
    """Send one request; `path` and `query` go on the wire exactly as given (already encoded)."""
    url = endpoint.rstrip("/") + path + (f"?{query}" if query else "")
    hdrs = dict(headers or {})
    if sign:
        hdrs.setdefault("x-amz-content-sha256", hashlib.sha256(body).hexdigest())
        req = AWSRequest(method=method, url=url, data=body, headers=hdrs)
        S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(req)
        hdrs = dict(req.headers.items())
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path + (f"?{query}" if query else ""), skip_accept_encoding=True)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        if body or method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def bytes_signed_request(
    endpoint: str, method: str, path: str,
    headers: dict[str, bytes] | list[tuple[str, bytes]], body: bytes = b"",
) -> RawResponse:
    """Like `signed_request`, but header values are raw bytes (a list may repeat a
    name) and the signature is computed over exactly those bytes (botocore can only
    sign text headers)."""
    import hmac
    from datetime import datetime, timezone

    parts = urlsplit(endpoint)
    now = datetime.now(timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest().encode()
    pairs = [(k.lower(), v) for k, v in (headers.items() if isinstance(headers, dict) else headers)]
    pairs += [("host", parts.netloc.encode()), ("x-amz-date", amz_date.encode()),
              ("x-amz-content-sha256", payload)]
    joined: dict[str, list[bytes]] = {}
    for k, v in pairs:
        joined.setdefault(k, []).append(v.strip())
    names = sorted(joined)
    canonical = b"\n".join([
        method.encode(), path.encode(), b"",
        b"".join(n.encode() + b":" + b",".join(joined[n]) + b"\n" for n in names),
        ";".join(names).encode(), payload,
    ])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical).hexdigest()])
    key = f"AWS4{SECRET_KEY}".encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    pairs.append(("authorization", (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}").encode()))
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in pairs:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()
