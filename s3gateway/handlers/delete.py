"""DeleteObject and DeleteObjects (multi-object delete)."""

from __future__ import annotations

from aiohttp import web

from meshd.errors import MeshdError
from s3gateway import errors as e
from s3gateway.context import RequestContext
from s3gateway.handlers.common import read_xml, xml_response
from s3gateway.xml import as_list, text

MAX_DELETE_KEYS = 1000


async def delete_object(ctx: RequestContext) -> web.Response:
    result = await ctx.service.delete_object(ctx.bucket, ctx.key, ctx.endpoint.version_id)
    headers = {}
    if result.version_id:
        headers["x-amz-version-id"] = result.version_id
    if result.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    return web.Response(status=204, headers=headers)


def _target(obj: object) -> tuple[str, str | None]:
    """(key, version id) of one <Object> element."""
    if not isinstance(obj, dict) or "Key" not in obj:
        raise e.MalformedXML()
    key = text(obj["Key"], exact=True)
    version_id = text(obj["VersionId"]) if obj.get("VersionId") else None
    return key, (None if version_id == "null" else version_id)


async def delete_objects(ctx: RequestContext) -> web.Response:
    if "Content-MD5" not in ctx.headers and not any(
        h.lower().startswith("x-amz-checksum-") or h.lower() == "x-amz-sdk-checksum-algorithm"
        for h in ctx.headers
    ):
        raise e.InvalidRequest("Missing required header for this request: Content-MD5")
    doc = await read_xml(ctx, "Delete")
    quiet = text(doc.get("Quiet")).lower() == "true" if "Quiet" in doc else False
    objects = as_list(doc.get("Object"))
    if not objects or len(objects) > MAX_DELETE_KEYS:  # S3: 1 to 1000 keys
        raise e.MalformedXML()
    targets = [_target(obj) for obj in objects]  # the whole document is valid before any delete
    await ctx.service.get_bucket(ctx.bucket)
    deleted: list[dict] = []
    errors: list[dict] = []
    for key, version_id in targets:
        try:
            r = await ctx.service.delete_object(ctx.bucket, key, version_id)
        except MeshdError as exc:
            err = e.from_domain(exc)
            errors.append({"Key": key, **({"VersionId": version_id} if version_id else {}),
                           "Code": err.code, "Message": err.message})
            continue
        if quiet:
            continue
        entry: dict = {"Key": key}
        if version_id:
            entry["VersionId"] = version_id
        if r.delete_marker:
            entry["DeleteMarker"] = "true"
            entry["DeleteMarkerVersionId"] = r.version_id
        deleted.append(entry)
    body: dict = {}
    if deleted:
        body["Deleted"] = deleted
    if errors:
        body["Error"] = errors
    return xml_response("DeleteResult", body)
