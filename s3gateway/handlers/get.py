"""GetObject and HeadObject: conditional, ranged, zero-copy where possible."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, BinaryIO

from aiohttp import web

from backends.filesystem import pread_all
from meshd.errors import StorageUnavailable
from meshd.transfers import ObjectBody
from s3gateway import errors as e
from s3gateway.context import RequestContext
from s3gateway.headers import (
    apply_response_overrides,
    conditions,
    object_headers,
    parse_range,
)

if TYPE_CHECKING:
    from backends.base import FileRegion


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
    await send_body(ctx.request, resp, body)
    return resp


def _checksum_mode(ctx: RequestContext) -> bool:
    return ctx.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"


def _part_number_check(ctx: RequestContext, parts_count: int | None) -> None:
    pn = ctx.query.get("partNumber")
    if pn is None:
        return
    if pn != "1" or parts_count not in (None, 1):
        raise e.NotImplemented_("GET by part number is only supported for partNumber=1 of single-part objects.")


# A local body up to this size is read whole in one thread hop and sent with the
# headers: for small objects that costs about half of open, sendfile, close.
SMALL_BODY_BYTES = 64 * 1024


async def send_body(request: web.Request, resp: web.StreamResponse, body: ObjectBody) -> None:
    """Stream the object: sendfile from a local plain file, else chunk by chunk."""
    region = body.file_region
    if region is not None and region.length <= SMALL_BODY_BYTES:
        data = await _read_region(region)
        await resp.prepare(request)
        await resp.write_eof(data)
        return
    if region is not None and request.transport is not None:
        try:
            f = await asyncio.to_thread(_open_region, region)
        except OSError as exc:
            raise StorageUnavailable(f"cannot open blob: {exc.strerror}") from None
        try:
            await resp.prepare(request)  # a StreamResponse sends its headers here
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("client went away")
            try:
                sent = await _sendfile(transport, f, region)
            except NotImplementedError:
                await _copy_chunks(resp, body)
            else:
                if sent != region.length:
                    # The file ends early (damaged on disk): fail, so the
                    # connection is cut instead of the client waiting forever.
                    raise StorageUnavailable(f"blob {region.path.name} is shorter than recorded")
        finally:
            # Closing a file opened for reading never waits on the disk: no thread hop.
            f.close()
        await resp.write_eof()
        return
    # The first piece before the headers: a blob that fails to open (missing,
    # damaged header, wrong size) then answers an S3 error instead of a cut body.
    chunks = aiter(body.chunks)
    first = await anext(chunks, b"")
    await resp.prepare(request)
    if first:
        await resp.write(first)
    async for chunk in chunks:
        await resp.write(chunk)
    await resp.write_eof()


async def _copy_chunks(resp: web.StreamResponse, body: ObjectBody) -> None:
    async for chunk in body.chunks:
        await resp.write(chunk)


async def _read_region(region: FileRegion) -> bytes:
    try:
        data = await asyncio.to_thread(_read_region_sync, region)
    except OSError as exc:
        raise StorageUnavailable(f"cannot read blob: {exc.strerror}") from None
    if len(data) != region.length:
        raise StorageUnavailable(f"blob {region.path.name} is shorter than recorded")
    return data


async def _sendfile(transport: asyncio.Transport, f: BinaryIO, region: FileRegion) -> int:
    loop = asyncio.get_running_loop()
    if region.expect is None:
        return await loop.sendfile(transport, f, region.offset, region.length)
    # A file that is not the node's own may change while it is sent: send all
    # but the last byte, check, then the last one. A change cuts the body one
    # byte short, so the client never gets mixed bytes as a complete object.
    head = region.length - 1
    sent = await loop.sendfile(transport, f, region.offset, head) if head else 0
    if sent != head:
        return sent
    _check_unchanged(f.fileno(), region)
    return sent + await loop.sendfile(transport, f, region.offset + head, 1)


def _open_region(region: FileRegion) -> BinaryIO:
    f = open(region.path, "rb", buffering=0)
    try:
        _check_unchanged(f.fileno(), region)
    except BaseException:
        f.close()
        raise
    return f


def _check_unchanged(fd: int, region: FileRegion) -> None:
    """For files that are not the node's own: still the size and mtime recorded?"""
    if region.expect is None:
        return
    st = os.fstat(fd)
    if (st.st_size, st.st_mtime_ns) != region.expect:
        raise StorageUnavailable(f"{region.path.name} changed on disk; try again after a rescan")


def _read_region_sync(region: FileRegion) -> bytes:
    with _open_region(region) as f:
        data = pread_all(f.fileno(), region.offset, region.length)
        _check_unchanged(f.fileno(), region)
    return data
