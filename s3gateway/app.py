"""The S3 HTTP application: one catch-all route, parsed into an `Endpoint`,
authenticated, dispatched to a handler; every failure rendered as an S3 error
document in one middleware."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import Awaitable, Callable

from aiohttp import web

from meshd.errors import MeshdError, StorageError
from meshd.objects import ObjectService
from s3gateway import cors
from s3gateway import errors as e
from registry_client.identity import CredentialLookup
from s3gateway.auth.sigv4 import RequestView, authenticate
from s3gateway.context import GatewaySettings, RequestContext
from s3gateway.handlers import HANDLERS
from s3gateway.router import (
    parse_endpoint,
    parse_query,
    split_path,
    virtual_host_bucket,
)
from s3gateway.xml import render, xml_safe

log = logging.getLogger("meshd.s3")

SERVICE_KEY = web.AppKey("service", ObjectService)
CREDENTIALS_KEY = web.AppKey("credentials", object)
SETTINGS_KEY = web.AppKey("settings", GatewaySettings)
CLOCK_KEY = web.AppKey("clock", object)


class RequestIds:
    """Unique request ids without a syscall per request: a random prefix per
    process and a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4).upper()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):08X}"


new_request_id = RequestIds()


def error_response(err: e.S3Error, request: web.Request, request_id: str) -> web.Response:
    headers = {"x-amz-request-id": request_id, **err.headers}
    if err.status == 304:
        return web.Response(status=304, headers=headers)
    fields = {"Code": err.code, "Message": err.message}
    fields.update(err.fields)
    if "Resource" not in fields:
        fields["Resource"] = request.path
    fields["RequestId"] = request_id
    body = render("Error", {k: xml_safe(str(v)) for k, v in fields.items()}, namespace=False)
    if request.method == "HEAD":
        return web.Response(status=err.status, headers=headers)
    return web.Response(status=err.status, body=body, content_type="application/xml", headers=headers)


@web.middleware
async def s3_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    request_id = new_request_id()
    request["request_id"] = request_id
    started = time.monotonic()
    try:
        resp = await _call(handler, request, request_id)
    except ResponseCutOff:
        raise
    except e.S3Error as err:
        resp = error_response(err, request, request_id)
    except MeshdError as err:
        if isinstance(err, StorageError):
            log.warning("%s %s failed (request %s): %s", request.method, request.path, request_id, err)
        resp = error_response(e.from_domain(err), request, request_id)
    except asyncio.CancelledError:
        raise
    except web.HTTPException as exc:  # raised by aiohttp itself (e.g. body too large)
        resp = error_response(_from_http_exception(exc, request.method), request, request_id)
    except Exception:
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request_id)
        resp = error_response(e.InternalError(), request, request_id)
    if request.get("expects_continue") and not request.get("continue_sent") and not resp.prepared:
        # Answered before asking for the body: the client never sends it, so
        # the connection cannot carry another request (as S3: Connection: close).
        resp.force_close()
    settings: GatewaySettings = request.app[SETTINGS_KEY]
    if settings.access_log:
        log.info("%s %s %s %.1fms %s", request.method, request.path, resp.status,
                 (time.monotonic() - started) * 1000, request_id)
    return resp


class ResponseCutOff(ConnectionResetError):
    """A response failed after its headers went out; the connection was closed."""


async def _call(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], request: web.Request, request_id: str
) -> web.StreamResponse:
    """Run the handler. A failure after the response has started (a GET whose
    blob breaks mid-stream, a client that resets) cannot be answered with an
    error document, which would land inside the body: the connection is closed
    instead, so the client sees a body shorter than its Content-Length rather
    than waiting for bytes that will never come."""
    try:
        return await handler(request)
    except Exception as exc:
        if request.writer.output_size == 0:
            raise
        if isinstance(exc, ConnectionError):
            log.debug("client went away during %s %s (request %s)", request.method, request.path, request_id)
        elif isinstance(exc, MeshdError):  # a known failure (damaged or unreachable blob): no traceback
            log.warning("%s %s cut off after the response started (request %s): %s",
                        request.method, request.path, request_id, exc)
        else:
            log.exception("failed after the response started: %s %s (request %s)",
                          request.method, request.path, request_id)
        if request.transport is not None:
            request.transport.close()
        raise ResponseCutOff() from exc


