"""Multipart uploads: create, upload part (and part copy), complete, abort, list."""

from __future__ import annotations

import re

from aiohttp import web

from meshd.digests import CHECKSUM_ALGORITHMS
from meshd.transfers import ByteRange, CompletedPart, Expected
from s3gateway import errors as e
from s3gateway.body import declared_checksums, request_body
from s3gateway.context import RequestContext
from s3gateway.handlers.common import int_param, owner, read_xml, xml_response
from s3gateway.handlers.put import (
    copy_source,
    reject_conditional_write,
    require_length,
    write_condition,
)
from s3gateway.headers import new_object_from_headers, url_encode_key
from s3gateway.router import parse_part_number
from s3gateway.xml import as_list, iso8601, text

_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


async def create_multipart_upload(ctx: RequestContext) -> web.Response:
    new = new_object_from_headers(ctx.headers)
    _, algorithms = declared_checksums(ctx.headers)
    upload = await ctx.service.uploads.create(
        ctx.bucket, ctx.key, ctx.caller.owner_id, new, algorithms[0] if algorithms else None
    )
    headers = {}
    if upload.checksum_algorithm:
        headers["x-amz-checksum-algorithm"] = upload.checksum_algorithm.upper()
        headers["x-amz-checksum-type"] = "COMPOSITE"
    return xml_response("InitiateMultipartUploadResult", {
        "Bucket": ctx.bucket, "Key": ctx.key, "UploadId": upload.upload_id,
    }, headers=headers)


async def upload_part(ctx: RequestContext) -> web.Response:
    reject_conditional_write(ctx)
    require_length(ctx)
    part_number = ctx.endpoint.part_number
    upload = await ctx.service.uploads.get(ctx.bucket, ctx.key, ctx.endpoint.upload_id)
    body, expected = request_body(ctx.request, ctx.auth, ctx.settings.body_read_timeout)
    part = await ctx.service.uploads.upload_part(upload, part_number, body, expected)
    headers = {"ETag": part.etag}
    for algo, value in part.checksums.items():
        headers[f"x-amz-checksum-{algo}"] = value
    return web.Response(status=200, headers=headers)


async def upload_part_copy(ctx: RequestContext) -> web.Response:
    part_number = ctx.endpoint.part_number
    upload = await ctx.service.uploads.get(ctx.bucket, ctx.key, ctx.endpoint.upload_id)
    src = await copy_source(ctx)
    rng = None
    raw_range = ctx.headers.get("x-amz-copy-source-range")
    if raw_range is not None:
        m = _COPY_RANGE.match(raw_range.strip())
        if not m:
            raise e.InvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last "
                                    "where first and last are the zero-based offsets of the first and last bytes to copy",
                                    ArgumentName="x-amz-copy-source-range", ArgumentValue=raw_range)
        first, last = int(m.group(1)), int(m.group(2))
        if first > last or last >= src.size:
            raise e.InvalidRange(ActualObjectSize=str(src.size))
        rng = ByteRange(first, last - first + 1)
    body = await ctx.service.open_object(src, rng)
    part = await ctx.service.uploads.upload_part(upload, part_number, body.chunks, Expected())
    result = {"ETag": part.etag, "LastModified": iso8601(part.last_modified_ms)}
    for algo, value in part.checksums.items():
        result[f"Checksum{algo.upper()}"] = value
    return xml_response("CopyPartResult", result, headers={"x-amz-copy-source-version-id": src.version_id})


async def complete_multipart_upload(ctx: RequestContext) -> web.Response:
    condition = write_condition(ctx)
    upload = await ctx.service.uploads.get(ctx.bucket, ctx.key, ctx.endpoint.upload_id)
    doc = await read_xml(ctx, "CompleteMultipartUpload")
    requested = []
    for p in as_list(doc.get("Part")):
        if not isinstance(p, dict) or "PartNumber" not in p or "ETag" not in p:
            raise e.MalformedXML()
        checksums = {algo: text(p[f"Checksum{algo.upper()}"])
                     for algo in CHECKSUM_ALGORITHMS if f"Checksum{algo.upper()}" in p}
        number = text(p["PartNumber"]).strip()
        if not number.isdigit():  # not an xs:int: the document fails the schema
            raise e.MalformedXML()
        requested.append(CompletedPart(parse_part_number(number), text(p["ETag"]), checksums))
    if not requested:  # S3 treats a part list without parts as a schema violation
        raise e.MalformedXML()
    v = await ctx.service.uploads.complete(upload, requested, condition)
    host = ctx.request.headers.get("Host", "")
    result = {
        "Location": f"http://{host}/{ctx.bucket}/{url_encode_key(ctx.key)}",
        "Bucket": ctx.bucket, "Key": ctx.key, "ETag": v.etag,
    }
    for algo, value in v.checksums.items():
        result[f"Checksum{algo.upper()}"] = value
        result["ChecksumType"] = "COMPOSITE"
    return xml_response("CompleteMultipartUploadResult", result, headers={"x-amz-version-id": v.version_id})


