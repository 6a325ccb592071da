"""GetObject and HeadObject: conditional, ranged, zero-copy where possible."""

from __future__ import annotations

from typing import BinaryIO

from aiohttp import web

from s3gateway import errors as e
from s3gateway.context import RequestContext
from s3gateway.sendfile import send_file
from s3gateway.headers import (
    apply_response_overrides,
    conditions,
    object_headers,
    parse_range,
)


async def head_object(ctx: RequestContext) -> web.Response:
    v = await ctx.service.head_object(ctx.bucket, ctx.key, ctx.endpoint.version_id, conditions(ctx.headers))
    h = object_headers(v, checksum_mode=_checksum_mode(ctx))
    rng = parse_range(ctx.headers.get("Range"), v.size)
    _part_number_check(ctx, v.parts_count)
    apply_response_overrides(h, ctx.query)
    if rng is not None:
        h["Content-Range"] = f"bytes {rng.start}-{rng.end}/{v.size}"
        h["Content-Length"] = str(rng.length)
        return web.Response(status=206, headers=h)
    h["Content-Length"] = str(v.size)
    return web.Response(status=200, headers=h)


async def get_object(ctx: RequestContext) -> web.StreamResponse:
    v = await ctx.service.head_object(ctx.bucket, ctx.key, ctx.endpoint.version_id, conditions(ctx.headers))
    _part_number_check(ctx, v.parts_count)
    rng = parse_range(ctx.headers.get("Range"), v.size)
    body = await ctx.service.open_object(v, rng)
    h = object_headers(v, checksum_mode=_checksum_mode(ctx) and rng is None)
    apply_response_overrides(h, ctx.query)
    resp = web.StreamResponse(status=206 if rng else 200, headers=h)
    if rng is not None:
        resp.headers["Content-Range"] = f"bytes {rng.start}-{rng.end}/{v.size}"
    resp.content_length = body.length
    await body.send(ResponseSink(ctx.request, resp))
    return resp


def _checksum_mode(ctx: RequestContext) -> bool:
    return ctx.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"


def _part_number_check(ctx: RequestContext, parts_count: int | None) -> None:
    pn = ctx.query.get("partNumber")
    if pn is None:
        return
    if pn != "1" or parts_count not in (None, 1):
        raise e.NotImplemented_("GET by part number is only supported for partNumber=1 of single-part objects.")


class ResponseSink:
    """A GET's response as the body's `Sink` (meshd/bodies.py): the node
    decides what to send and how; this only knows the HTTP response."""

    def __init__(self, request: web.Request, resp: web.StreamResponse) -> None:
        self._request = request
        self._resp = resp

    async def start(self) -> None:
        await self._resp.prepare(self._request)  # a StreamResponse sends its headers here

    async def write(self, data: bytes) -> None:
        await self._resp.write(data)

    async def sendfile(self, f: BinaryIO, offset: int, count: int) -> int:
        transport = self._request.transport
        if transport is None:
            raise NotImplementedError("no transport to send a file on")
        return await send_file(transport, f, offset, count)

    async def finish(self, data: bytes = b"") -> None:
        if not self._resp.prepared:
            await self._resp.prepare(self._request)
        await self._resp.write_eof(data)
