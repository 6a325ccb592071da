"""Raw HTTP to a real node for hostile-input tests: requests signed with
botocore's SigV4 signer (or not signed at all), sent with http.client or a bare
socket with a short timeout so that a hang fails the test instead of stalling it."""

from __future__ import annotations

import hashlib
import http.client
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY

TIMEOUT = 15.0
UNSIGNED = "UNSIGNED-PAYLOAD"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def error(self) -> dict[str, str]:
        """The fields of an S3 error document; fails if the body is not one."""
        root = ET.fromstring(self.body)
        assert root.tag == "Error", self.body[:500]
        return {child.tag: child.text or "" for child in root}

    @property
    def code(self) -> str | None:
        """The S3 error code, None for an empty body (HEAD, success)."""
        return self.error()["Code"] if self.body else None


def sign_headers(endpoint: str, method: str, path_qs: str, headers: dict[str, str] | None = None,
                 body: bytes = b"", payload: str | None = None) -> dict[str, str]:
    """Headers (Host, X-Amz-Date, X-Amz-Content-SHA256, Authorization) for a
    request whose path and query are sent exactly as given."""
    req = AWSRequest(method=method, url=endpoint + path_qs, headers=dict(headers or {}), data=body)
    req.headers["X-Amz-Content-SHA256"] = payload or hashlib.sha256(body).hexdigest()
    auth = _PresetPayloadAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION)
    auth.add_auth(req)
    out = {"Host": urlsplit(endpoint).netloc}
    out.update(req.headers.items())
    return out


class _PresetPayloadAuth(S3SigV4Auth):
    """Keeps the caller's x-amz-content-sha256 (e.g. UNSIGNED-PAYLOAD) instead of hashing."""

    def _modify_request_before_signing(self, request):
        preset = request.headers.get("X-Amz-Content-SHA256")
        super()._modify_request_before_signing(request)
        if preset is not None:
            del request.headers["X-Amz-Content-SHA256"]
            request.headers["X-Amz-Content-SHA256"] = preset

    def payload(self, request):
        return request.headers.get("X-Amz-Content-SHA256") or super().payload(request)


def request(endpoint: str, method: str, path_qs: str, headers: dict[str, str] | None = None,
            body: bytes = b"", *, sign: bool = True, timeout: float = TIMEOUT,
            payload: str | None = None) -> Reply:
    """One request over a fresh connection, signed unless `sign` is false; the
    path and query go out verbatim."""
    headers = dict(headers or {})
    if sign:
        headers = sign_headers(endpoint, method, path_qs, headers, body, payload)
    if "content-length" not in {k.lower() for k in headers} and (body or method in ("PUT", "POST")):
        headers["Content-Length"] = str(len(body))
    return send(endpoint, method, path_qs, list(headers.items()), body, timeout=timeout)


def send(endpoint: str, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"",
         *, timeout: float = TIMEOUT) -> Reply:
    """Exactly these headers (plus Host, and Content-Length for a body, when
    missing), nothing else; the target goes out verbatim."""
    u = urlsplit(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        names = {k.lower() for k, _ in headers}
        if "host" not in names:
            conn.putheader("Host", u.netloc)
        for k, v in headers:
            conn.putheader(k, v)
        if body and "content-length" not in names and "transfer-encoding" not in names:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def raw_exchange(endpoint: str, data: bytes, *, timeout: float = TIMEOUT, close_write: bool = False) -> bytes:
    """Send raw bytes on a socket and read until the server closes or the
    response is complete; a server that hangs makes this raise socket.timeout."""
    u = urlsplit(endpoint)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        s.sendall(data)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        return read_response(s)


def read_response(s: socket.socket) -> bytes:
    """Bytes of one HTTP response (headers + Content-Length body), or up to EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        return buf
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def parse_raw(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def assert_s3_error(reply: Reply, status: int, code: str | None = None) -> dict[str, str]:
    """An S3 error document with Code, Message, RequestId and the request id header."""
    assert reply.status == status, (reply.status, reply.body[:500])
    rid = reply.header("x-amz-request-id")
    assert rid, dict(reply.headers)
    fields = reply.error()
    assert fields.get("Message") is not None and "Code" in fields, fields
    assert fields.get("RequestId") == rid, (fields, rid)
    if code is not None:
        assert fields["Code"] == code, fields
    return fields
