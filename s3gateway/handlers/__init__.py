"""One module per family of S3 operations; `HANDLERS` maps each `Op` to its handler."""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from s3gateway.context import RequestContext
from s3gateway.handlers import (
    bucket,
    delete,
    get,
    listing,
    multipart,
    put,
    service,
    tagging,
)
from s3gateway.router import Op

Handler = Callable[[RequestContext], Awaitable[web.StreamResponse]]

HANDLERS: dict[Op, Handler] = {
    Op.ListBuckets: service.list_buckets,
    Op.CreateBucket: bucket.create_bucket,
    Op.DeleteBucket: bucket.delete_bucket,
    Op.HeadBucket: bucket.head_bucket,
    Op.GetBucketLocation: bucket.get_bucket_location,
    Op.GetBucketVersioning: bucket.get_bucket_versioning,
    Op.PutBucketVersioning: bucket.put_bucket_versioning,
    Op.GetBucketCors: bucket.get_bucket_cors,
    Op.PutBucketCors: bucket.put_bucket_cors,
    Op.DeleteBucketCors: bucket.delete_bucket_cors,
    Op.GetBucketAcl: bucket.get_acl,
    Op.ListObjects: listing.list_objects_v1,
    Op.ListObjectsV2: listing.list_objects_v2,
    Op.ListObjectVersions: listing.list_object_versions,
    Op.ListMultipartUploads: multipart.list_multipart_uploads,
    Op.DeleteObjects: delete.delete_objects,
    Op.PutObject: put.put_object,
    Op.CopyObject: put.copy_object,
    Op.GetObject: get.get_object,
    Op.HeadObject: get.head_object,
    Op.GetObjectAcl: bucket.get_acl,
    Op.DeleteObject: delete.delete_object,
    Op.GetObjectTagging: tagging.get_object_tagging,
    Op.PutObjectTagging: tagging.put_object_tagging,
    Op.DeleteObjectTagging: tagging.delete_object_tagging,
    Op.CreateMultipartUpload: multipart.create_multipart_upload,
    Op.UploadPart: multipart.upload_part,
    Op.UploadPartCopy: multipart.upload_part_copy,
    Op.CompleteMultipartUpload: multipart.complete_multipart_upload,
    Op.AbortMultipartUpload: multipart.abort_multipart_upload,
    Op.ListParts: multipart.list_parts,
}
