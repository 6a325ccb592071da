"""What every S3 handler receives: the request, its endpoint, the caller and the
object service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

from meshd.objects import ObjectService
from registry_client.identity import Credential
from s3gateway.auth.sigv4 import AuthResult
from s3gateway.router import Endpoint


@dataclass(frozen=True)
class GatewaySettings:
    region: str = "us-east-1"
    virtual_host_domains: tuple[str, ...] = ("localhost",)
    max_clock_skew: timedelta = timedelta(minutes=15)
    max_xml_body_bytes: int = 2 * 1024 * 1024
    body_read_timeout: float = 120.0
    access_log: bool = False


@dataclass(frozen=True)
class RequestContext:
    request: web.Request
    endpoint: Endpoint
    auth: AuthResult
    service: ObjectService
    settings: GatewaySettings
    request_id: str

    @property
    def caller(self) -> Credential:
        return self.auth.credential

    @property
    def bucket(self) -> str:
        assert self.endpoint.bucket is not None
        return self.endpoint.bucket

    @property
    def key(self) -> str:
        assert self.endpoint.key is not None
        return self.endpoint.key

    @property
    def query(self) -> dict[str, str]:
        return self.endpoint.query

    @property
    def headers(self):
        return self.request.headers
