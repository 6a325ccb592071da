"""ListObjects (V1), ListObjectsV2 and ListObjectVersions."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from meshd.model import VersionRecord
from meshd.errors import InvalidVersionId
from meshd.names import validate_version_id
from s3gateway import errors as e
from s3gateway.context import RequestContext
from s3gateway.handlers.common import int_param, owner
from s3gateway.headers import url_encode_key
from s3gateway.xml import iso8601, render

MAX_KEYS = 1000


class _Encoder:
    """Applies encoding-type=url to keys and prefixes in the response."""

    def __init__(self, ctx: RequestContext) -> None:
        et = ctx.query.get("encoding-type")
        if et not in (None, "url"):
            raise e.InvalidArgument("Invalid Encoding Method specified in Request",
                                    ArgumentName="encoding-type", ArgumentValue=et or "")
        self.active = et == "url"

    def __call__(self, s: str) -> str:
        return url_encode_key(s) if self.active else s


def _common(ctx: RequestContext) -> tuple[str, str, int, _Encoder]:
    prefix = ctx.query.get("prefix", "")
    delimiter = ctx.query.get("delimiter", "")
    max_keys = int_param(ctx, "max-keys", MAX_KEYS, MAX_KEYS)
    return prefix, delimiter, max_keys, _Encoder(ctx)


def _listing_response(root: str, body: dict) -> web.Response:
    return web.Response(body=render(root, body), content_type="application/xml")


def _content(v: VersionRecord, enc: _Encoder, owner_element: dict | None) -> dict:
    c: dict = {
        "Key": enc(v.key),
        "LastModified": iso8601(v.last_modified_ms),
        "ETag": v.etag,
        "Size": str(v.size),
        "StorageClass": "STANDARD",
    }
    if v.checksums:
        c["ChecksumAlgorithm"] = [a.upper() for a in v.checksums]
    if owner_element is not None:
        c["Owner"] = owner_element
    return c


def _add_paging(body: dict, max_keys: int, delimiter: str, enc: _Encoder, truncated: bool) -> None:
    body["MaxKeys"] = str(max_keys)
    if delimiter:
        body["Delimiter"] = enc(delimiter)
    if enc.active:
        body["EncodingType"] = "url"
    body["IsTruncated"] = "true" if truncated else "false"


def _base(ctx: RequestContext, prefix: str, delimiter: str, max_keys: int, enc: _Encoder) -> dict:
    body: dict = {"Name": ctx.bucket, "Prefix": enc(prefix)}
    return body


async def list_objects_v1(ctx: RequestContext) -> web.Response:
    prefix, delimiter, max_keys, enc = _common(ctx)
    marker = ctx.query.get("marker", "")
    page = await ctx.service.list_objects(ctx.bucket, prefix, delimiter, marker or None, max_keys)
    body = _base(ctx, prefix, delimiter, max_keys, enc)
    body["Marker"] = enc(marker)
    if page.is_truncated and page.next_marker is not None:
        body["NextMarker"] = enc(page.next_marker)
    _add_paging(body, max_keys, delimiter, enc, page.is_truncated)
    if page.versions:
        who = owner(ctx)
        body["Contents"] = [_content(v, enc, who) for v in page.versions]
    if page.common_prefixes:
        body["CommonPrefixes"] = [{"Prefix": enc(p)} for p in page.common_prefixes]
    return _listing_response("ListBucketResult", body)


# A continuation token is opaque to clients: a format byte and the last key or
# common prefix of the page, in URL-safe base64. The format byte makes a token
# from elsewhere (or a bare base64 string) fail loudly instead of listing from
# some arbitrary key.
_TOKEN_FORMAT = b"\x01"


def _encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(_TOKEN_FORMAT + key.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        raw = base64.b64decode(token.encode(), altchars=b"-_", validate=True)
        if raw[:1] != _TOKEN_FORMAT:
            raise ValueError("unknown token format")
        return raw[1:].decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise e.InvalidArgument("The continuation token provided is incorrect",
                                ArgumentName="continuation-token") from None


async def list_objects_v2(ctx: RequestContext) -> web.Response:
    prefix, delimiter, max_keys, enc = _common(ctx)
    token = ctx.query.get("continuation-token")
    start_after = ctx.query.get("start-after", "")
    if token is not None:
        if not token:
            raise e.InvalidArgument("The continuation token provided is incorrect",
                                    ArgumentName="continuation-token")
        after: str | None = _decode_token(token)
    else:
        after = start_after or None
    fetch_owner = ctx.query.get("fetch-owner", "false").lower() == "true"
    page = await ctx.service.list_objects(ctx.bucket, prefix, delimiter, after, max_keys)
    body = _base(ctx, prefix, delimiter, max_keys, enc)
    if delimiter:
        body["Delimiter"] = enc(delimiter)
    body["MaxKeys"] = str(max_keys)
    if enc.active:
        body["EncodingType"] = "url"
    body["KeyCount"] = str(len(page.versions) + len(page.common_prefixes))
    body["IsTruncated"] = "true" if page.is_truncated else "false"
    if token is not None:
        body["ContinuationToken"] = token
    if page.is_truncated and page.next_marker is not None:
        body["NextContinuationToken"] = _encode_token(page.next_marker)
    if start_after:
        body["StartAfter"] = enc(start_after)
    if page.versions:
        who = owner(ctx) if fetch_owner else None
        body["Contents"] = [_content(v, enc, who) for v in page.versions]
    if page.common_prefixes:
        body["CommonPrefixes"] = [{"Prefix": enc(p)} for p in page.common_prefixes]
    return _listing_response("ListBucketResult", body)


async def list_object_versions(ctx: RequestContext) -> web.Response:
    prefix, delimiter, max_keys, enc = _common(ctx)
    key_marker = ctx.query.get("key-marker", "")
    version_marker = ctx.query.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise e.InvalidArgument("A version-id marker cannot be specified without a key marker.",
                                ArgumentName="version-id-marker", ArgumentValue=version_marker)
    if version_marker == "null":
        version_marker = ""
    if version_marker:
        try:
            validate_version_id(version_marker)
        except InvalidVersionId:
            raise e.InvalidArgument("Invalid version id specified", ArgumentName="version-id-marker",
                                    ArgumentValue=version_marker[:100]) from None
    page = await ctx.service.list_versions(
        ctx.bucket, prefix, delimiter, key_marker or None, version_marker or None, max_keys
    )
    body = _base(ctx, prefix, delimiter, max_keys, enc)
    body["KeyMarker"] = enc(key_marker)
    body["VersionIdMarker"] = version_marker
    if page.is_truncated:
        if page.next_key_marker is not None:
            body["NextKeyMarker"] = enc(page.next_key_marker)
        if page.next_version_id_marker is not None:
            body["NextVersionIdMarker"] = page.next_version_id_marker
    _add_paging(body, max_keys, delimiter, enc, page.is_truncated)
    versions, markers = [], []
    who = owner(ctx)
    for lv in page.versions:
        v = lv.version
        entry = {"Key": enc(v.key), "VersionId": v.version_id,
                 "IsLatest": "true" if lv.is_latest else "false",
                 "LastModified": iso8601(v.last_modified_ms)}
        if v.delete_marker:
            entry["Owner"] = who
            markers.append(entry)
        else:
            entry.update({"ETag": v.etag, "Size": str(v.size), "StorageClass": "STANDARD",
                          "Owner": who})
            if v.checksums:
                entry["ChecksumAlgorithm"] = [a.upper() for a in v.checksums]
            versions.append(entry)
    if versions:
        body["Version"] = versions
    if markers:
        body["DeleteMarker"] = markers
    if page.common_prefixes:
        body["CommonPrefixes"] = [{"Prefix": enc(p)} for p in page.common_prefixes]
    return _listing_response("ListVersionsResult", body)
