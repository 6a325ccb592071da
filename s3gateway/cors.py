"""Bucket CORS: the configuration document, preflight (OPTIONS) answers, and
headers on actual cross-origin requests."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from aiohttp import web

from meshd.errors import BucketNotFound
from meshd.objects import ObjectService
from s3gateway import errors as e
from s3gateway.router import Endpoint
from s3gateway.xml import as_list, parse, text

ALLOWED_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "HEAD"})
MAX_RULES = 100


@dataclass(frozen=True)
class CorsRule:
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None

    def matches(self, origin: str, method: str, request_headers: list[str]) -> bool:
        if method not in self.methods:
            return False
        if not any(fnmatch.fnmatchcase(origin, o) for o in self.origins):
            return False
        allowed = [h.lower() for h in self.headers]
        return all(any(fnmatch.fnmatchcase(h.lower(), a) for a in allowed) for h in request_headers)

    def response_headers(self, origin: str, request_headers: list[str]) -> dict[str, str]:
        h = {
            "Access-Control-Allow-Origin": "*" if self.origins == ("*",) else origin,
            "Access-Control-Allow-Methods": ", ".join(self.methods),
            "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        }
        if request_headers:
            h["Access-Control-Allow-Headers"] = ", ".join(request_headers)
        if self.expose:
            h["Access-Control-Expose-Headers"] = ", ".join(self.expose)
        if self.max_age is not None:
            h["Access-Control-Max-Age"] = str(self.max_age)
        if self.origins != ("*",):
            h["Access-Control-Allow-Credentials"] = "true"
        return h


def parse_cors(document: bytes) -> list[CorsRule]:
    """Validate a CORSConfiguration document; MalformedXML or InvalidRequest."""
    root = parse(document, "CORSConfiguration")
    rules = []
    raw_rules = as_list(root.get("CORSRule"))
    if not raw_rules or len(raw_rules) > MAX_RULES:
        raise e.MalformedXML()
    for r in raw_rules:
        if not isinstance(r, dict):
            raise e.MalformedXML()
        origins = tuple(text(o) for o in as_list(r.get("AllowedOrigin")))
        methods = tuple(text(m) for m in as_list(r.get("AllowedMethod")))
        if not origins or not methods:
            raise e.MalformedXML()
        for m in methods:
            if m not in ALLOWED_METHODS:
                raise e.InvalidRequest(f"Found unsupported HTTP method in CORS config. Unsupported method is {m}")
        max_age = r.get("MaxAgeSeconds")
        if max_age is not None and not text(max_age).isdigit():
            raise e.MalformedXML()
        rules.append(CorsRule(
            origins, methods,
            tuple(text(h) for h in as_list(r.get("AllowedHeader"))),
            tuple(text(h) for h in as_list(r.get("ExposeHeader"))),
            int(text(max_age)) if max_age is not None else None,
        ))
    return rules


async def _rules(service: ObjectService, bucket: str) -> list[CorsRule]:
    rec = await service.get_bucket(bucket)
    return parse_cors(rec.cors) if rec.cors else []


def _requested_headers(request: web.Request) -> list[str]:
    raw = request.headers.get("Access-Control-Request-Headers", "")
    return [h.strip() for h in raw.split(",") if h.strip()]


async def preflight(service: ObjectService, endpoint: Endpoint, request: web.Request) -> web.Response:
    origin = request.headers.get("Origin")
    method = request.headers.get("Access-Control-Request-Method")
    if not origin or not method:
        raise e.InvalidRequest("Insufficient information. Origin request header needed.")
    assert endpoint.bucket is not None
    try:
        rules = await _rules(service, endpoint.bucket)
    except BucketNotFound:
        rules = []
    wanted = _requested_headers(request)
    for rule in rules:
        if rule.matches(origin, method, wanted):
            return web.Response(status=200, headers=rule.response_headers(origin, wanted))
    raise e.AccessForbidden("CORSResponse: This CORS request is not allowed. This is usually because the "
                         "evalution of Origin, request method / Access-Control-Request-Method or "
                         "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")


async def attach_actual_request_headers(service: ObjectService, bucket: str, request: web.Request) -> None:
    """Remember the CORS headers for a cross-origin request; the error middleware
    adds them to whatever the response turns out to be."""
    try:
        rules = await _rules(service, bucket)
    except BucketNotFound:
        return
    origin = request.headers["Origin"]
    for rule in rules:
        if rule.matches(origin, request.method, []):
            h = rule.response_headers(origin, [])
            h.pop("Access-Control-Max-Age", None)
            request["cors_headers"] = h
            return