async def _finish_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Headers every response carries, added as it is sent: a streamed GET is sent
    from inside its handler, before the middleware ever sees it."""
    request_id = request.get("request_id")
    if request_id:
        resp.headers.setdefault("x-amz-request-id", request_id)
    resp.headers["Server"] = "meshd"  # aiohttp has set its own default by now
    if "Origin" in request.headers and "cors_headers" in request:
        resp.headers.update(request["cors_headers"])


def _from_http_exception(exc: web.HTTPException, method: str) -> e.S3Error:
    if exc.status == 413:
        return e.EntityTooLarge()
    if exc.status == 411:
        return e.MissingContentLength()
    if exc.status == 404:
        # The one route matches every origin-form path: a miss means a request
        # target such as "*" or CONNECT's "host:port".
        return e.MethodNotAllowed() if method == "CONNECT" else e.InvalidURI()
    err = e.InvalidRequest(exc.reason)
    err.status = exc.status
    return err


async def dispatch(request: web.Request) -> web.StreamResponse:
    settings: GatewaySettings = request.app[SETTINGS_KEY]
    raw_path, _, raw_query = request.raw_path.partition("?")
    bucket, key = split_path(raw_path, request.headers.get("Host", ""), settings.virtual_host_domains)
    pairs = parse_query(raw_query)
    query = dict(pairs)
    service: ObjectService = request.app[SERVICE_KEY]
    if request.method == "OPTIONS" and bucket:  # CORS preflight: never signed
        endpoint = parse_endpoint(request.method, bucket, key, query, request.headers)
        return await cors.preflight(service, endpoint, request)
    now = request.app[CLOCK_KEY]()
    view = RequestView(request.method, raw_path, raw_query, request.headers,
                       virtual_host_bucket(request.headers.get("Host", ""), settings.virtual_host_domains))
    auth = authenticate(view, request.app[CREDENTIALS_KEY], settings.region, now, settings.max_clock_skew)
    if auth is None:
        raise e.AccessDenied()
    endpoint = parse_endpoint(request.method, bucket, key, query, request.headers)
    if request.get("expects_continue"):
        # Only now, signature checked and request understood, ask for the body.
        await _send_continue(request)
    if bucket is not None and "Origin" in request.headers:
        await cors.attach_actual_request_headers(service, bucket, request)
    ctx = RequestContext(request, endpoint, auth, service, settings, request["request_id"])
    handler = HANDLERS.get(endpoint.op)
    if handler is None:
        raise e.NotImplemented_(f"{endpoint.op.value} is not implemented.")
    return await handler(ctx)


async def expect_continue(request: web.Request) -> None:
    """`Expect: 100-continue` is answered by `dispatch` once the request is
    authenticated, so a refused client never sends its body; any other
    expectation is ignored, as S3 does. (aiohttp's default answers at once, and
    answers other expectations with a plain-text 417 from outside the middleware.)"""
    if request.version >= (1, 1) and request.headers.get("Expect", "").strip().lower() == "100-continue":
        request["expects_continue"] = True


async def _send_continue(request: web.Request) -> None:
    request["continue_sent"] = True
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the real response has not started yet


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def make_app(
    service: ObjectService,
    credentials: CredentialLookup,
    settings: GatewaySettings,
    clock: Callable[[], datetime] = _utc_now,
) -> web.Application:
    app = web.Application(middlewares=[s3_errors], client_max_size=0)
    app[SERVICE_KEY] = service
    app[CREDENTIALS_KEY] = credentials
    app[SETTINGS_KEY] = settings
    app[CLOCK_KEY] = clock
    # [\s\S]: keys may hold a newline, which "." would not match (a 404 before dispatch).
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch, expect_handler=expect_continue)
    app.on_response_prepare.append(_finish_headers)
    return app
