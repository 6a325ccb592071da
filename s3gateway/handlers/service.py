"""ListBuckets."""

from __future__ import annotations

from aiohttp import web

from s3gateway.context import RequestContext
from s3gateway.handlers.common import owner, xml_response
from s3gateway.xml import iso8601


async def list_buckets(ctx: RequestContext) -> web.Response:
    buckets = await ctx.service.list_buckets()
    return xml_response("ListAllMyBucketsResult", {
        "Owner": owner(ctx),
        "Buckets": {"Bucket": [
            {"Name": b.name, "CreationDate": iso8601(b.created_ms), "BucketRegion": ctx.settings.region}
            for b in buckets
        ]} if buckets else None,
    })
