"""Object tags (the labels of the data model): get, put, delete."""

from __future__ import annotations

from aiohttp import web

from s3gateway import errors as e
from s3gateway.context import RequestContext
from s3gateway.handlers.common import read_xml, xml_response
from s3gateway.headers import validate_tags
from s3gateway.xml import as_list, text


async def get_object_tagging(ctx: RequestContext) -> web.Response:
    v = await ctx.service.get_version(ctx.bucket, ctx.key, ctx.endpoint.version_id)
    tags = [{"Key": k, "Value": val} for k, val in v.tags.items()]
    return xml_response("Tagging", {"TagSet": {"Tag": tags} if tags else None},
                        headers={"x-amz-version-id": v.version_id})


async def put_object_tagging(ctx: RequestContext) -> web.Response:
    doc = await read_xml(ctx, "Tagging")
    tag_set = doc.get("TagSet")
    if isinstance(tag_set, str) and not tag_set.strip():  # <TagSet> </TagSet>: no tags
        tag_set = None
    if tag_set is not None and not isinstance(tag_set, dict):
        raise e.MalformedXML()
    pairs = []
    for t in as_list((tag_set or {}).get("Tag")):
        if not isinstance(t, dict) or "Key" not in t:
            raise e.MalformedXML()
        pairs.append((text(t["Key"], exact=True), text(t.get("Value"), exact=True)))
    v = await ctx.service.set_tags(ctx.bucket, ctx.key, ctx.endpoint.version_id, validate_tags(pairs))
    return web.Response(status=200, headers={"x-amz-version-id": v.version_id})


async def delete_object_tagging(ctx: RequestContext) -> web.Response:
    v = await ctx.service.set_tags(ctx.bucket, ctx.key, ctx.endpoint.version_id, {})
    return web.Response(status=204, headers={"x-amz-version-id": v.version_id})
