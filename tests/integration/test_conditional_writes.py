"""S3 conditional writes: PutObject and CompleteMultipartUpload with
`If-None-Match: *` (create only) and `If-Match: <etag>` (replace only that
version), checked atomically with the commit."""

from __future__ import annotations

import os
import threading

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


def code(exc: pytest.ExceptionInfo) -> tuple[str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("size", [10, 64 * 1024])  # inline in the catalog, and a file
def test_if_none_match_creates_only_once(s3, bucket, size):
    first = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="k", Body=first, IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(size), IfNoneMatch="*")
    assert code(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == first
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 1
    # After a delete marker the key has no current object: creating works again.
    s3.delete_object(Bucket=bucket, Key="k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"again", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"again"


@pytest.mark.parametrize("size", [10, 64 * 1024])
def test_if_match_replaces_only_the_named_version(s3, bucket, size):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(size))["ETag"]
    newer = os.urandom(size)
    second = s3.put_object(Bucket=bucket, Key="k", Body=newer, IfMatch=etag)["ETag"]
    with pytest.raises(ClientError) as exc:  # etag is stale now
        s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(size), IfMatch=etag)
    assert code(exc) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="k")["ETag"] == second
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="missing", Body=b"x", IfMatch=etag)
    assert code(exc) == ("NoSuchKey", 404)


def test_racing_creators_only_one_wins(s3, bucket):
    results: list[str] = []

    def put(i: int) -> None:
        try:
            s3.put_object(Bucket=bucket, Key="race", Body=f"writer {i}".encode(), IfNoneMatch="*")
            results.append("ok")
        except ClientError as e:
            results.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1
    assert results.count("PreconditionFailed") == 7
    assert len(s3.list_object_versions(Bucket=bucket, Prefix="race")["Versions"]) == 1


def test_complete_multipart_if_none_match(s3, bucket):
    s3.put_object(Bucket=bucket, Key="mp", Body=b"exists")
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=os.urandom(MiB))
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload=parts,
                                     IfNoneMatch="*")
    assert code(exc) == ("PreconditionFailed", 412)
    # The upload is still there: with the right condition it completes.
    etag = s3.head_object(Bucket=bucket, Key="mp")["ETag"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload=parts,
                                        IfMatch=etag)
    assert s3.head_object(Bucket=bucket, Key="mp")["ETag"] == done["ETag"]


def test_if_none_match_other_than_star_is_not_implemented(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", IfNoneMatch='"abc"')
    assert code(exc) == ("NotImplemented", 501)


def test_412_names_the_failed_write_condition(node, s3, bucket):
    """The error document's <Condition> is the header that did not hold."""
    import xml.etree.ElementTree as ET

    from tests.support.s3edge import signed_request

    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    for headers, condition in (({"If-None-Match": "*"}, "If-None-Match"),
                               ({"If-Match": '"0123456789abcdef0123456789abcdef"'}, "If-Match")):
        r = signed_request(node.endpoint, "PUT", f"/{bucket}/k", headers=headers, body=b"second")
        assert (r.status, r.error_code) == (412, "PreconditionFailed"), r.body
        assert ET.fromstring(r.body).findtext("Condition") == condition
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"
