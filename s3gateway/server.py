"""The HTTP server under the S3 app.

aiohttp answers requests it cannot parse (a 20 KiB header, too many headers, a
garbage request line) itself, before any middleware runs, with a plain-text
page. S3 clients expect an error document, so the protocol handler is replaced
by one whose `handle_error` renders the same S3 XML as the app's middleware.
aiohttp has no public hook for this; the subclasses below are the smallest
seam (Server.__call__ builds the per-connection RequestHandler).
"""

from __future__ import annotations

import logging

from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from s3gateway import errors as e
from s3gateway.app import error_response, new_request_id

log = logging.getLogger("meshd.s3")


def protocol_error(status: int, exc: BaseException | None) -> e.S3Error:
    """The S3 error for a request aiohttp rejected before routing. The client's
    bytes are never echoed back."""
    if isinstance(exc, hx.LineTooLong) or (
        isinstance(exc, hx.BadHttpMessage) and "too many headers" in str(exc).lower()
    ):
        return e.RequestHeaderSectionTooLarge()
    if isinstance(exc, hx.BadHttpMethod):
        return e.MethodNotAllowed()
    if isinstance(exc, hx.HttpProcessingError) or status < 500:
        err: e.S3Error = e.InvalidRequest("The request could not be parsed as HTTP/1.1.")
        err.status = status if 400 <= status < 500 else 400
        return err
    return e.InternalError()


class S3RequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response went out already (and was logged where it
            # failed): the connection is unusable; aiohttp closes it on this.
            raise ConnectionError("response already started; cannot send an error document")
        request_id = new_request_id()
        if status >= 500:
            log.error("unhandled error (request %s)", request_id, exc_info=exc)
        else:
            log.debug("unparseable request from %s (request %s): %s", request.remote, request_id, exc)
        resp = error_response(protocol_error(status, exc), request, request_id)  # type: ignore[arg-type]
        resp.headers["Server"] = "meshd"
        resp.force_close()
        return resp


class S3Server(web.Server):
    def __call__(self) -> RequestHandler:
        return S3RequestHandler(self, loop=self._loop, **self._kwargs)


class S3AppRunner(web.AppRunner):
    """An AppRunner whose connections use `S3RequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return S3Server(
            server.request_handler, request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs,
        )