async def abort_multipart_upload(ctx: RequestContext) -> web.Response:
    upload = await ctx.service.uploads.get(ctx.bucket, ctx.key, ctx.endpoint.upload_id)
    await ctx.service.uploads.abort(upload)
    return web.Response(status=204)


async def list_parts(ctx: RequestContext) -> web.Response:
    upload = await ctx.service.uploads.get(ctx.bucket, ctx.key, ctx.endpoint.upload_id)
    max_parts = int_param(ctx, "max-parts", 1000, 1000)
    marker = int_param(ctx, "part-number-marker", 0, 10000)
    page = await ctx.service.uploads.list_parts(upload, marker, max_parts)
    body: dict = {
        "Bucket": ctx.bucket, "Key": ctx.key, "UploadId": upload.upload_id,
        "Initiator": owner(ctx), "Owner": owner(ctx), "StorageClass": "STANDARD",
        "PartNumberMarker": str(marker),
    }
    if page.next_part_number_marker is not None:
        body["NextPartNumberMarker"] = str(page.next_part_number_marker)
    body["MaxParts"] = str(max_parts)
    body["IsTruncated"] = "true" if page.is_truncated else "false"
    if upload.checksum_algorithm:
        body["ChecksumAlgorithm"] = upload.checksum_algorithm.upper()
    parts = []
    for p in page.parts:
        entry = {"PartNumber": str(p.part_number), "LastModified": iso8601(p.last_modified_ms),
                 "ETag": p.etag, "Size": str(p.size)}
        for algo, value in p.checksums.items():
            entry[f"Checksum{algo.upper()}"] = value
        parts.append(entry)
    if parts:
        body["Part"] = parts
    return xml_response("ListPartsResult", body)


async def list_multipart_uploads(ctx: RequestContext) -> web.Response:
    prefix = ctx.query.get("prefix", "")
    delimiter = ctx.query.get("delimiter", "")
    key_marker = ctx.query.get("key-marker", "")
    upload_id_marker = ctx.query.get("upload-id-marker", "")
    max_uploads = int_param(ctx, "max-uploads", 1000, 1000)
    encode = ctx.query.get("encoding-type") == "url"
    enc = url_encode_key if encode else (lambda s: s)
    page = await ctx.service.uploads.list(
        ctx.bucket, prefix, delimiter, key_marker or None, upload_id_marker or None, max_uploads
    )
    body: dict = {"Bucket": ctx.bucket, "KeyMarker": enc(key_marker), "UploadIdMarker": upload_id_marker}
    if page.is_truncated:
        body["NextKeyMarker"] = enc(page.next_key_marker or "")
        body["NextUploadIdMarker"] = page.next_upload_id_marker or ""
    if delimiter:
        body["Delimiter"] = enc(delimiter)
    body["Prefix"] = enc(prefix)
    body["MaxUploads"] = str(max_uploads)
    if encode:
        body["EncodingType"] = "url"
    body["IsTruncated"] = "true" if page.is_truncated else "false"
    uploads = [{
        "Key": enc(u.key), "UploadId": u.upload_id, "Initiator": owner(ctx), "Owner": owner(ctx),
        "StorageClass": "STANDARD", "Initiated": iso8601(u.initiated_ms),
    } for u in page.uploads]
    if uploads:
        body["Upload"] = uploads
    if page.common_prefixes:
        body["CommonPrefixes"] = [{"Prefix": enc(p)} for p in page.common_prefixes]
    return xml_response("ListMultipartUploadsResult", body)
