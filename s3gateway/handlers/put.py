"""PutObject and CopyObject."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

from aiohttp import web

from meshd.catalog.records import VersionRecord
from meshd.conditions import WriteCondition, check_conditions
from meshd.errors import DeleteMarkerHit, PreconditionFailed
from meshd.transfers import NewObject
from s3gateway import errors as e
from s3gateway.body import declared_checksums, request_body
from s3gateway.context import RequestContext
from s3gateway.handlers.common import xml_response
from s3gateway.headers import conditions, new_object_from_headers, parse_tagging_header
from s3gateway.xml import iso8601


def write_condition(ctx: RequestContext) -> WriteCondition:
    """If-None-Match: * / If-Match: <etag> on PutObject and CompleteMultipartUpload."""
    none_match = ctx.headers.get("If-None-Match")
    if none_match is not None and none_match.strip() != "*":
        raise e.NotImplemented_("If-None-Match on a write accepts only '*'.")
    return WriteCondition(if_none_match=none_match is not None, if_match=ctx.headers.get("If-Match"))


def reject_conditional_write(ctx: RequestContext) -> None:
    """UploadPart takes no conditions (as in S3)."""
    if "If-None-Match" in ctx.headers or "If-Match" in ctx.headers:
        raise e.NotImplemented_("UploadPart does not support If-Match / If-None-Match.")


def require_length(ctx: RequestContext) -> None:
    if ctx.request.content_length is None and "x-amz-decoded-content-length" not in ctx.headers:
        raise e.MissingContentLength()


async def put_object(ctx: RequestContext) -> web.Response:
    condition = write_condition(ctx)
    require_length(ctx)
    new = new_object_from_headers(ctx.headers)
    body, expected = request_body(ctx.request, ctx.auth, ctx.settings.body_read_timeout)
    v = await ctx.service.put_object(ctx.bucket, ctx.key, body, new, expected, condition)
    headers = {"ETag": v.etag, "x-amz-version-id": v.version_id}
    for algo, value in v.checksums.items():
        headers[f"x-amz-checksum-{algo}"] = value
    return web.Response(status=200, headers=headers)


def parse_copy_source(header: str) -> tuple[str, str, str | None]:
    """`bucket/key[?versionId=...]`, URL-encoded, with or without a leading slash."""
    path, _, query = header.partition("?")
    try:
        # Non-UTF-8 header bytes arrive as surrogate escapes; %-escapes must decode as UTF-8.
        path.encode("utf-8")
        path = unquote(path, errors="strict").lstrip("/")
    except UnicodeError:
        raise e.InvalidArgument("Copy Source must be URL-encoded UTF-8.", ArgumentName="x-amz-copy-source") from None
    bucket, sep, key = path.partition("/")
    if not bucket or not sep or not key:
        raise e.InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                                ArgumentName="x-amz-copy-source")
    version_id = None
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k == "versionId":
            version_id = v if v not in ("", "null") else None
        else:
            raise e.InvalidArgument("Unsupported copy source parameter.", ArgumentName="x-amz-copy-source")
    return bucket, key, version_id


async def copy_source(ctx: RequestContext) -> VersionRecord:
    src_bucket, src_key, src_version = parse_copy_source(ctx.headers["x-amz-copy-source"])
    try:
        src = await ctx.service.get_version(src_bucket, src_key, src_version)
    except DeleteMarkerHit as exc:
        if not exc.addressed:
            raise
        raise e.InvalidRequest(
            "The source of a copy request may not specifically refer to a delete marker by version id.") from None
    cond = conditions(ctx.headers, "x-amz-copy-source-")
    if cond:
        try:
            check_conditions(src, cond, for_copy=True)
        except PreconditionFailed as exc:
            # S3 names the header that failed: <Condition>x-amz-copy-source-If-Match</Condition>.
            raise PreconditionFailed(f"x-amz-copy-source-{exc}") from None
    return src


async def copy_object(ctx: RequestContext) -> web.Response:
    if ctx.request.content_length:
        raise e.InvalidRequest("CopyObject does not take a request body.")
    src = await copy_source(ctx)
    directive = ctx.headers.get("x-amz-metadata-directive", "COPY").upper()
    tagging_directive = ctx.headers.get("x-amz-tagging-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE") or tagging_directive not in ("COPY", "REPLACE"):
        raise e.InvalidArgument("Unknown metadata or tagging directive.")
    new: NewObject | None = None
    if directive == "REPLACE":
        new = new_object_from_headers(ctx.headers)
    if tagging_directive == "REPLACE":
        base = new or NewObject(src.content_type, src.headers, src.user_meta, src.tags)
        tagging = ctx.headers.get("x-amz-tagging")
        new = NewObject(base.content_type, base.headers, base.user_meta,
                        parse_tagging_header(tagging) if tagging else {})
    elif new is not None:
        new = NewObject(new.content_type, new.headers, new.user_meta, src.tags)
    if (src.bucket, src.key) == (ctx.bucket, ctx.key) and new is None and ctx.endpoint.version_id is None:
        if "x-amz-copy-source" in ctx.headers and "versionId" not in ctx.headers["x-amz-copy-source"]:
            raise e.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without "
                "changing the object's metadata, storage class, website redirect location or encryption attributes.")
    _, algorithms = declared_checksums(ctx.headers)
    v = await ctx.service.copy_object(src, ctx.bucket, ctx.key, new, algorithms)
    result = {"ETag": v.etag, "LastModified": iso8601(v.last_modified_ms)}
    for algo, value in v.checksums.items():
        result[f"Checksum{algo.upper()}"] = value
    return xml_response("CopyObjectResult", result, headers={
        "x-amz-version-id": v.version_id, "x-amz-copy-source-version-id": src.version_id,
    })
