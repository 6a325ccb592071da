"""Bucket operations through the S3 edge of a real node: names, create, head, delete,
location, versioning, listing."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from tests.support.s3edge import signed_request

pytestmark = pytest.mark.timeout(120)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def _status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("name", [
    "ab",                      # too short
    "a" * 64,                  # too long
    "MyBucket",                # upper case
    "my_bucket",               # underscore
    "192.168.1.1",             # formatted like an IP address
    "a..b",                    # adjacent dots
    "-abc",                    # leading hyphen
    "abc-",                    # trailing hyphen
    ".abc",                    # leading dot
    "abc.",                    # trailing dot
    "a.-b",                    # dot next to hyphen
    "xn--abc",                 # reserved prefix
])
def test_invalid_bucket_names_are_rejected(node, name: str) -> None:
    r = signed_request(node.endpoint, "PUT", f"/{name}")
    assert r.status == 400
    assert r.error_code == "InvalidBucketName"
    # And nothing was created.
    assert signed_request(node.endpoint, "HEAD", f"/{name}").status in (400, 404)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "a.b-c.1", "0-9"])
def test_valid_bucket_name_edges(node, s3, name: str) -> None:
    name = name if len(name) > 10 else f"{name}{uuid.uuid4().hex[:6]}"
    if len(name) > 63:
        name = name[:63]
    s3.create_bucket(Bucket=name)
    try:
        assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        s3.delete_bucket(Bucket=name)


def test_create_existing_bucket_is_already_owned_by_you(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=bucket)
    assert _code(exc) == "BucketAlreadyOwnedByYou"
    assert _status(exc) == 409


def test_create_bucket_with_foreign_location_constraint_fails(s3) -> None:
    name = f"t-{uuid.uuid4().hex[:16]}"
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert _status(exc) == 400
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=name)


def test_head_bucket_found_and_missing_have_no_body(node, bucket: str) -> None:
    ok = signed_request(node.endpoint, "HEAD", f"/{bucket}")
    assert ok.status == 200
    assert ok.body == b""
    assert ok.header("x-amz-bucket-region") == "us-east-1"
    missing = signed_request(node.endpoint, "HEAD", f"/t-{uuid.uuid4().hex[:16]}")
    assert missing.status == 404
    assert missing.body == b""


def test_head_bucket_missing_with_boto3(s3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=f"t-{uuid.uuid4().hex[:16]}")
    assert _status(exc) == 404


def test_delete_missing_bucket_is_no_such_bucket(s3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=f"t-{uuid.uuid4().hex[:16]}")
    assert _code(exc) == "NoSuchBucket"
    assert _status(exc) == 404


def test_delete_bucket_not_empty_until_every_version_is_gone(s3, bucket: str) -> None:
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert _code(exc) == "BucketNotEmpty"
    assert _status(exc) == 409

    marker = s3.delete_object(Bucket=bucket, Key="k")
    assert marker["DeleteMarker"] is True
    # Only a delete marker and an old version remain: still not empty.
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert _code(exc) == "BucketNotEmpty"

    s3.delete_object(Bucket=bucket, Key="k", VersionId=v1)
    # Now only the delete marker is left: still not empty, as in S3.
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert _code(exc) == "BucketNotEmpty"

    s3.delete_object(Bucket=bucket, Key="k", VersionId=marker["VersionId"])
    assert s3.list_object_versions(Bucket=bucket).get("Versions", []) == []
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=bucket)
    assert _status(exc) == 404
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_delete_empty_bucket_answers_204(node, s3) -> None:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    r = signed_request(node.endpoint, "DELETE", f"/{name}")
    assert r.status == 204
    assert r.body == b""


def test_get_bucket_location(s3, bucket: str) -> None:
    # us-east-1 is reported as an empty LocationConstraint.
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") in (None, "")


def test_get_bucket_location_missing_bucket(s3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_location(Bucket=f"t-{uuid.uuid4().hex[:16]}")
    assert _code(exc) == "NoSuchBucket"


def test_bucket_versioning_is_always_enabled(s3, bucket: str) -> None:
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_suspending_versioning_is_refused(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert _status(exc) >= 400
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_put_bucket_versioning_malformed_xml(node, bucket: str) -> None:
    r = signed_request(node.endpoint, "PUT", f"/{bucket}", query="versioning=",
                       body=b"<VersioningConfiguration><Status>Enabled")
    assert r.status == 400
    assert r.error_code == "MalformedXML"


def test_get_bucket_versioning_missing_bucket(s3) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_versioning(Bucket=f"t-{uuid.uuid4().hex[:16]}")
    assert _code(exc) == "NoSuchBucket"


def test_list_buckets_includes_new_buckets_sorted(s3) -> None:
    names = sorted(f"t-{uuid.uuid4().hex[:16]}" for _ in range(3))
    for n in names:
        s3.create_bucket(Bucket=n)
    resp = s3.list_buckets()
    listed = [b["Name"] for b in resp["Buckets"]]
    assert set(names) <= set(listed)
    assert listed == sorted(listed)
    assert resp["Owner"]["ID"]
    for b in resp["Buckets"]:
        if b["Name"] in names:
            assert b["CreationDate"].year >= 2024
    for n in names:
        s3.delete_bucket(Bucket=n)
    assert not set(names) & {b["Name"] for b in s3.list_buckets()["Buckets"]}
