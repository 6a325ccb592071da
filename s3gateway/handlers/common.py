"""Small helpers shared by handler modules."""

from __future__ import annotations

from aiohttp import web

from s3gateway import errors as e
from s3gateway.body import read_small_body
from s3gateway.context import RequestContext
from s3gateway.xml import parse, render


def xml_response(root: str, body: dict, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=render(root, body), content_type="application/xml",
                        headers=headers)


async def read_xml(ctx: RequestContext, root: str) -> dict:
    data = await read_small_body(ctx.request, ctx.auth, ctx.settings.max_xml_body_bytes)
    if not data.strip():
        raise e.MalformedXML()
    return parse(data, root)


def owner(ctx: RequestContext) -> dict[str, str]:
    return {"ID": ctx.caller.owner_id, "DisplayName": ctx.caller.display_name}


INT32_MAX = 2**31 - 1


def int_param(ctx: RequestContext, name: str, default: int, maximum: int) -> int:
    raw = ctx.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise e.InvalidArgument(f"Provided {name} not an integer or within integer range",
                                ArgumentName=name, ArgumentValue=raw) from None
    if value > INT32_MAX:  # S3 parses these as 32-bit integers
        raise e.InvalidArgument(f"Provided {name} not an integer or within integer range",
                                ArgumentName=name, ArgumentValue=raw)
    if value < 0:
        raise e.InvalidArgument(f"Argument {name} must be an integer between 0 and 2147483647",
                                ArgumentName=name, ArgumentValue=raw)
    return min(value, maximum)


def no_body_expected(ctx: RequestContext) -> None:
    """Operations without a request body."""
    length = ctx.request.content_length
    if length:
        raise e.UnexpectedContent()
