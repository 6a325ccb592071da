"""From method + host + path + query to one S3 operation (`Endpoint`).

Pure and parsed once per request (after Garage's `api/s3/router.rs`): the
handlers receive a ready `Endpoint` and never look at the URL again.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from s3gateway.errors import (
    InvalidArgument,
    InvalidURI,
    MethodNotAllowed,
    NotImplemented_,
)


class Op(enum.Enum):
    ListBuckets = "ListBuckets"
    CreateBucket = "CreateBucket"
    DeleteBucket = "DeleteBucket"
    HeadBucket = "HeadBucket"
    GetBucketLocation = "GetBucketLocation"
    GetBucketVersioning = "GetBucketVersioning"
    PutBucketVersioning = "PutBucketVersioning"
    GetBucketCors = "GetBucketCors"
    PutBucketCors = "PutBucketCors"
    DeleteBucketCors = "DeleteBucketCors"
    GetBucketAcl = "GetBucketAcl"
    ListObjects = "ListObjects"
    ListObjectsV2 = "ListObjectsV2"
    ListObjectVersions = "ListObjectVersions"
    ListMultipartUploads = "ListMultipartUploads"
    DeleteObjects = "DeleteObjects"
    PutObject = "PutObject"
    CopyObject = "CopyObject"
    GetObject = "GetObject"
    HeadObject = "HeadObject"
    DeleteObject = "DeleteObject"
    GetObjectAcl = "GetObjectAcl"
    GetObjectTagging = "GetObjectTagging"
    PutObjectTagging = "PutObjectTagging"
    DeleteObjectTagging = "DeleteObjectTagging"
    CreateMultipartUpload = "CreateMultipartUpload"
    UploadPart = "UploadPart"
    UploadPartCopy = "UploadPartCopy"
    CompleteMultipartUpload = "CompleteMultipartUpload"
    AbortMultipartUpload = "AbortMultipartUpload"
    ListParts = "ListParts"
    Preflight = "Preflight"


@dataclass(frozen=True)
class Endpoint:
    op: Op
    bucket: str | None = None
    key: str | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def version_id(self) -> str | None:
        v = self.query.get("versionId")
        return None if v in (None, "", "null") else v

    @property
    def upload_id(self) -> str:
        return self.query["uploadId"]

    @property
    def part_number(self) -> int:
        return parse_part_number(self.query["partNumber"])


def parse_part_number(text: str) -> int:
    # isascii: str.isdigit() also accepts "²" and "٣", which int() rejects or reads.
    # The length cap keeps int() away from its 4300-digit limit.
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 10000:
        raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive",
                              ArgumentName="partNumber", ArgumentValue=text)
    return int(text)


# Sub-resources we know of but do not serve: answered NotImplemented, not as listings.
_UNSUPPORTED_BUCKET = frozenset({
    "policy", "lifecycle", "tagging", "encryption", "website", "logging", "notification",
    "replication", "object-lock", "ownershipControls", "publicAccessBlock", "accelerate",
    "requestPayment", "analytics", "metrics", "inventory", "intelligent-tiering",
    "policyStatus", "acl",
})
_UNSUPPORTED_OBJECT = frozenset({
    "acl", "restore", "select", "retention", "legal-hold", "torrent", "attributes",
})


# A "%" not followed by two hex digits: urllib's unquote would keep it as text.
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def split_path(raw_path: str, host: str, virtual_host_domains: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(bucket, key) from the raw request path and Host header, path- or
    virtual-host-style. Percent-decoding happens here, once."""
    if _BAD_PERCENT.search(raw_path):  # unquote would silently keep "%zz"
        raise InvalidURI()
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise InvalidURI() from None
    if not path.startswith("/"):
        raise InvalidURI()
    bucket = virtual_host_bucket(host, virtual_host_domains)
    if bucket is not None:
        return bucket, path[1:] or None
    rest = path[1:]
    if not rest:
        return None, None
    bucket, sep, key = rest.partition("/")
    return bucket, (key if sep and key else None)


def virtual_host_bucket(host: str, domains: tuple[str, ...]) -> str | None:
    """The bucket named by a Host header like "photos.s3.localhost:9000", else None.

    The longest matching domain wins, so with both "localhost" and "s3.localhost"
    configured, "photos.s3.localhost" is bucket "photos" and "s3.localhost" itself
    is path style."""
    if host.startswith("["):  # an IPv6 literal never names a bucket
        return None
    hostname = host.rsplit(":", 1)[0].lower().rstrip(".")
    for domain in sorted(domains, key=len, reverse=True):
        if hostname == domain:
            return None
        if hostname.endswith("." + domain) and len(hostname) > len(domain) + 1:
            return hostname[: -len(domain) - 1]
    return None


