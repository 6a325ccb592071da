"""Bucket operations: create, delete, head, location, versioning, CORS, ACL."""

from __future__ import annotations

from aiohttp import web

from s3gateway import errors as e
from s3gateway.body import read_small_body
from s3gateway.context import RequestContext
from s3gateway.cors import parse_cors
from s3gateway.handlers.common import no_body_expected, owner, read_xml, xml_response
from s3gateway.xml import parse, text


async def create_bucket(ctx: RequestContext) -> web.Response:
    data = await read_small_body(ctx.request, ctx.auth, ctx.settings.max_xml_body_bytes)
    if data.strip():
        conf = parse(data, "CreateBucketConfiguration")
        location = text(conf.get("LocationConstraint")) if "LocationConstraint" in conf else ""
        if location and location != ctx.settings.region:
            raise e.InvalidLocationConstraint(
                f"The specified location-constraint is not valid; this node serves {ctx.settings.region}.")
    if ctx.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true":
        raise e.NotImplemented_("Object lock is not implemented.")
    await ctx.service.create_bucket(ctx.bucket, ctx.caller.owner_id)
    return web.Response(status=200, headers={"Location": f"/{ctx.bucket}"})


async def delete_bucket(ctx: RequestContext) -> web.Response:
    no_body_expected(ctx)
    await ctx.service.delete_bucket(ctx.bucket)
    return web.Response(status=204)


async def head_bucket(ctx: RequestContext) -> web.Response:
    await ctx.service.get_bucket(ctx.bucket)
    return web.Response(status=200, headers={"x-amz-bucket-region": ctx.settings.region})


async def get_bucket_location(ctx: RequestContext) -> web.Response:
    await ctx.service.get_bucket(ctx.bucket)
    # us-east-1 is reported as an empty LocationConstraint, as S3 does.
    region = "" if ctx.settings.region == "us-east-1" else ctx.settings.region
    return xml_response("LocationConstraint", {"#text": region} if region else {})


async def get_bucket_versioning(ctx: RequestContext) -> web.Response:
    await ctx.service.get_bucket(ctx.bucket)
    # Objects are immutable: every bucket is versioned, always.
    return xml_response("VersioningConfiguration", {"Status": "Enabled"})


async def put_bucket_versioning(ctx: RequestContext) -> web.Response:
    doc = await read_xml(ctx, "VersioningConfiguration")
    await ctx.service.get_bucket(ctx.bucket)
    status = text(doc.get("Status")) if "Status" in doc else ""
    if status not in ("", "Enabled"):
        raise e.NotImplemented_("Versioning cannot be suspended: meshd objects are immutable and versioned.")
    return web.Response(status=200)


async def get_bucket_cors(ctx: RequestContext) -> web.Response:
    rec = await ctx.service.get_bucket(ctx.bucket)
    if not rec.cors:
        raise e.NoSuchCORSConfiguration(BucketName=ctx.bucket)
    return web.Response(status=200, body=rec.cors, content_type="application/xml")


async def put_bucket_cors(ctx: RequestContext) -> web.Response:
    data = await read_small_body(ctx.request, ctx.auth, 64 * 1024)
    parse_cors(data)
    await ctx.service.set_bucket_cors(ctx.bucket, data)
    return web.Response(status=200)


async def delete_bucket_cors(ctx: RequestContext) -> web.Response:
    await ctx.service.set_bucket_cors(ctx.bucket, None)
    return web.Response(status=204)


async def get_acl(ctx: RequestContext) -> web.Response:
    """A fixed owner-full-control ACL: permissions live in the registry, not in ACLs."""
    if ctx.endpoint.key is not None:
        await ctx.service.head_object(ctx.bucket, ctx.key, ctx.endpoint.version_id)
    else:
        await ctx.service.get_bucket(ctx.bucket)
    o = owner(ctx)
    return xml_response("AccessControlPolicy", {
        "Owner": o,
        "AccessControlList": {"Grant": {
            "Grantee": {"@xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                        "@xsi:type": "CanonicalUser", **o},
            "Permission": "FULL_CONTROL",
        }},
    })