def parse_query(query_string: str) -> list[tuple[str, str]]:
    if _BAD_PERCENT.search(query_string):  # parse_qsl would keep "%zz" as text
        raise InvalidURI()
    try:
        return parse_qsl(query_string, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidURI() from None


def parse_endpoint(
    method: str, bucket: str | None, key: str | None, query: dict[str, str], headers: dict[str, str]
) -> Endpoint:
    """Pick the S3 operation. `headers` needs only x-amz-copy-source (lower-case)."""
    q = query
    if method == "OPTIONS" and bucket:
        return Endpoint(Op.Preflight, bucket, key, q)
    if bucket is None:
        if method in ("GET", "HEAD"):
            return Endpoint(Op.ListBuckets, query=q)
        raise MethodNotAllowed()
    if key is None:
        return _bucket_endpoint(method, bucket, q)
    return _object_endpoint(method, bucket, key, q, "x-amz-copy-source" in headers)


def _bucket_endpoint(method: str, bucket: str, q: dict[str, str]) -> Endpoint:
    def ep(op: Op) -> Endpoint:
        return Endpoint(op, bucket, None, q)

    if method == "HEAD":
        return ep(Op.HeadBucket)
    if method == "GET":
        for sub, op in (
            ("location", Op.GetBucketLocation),
            ("versioning", Op.GetBucketVersioning),
            ("cors", Op.GetBucketCors),
            ("versions", Op.ListObjectVersions),
            ("uploads", Op.ListMultipartUploads),
            ("acl", Op.GetBucketAcl),
        ):
            if sub in q:
                return ep(op)
        _reject_unsupported(q, _UNSUPPORTED_BUCKET)
        if q.get("list-type") == "2":
            return ep(Op.ListObjectsV2)
        if "list-type" in q:
            raise InvalidArgument("Invalid list type", ArgumentName="list-type")
        return ep(Op.ListObjects)
    if method == "PUT":
        if "cors" in q:
            return ep(Op.PutBucketCors)
        if "versioning" in q:
            return ep(Op.PutBucketVersioning)
        _reject_unsupported(q, _UNSUPPORTED_BUCKET)
        return ep(Op.CreateBucket)
    if method == "DELETE":
        if "cors" in q:
            return ep(Op.DeleteBucketCors)
        _reject_unsupported(q, _UNSUPPORTED_BUCKET)
        return ep(Op.DeleteBucket)
    if method == "POST":
        if "delete" in q:
            return ep(Op.DeleteObjects)
        raise NotImplemented_("This POST operation on a bucket is not implemented.")
    raise MethodNotAllowed()


def _object_endpoint(method: str, bucket: str, key: str, q: dict[str, str], copy: bool) -> Endpoint:
    def ep(op: Op) -> Endpoint:
        return Endpoint(op, bucket, key, q)

    if "partNumber" in q and method in ("GET", "HEAD", "PUT"):
        parse_part_number(q["partNumber"])  # a bad one is InvalidArgument whatever the op
    if method == "GET":
        if "uploadId" in q:
            return ep(Op.ListParts)
        if "tagging" in q:
            return ep(Op.GetObjectTagging)
        if "acl" in q:
            return ep(Op.GetObjectAcl)
        _reject_unsupported(q, _UNSUPPORTED_OBJECT)
        return ep(Op.GetObject)
    if method == "HEAD":
        return ep(Op.HeadObject)
    if method == "PUT":
        if "uploadId" in q or "partNumber" in q:
            if "uploadId" not in q or "partNumber" not in q:
                raise InvalidArgument("UploadPart needs both uploadId and partNumber")
            return ep(Op.UploadPartCopy if copy else Op.UploadPart)
        if "tagging" in q:
            return ep(Op.PutObjectTagging)
        _reject_unsupported(q, _UNSUPPORTED_OBJECT)
        return ep(Op.CopyObject if copy else Op.PutObject)
    if method == "POST":
        if "uploads" in q:
            return ep(Op.CreateMultipartUpload)
        if "uploadId" in q:
            return ep(Op.CompleteMultipartUpload)
        _reject_unsupported(q, _UNSUPPORTED_OBJECT)
        raise NotImplemented_("This POST operation on an object is not implemented.")
    if method == "DELETE":
        if "uploadId" in q:
            return ep(Op.AbortMultipartUpload)
        if "tagging" in q:
            return ep(Op.DeleteObjectTagging)
        # Else "DELETE key?acl" would delete the object itself.
        _reject_unsupported(q, _UNSUPPORTED_OBJECT)
        return ep(Op.DeleteObject)
    raise MethodNotAllowed()


def _reject_unsupported(q: dict[str, str], names: frozenset[str]) -> None:
    for name in q:
        if name in names:
            raise NotImplemented_(f"The '{name}' sub-resource is not implemented.")
