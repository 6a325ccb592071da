"""AWS Signature Version 2 against a real node: boto3 with
signature_version="s3", boto3's default presigned URLs (SigV2 in us-east-1),
`aws s3 presign` (awscli v1), s3cmd with signature_v2, and raw HTTP signed by
botocore's V2 signers (tests/support/signing_v2.py) for what clients never send.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY, MeshdProcess
from tests.support.rawhttp import Reply, send
from tests.support.s3cmd import s3cmd_runner
from tests.support.signing import Signed, wire_path
from tests.support.signing_v2 import sign_v2

pytestmark = pytest.mark.timeout(180)
MiB = 1 << 20


def send_url(url: str, method: str = "GET", body: bytes = b"", headers=()) -> Reply:
    u = urlsplit(url)
    return send(f"{u.scheme}://{u.netloc}", method, u.path + "?" + u.query, list(headers), body)


def assert_v2_url(url: str) -> None:
    q = parse_qs(urlsplit(url).query)
    assert {"AWSAccessKeyId", "Signature", "Expires"} <= set(q), url
    assert not {"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Algorithm"} & set(q), url


def v2(node: MeshdProcess, method: str, path: str, query=(), headers=(), body: bytes = b"", **kw) -> Signed:
    return sign_v2(method, node.endpoint, path, query, headers, body,
                   access_key=kw.pop("access_key", ACCESS_KEY), secret_key=kw.pop("secret_key", SECRET_KEY), **kw)


def send_signed(node: MeshdProcess, s: Signed, extra: list[tuple[str, str]] = ()) -> Reply:
    return send(node.endpoint, s.method, s.target, [*s.headers, *extra], s.body)


@pytest.fixture
def s3v2(node: MeshdProcess):
    """boto3 signing every request with SigV2 (HmacV1Auth)."""
    return node.client(signature_version="s3")


def _key() -> str:
    return f"v2/{uuid.uuid4().hex}"


# --- boto3 with signature_version="s3" ----------------------------------------------------

def test_boto3_v2_object_lifecycle(s3v2, s3, bucket):
    key = "dir/ünïcødé key+with spaces~*'().txt"
    body = os.urandom(4096)
    put = s3v2.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-test",
                          Metadata={"origin": "v2"})
    got = s3v2.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"origin": "v2"}
    assert s3v2.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(body)
    # Sub-resources: a version, response overrides, tagging, versions listing.
    again = s3v2.put_object(Bucket=bucket, Key=key, Body=b"second")
    old = s3v2.get_object(Bucket=bucket, Key=key, VersionId=put["VersionId"],
                          ResponseContentType="text/x-override")
    assert old["Body"].read() == body and old["ContentType"] == "text/x-override"
    s3v2.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})
    assert s3v2.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == [{"Key": "t", "Value": "1"}]
    versions = s3v2.list_object_versions(Bucket=bucket, Prefix="dir/")["Versions"]
    assert {v["VersionId"] for v in versions} == {put["VersionId"], again["VersionId"]}
    # Listings, V1 and V2.
    assert [o["Key"] for o in s3v2.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]] == [key]
    assert [o["Key"] for o in s3v2.list_objects(Bucket=bucket, Prefix="dir/")["Contents"]] == [key]
    s3v2.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": key})
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == b"second"
    s3v2.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=bucket, Key=key)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    deleted = s3v2.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy"}]})
    assert [d["Key"] for d in deleted["Deleted"]] == ["copy"]


def test_boto3_v2_buckets(s3v2):
    name = f"v2-{uuid.uuid4().hex[:12]}"
    s3v2.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3v2.list_buckets()["Buckets"]]
    s3v2.head_bucket(Bucket=name)
    assert s3v2.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    s3v2.get_bucket_location(Bucket=name)
    s3v2.delete_bucket(Bucket=name)
    assert name not in [b["Name"] for b in s3v2.list_buckets()["Buckets"]]


def test_boto3_v2_multipart(s3v2, s3, bucket):
    key = _key()
    parts_data = [os.urandom(5 * MiB), os.urandom(1234)]
    up = s3v2.create_multipart_upload(Bucket=bucket, Key=key)
    uploads = s3v2.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert up["UploadId"] in [u["UploadId"] for u in uploads]
    parts = []
    for n, data in enumerate(parts_data, 1):
        r = s3v2.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    listed = s3v2.list_parts(Bucket=bucket, Key=key, UploadId=up["UploadId"])["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2]
    done = s3v2.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                          MultipartUpload={"Parts": parts})
    assert done["ETag"].strip('"').endswith("-2")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(parts_data)
    # Abort, and a part copied from the object just made.
    up2 = s3v2.create_multipart_upload(Bucket=bucket, Key=key + "-2")
    copied = s3v2.upload_part_copy(Bucket=bucket, Key=key + "-2", UploadId=up2["UploadId"], PartNumber=1,
                                   CopySource={"Bucket": bucket, "Key": key})
    assert copied["CopyPartResult"]["ETag"]
    s3v2.abort_multipart_upload(Bucket=bucket, Key=key + "-2", UploadId=up2["UploadId"])
    assert up2["UploadId"] not in [u["UploadId"] for u in s3v2.list_multipart_uploads(Bucket=bucket)
                                   .get("Uploads", [])]


def test_boto3_v2_transfer_manager(s3v2, s3, bucket, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(11 * MiB))
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    s3v2.upload_file(str(src), bucket, "big.bin", Config=cfg)
    back = tmp_path / "back.bin"
    s3v2.download_file(bucket, "big.bin", str(back), Config=cfg)
    assert back.read_bytes() == src.read_bytes()


def test_boto3_v2_wrong_secret_and_unknown_key(node, bucket):
    bad = boto3.client("s3", endpoint_url=node.endpoint, aws_access_key_id=ACCESS_KEY,
                       aws_secret_access_key="not-the-secret", region_name=REGION,
                       config=Config(signature_version="s3", retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as info:
        bad.list_objects_v2(Bucket=bucket)
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    r = send_signed(node, v2(node, "GET", f"/{bucket}", access_key="AKIDNOSUCHKEY0000000"))
    assert (r.status, r.code) == (403, "InvalidAccessKeyId")


# --- boto3's default presigned URLs (SigV2 in us-east-1) -----------------------------------

def test_default_presigned_get_downloads_byte_exact(s3, bucket):
    key = "presign/ünï cødé+&=?.bin"
    body = bytes(range(256)) * 4096 + os.urandom(777)
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    assert_v2_url(url)
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        assert resp.read() == body
    conn = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
    try:
        u = urlsplit(url)
        conn.request("GET", u.path + "?" + u.query)
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, body)
    finally:
        conn.close()


def test_default_presigned_get_with_version_and_override(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    url = s3.generate_presigned_url("get_object", ExpiresIn=300, Params={
        "Bucket": bucket, "Key": "k", "VersionId": first["VersionId"],
        "ResponseContentDisposition": 'attachment; filename="a b.txt"'})
    assert_v2_url(url)
    r = send_url(url)
    assert (r.status, r.body) == (200, b"first")
    assert r.headers["content-disposition"] == 'attachment; filename="a b.txt"'
    # The version and the override are signed: neither can be changed or added.
    r = send_url(url.replace("attachment", "inline"))
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    latest = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    r = send_url(latest + "&versionId=" + first["VersionId"])
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    r = send_url(latest + "&version%49d=" + first["VersionId"])
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")


def test_default_presigned_put(s3, bucket):
    key = _key()
    payload = b"presigned v2 body \x00\xff" * 5000
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    assert_v2_url(url)
    r = send_url(url, "PUT", payload)
    assert r.status == 200, r.body
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == payload


def test_presigned_put_with_signed_content_type_and_metadata(s3, bucket):
    key = _key()
    url = s3.generate_presigned_url("put_object", ExpiresIn=300, Params={
        "Bucket": bucket, "Key": key, "ContentType": "text/x-signed", "Metadata": {"a": "b"}})
    assert_v2_url(url)
    r = send_url(url, "PUT", b"typed", headers=[("Content-Type", "text/x-other")])
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    r = send_url(url, "PUT", b"typed", headers=[("Content-Type", "text/x-signed"), ("x-amz-meta-a", "b")])
    assert r.status == 200, r.body
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "text/x-signed" and head["Metadata"] == {"a": "b"}


def test_presigned_put_cannot_become_a_copy(s3, bucket):
    s3.put_object(Bucket=bucket, Key="secret", Body=b"secret")
    key = _key()
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    r = send_url(url, "PUT", headers=[("x-amz-copy-source", f"/{bucket}/secret")])
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)


def test_expired_v2_url_is_access_denied_xml(node, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s = v2(node, "GET", f"/{bucket}/k", presign_expires=-60)  # botocore's signer, Expires in the past
    r = send_signed(node, s)
    assert r.status == 403 and r.headers["content-type"] == "application/xml"
    assert r.code == "AccessDenied" and r.error()["Message"] == "Request has expired"
    assert r.error()["Expires"] and r.error()["ServerTime"] and r.error()["RequestId"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(node.endpoint + s.target, timeout=30)
    assert info.value.code == 403


def test_v2_url_longer_than_a_week_is_refused(node, bucket):
    r = send_signed(node, v2(node, "GET", f"/{bucket}/k", presign_expires=8 * 24 * 3600))
    assert (r.status, r.code) == (400, "AuthorizationQueryParametersError")
    r = send_signed(node, v2(node, "GET", f"/{bucket}/k", presign_expires=7 * 24 * 3600))
    assert (r.status, r.code) == (404, "NoSuchKey")  # a week is allowed


# --- command-line tools --------------------------------------------------------------------

def test_aws_s3_presign_url_works(node, s3, bucket, aws_env, tmp_path):
    body = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="cli/file name.bin", Body=body)
    proc = subprocess.run(["aws", "--endpoint-url", node.endpoint, "s3", "presign",
                           f"s3://{bucket}/cli/file name.bin", "--expires-in", "300"],
                          env=aws_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip()
    assert_v2_url(url)
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.read() == body


@pytest.fixture
def s3cmd_v2(node: MeshdProcess, tmp_path: Path):
    run = s3cmd_runner(node, tmp_path / "s3cfg", signature_v2=True, debug=True)

    def checked(*args: str) -> str:
        proc = run(*args)
        # Make sure it really signed with V2.
        assert "Using signature v2" in proc.stderr and "Using signature v4" not in proc.stderr
        return proc.stdout

    return checked


def test_s3cmd_signature_v2(s3cmd_v2, s3, tmp_path: Path):
    name = f"s3cmd-v2-{uuid.uuid4().hex[:8]}"
    s3cmd_v2("mb", f"s3://{name}")
    src = tmp_path / "small file.txt"
    src.write_bytes(b"s3cmd v2\n" * 100)
    s3cmd_v2("put", str(src), f"s3://{name}/dir/small file.txt")
    big = tmp_path / "multi.bin"
    big.write_bytes(os.urandom(11 * MiB))
    s3cmd_v2("put", "--multipart-chunk-size-mb=5", str(big), f"s3://{name}/multi.bin")
    listing = s3cmd_v2("ls", "--recursive", f"s3://{name}/")
    assert f"s3://{name}/dir/small file.txt" in listing and f"s3://{name}/multi.bin" in listing
    back = tmp_path / "back.bin"
    s3cmd_v2("get", f"s3://{name}/multi.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    s3cmd_v2("del", f"s3://{name}/dir/small file.txt")
    assert "small file.txt" not in s3cmd_v2("ls", "--recursive", f"s3://{name}/")
    assert s3.get_object(Bucket=name, Key="multi.bin")["ContentLength"] == 11 * MiB


# --- raw HTTP: virtual hosts, payloads, tampering -------------------------------------------

def test_virtual_host_style(node, s3, bucket):
    """The canonical resource is "/bucket" + path when the Host names the bucket."""
    port = urlsplit(node.endpoint).port
    vhost = f"http://{bucket}.localhost:{port}"
    put = sign_v2("PUT", vhost, "/vh/key.txt", (), [("Content-Type", "text/plain")], b"virtual",
                  access_key=ACCESS_KEY, secret_key=SECRET_KEY, auth_path=f"/{bucket}/vh/key.txt")
    assert put.header("host") == f"{bucket}.localhost:{port}"
    r = send_signed(node, put)
    assert r.status == 200, r.body
    assert s3.get_object(Bucket=bucket, Key="vh/key.txt")["Body"].read() == b"virtual"
    ls = sign_v2("GET", vhost, "/", [("list-type", "2")], access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                 auth_path=f"/{bucket}/")
    r = send_signed(node, ls)
    assert r.status == 200 and b"<Key>vh/key.txt</Key>" in r.body
    # Signed for another bucket's resource: refused.
    other = sign_v2("GET", vhost, "/vh/key.txt", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                    auth_path="/other-bucket/vh/key.txt")
    assert send_signed(node, other).code == "SignatureDoesNotMatch"
    presigned = sign_v2("GET", vhost, "/vh/key.txt", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                        auth_path=f"/{bucket}/vh/key.txt", presign_expires=60)
    r = send_signed(node, presigned)
    assert (r.status, r.body) == (200, b"virtual")


def test_signed_header_added_or_changed_fails(node, s3, bucket):
    key = _key()
    s = v2(node, "PUT", wire_path(bucket, key), headers=[("x-amz-meta-a", "1")], body=b"data")
    changed = [(k, "2" if k == "x-amz-meta-a" else v) for k, v in s.headers]
    r = send(node.endpoint, "PUT", s.target, changed, s.body)
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    r = send_signed(node, s, [("x-amz-meta-sneaky", "1")])
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)
    assert send_signed(node, s).status == 200


def test_body_checks_with_v2(node, s3, bucket):
    key = _key()
    wrong_md5 = "1B2M2Y8AsgTpgAmY7PhCfg=="  # MD5 of the empty body
    r = send_signed(node, v2(node, "PUT", wire_path(bucket, key), headers=[("Content-MD5", wrong_md5)],
                             body=b"not empty"))
    assert (r.status, r.code) == (400, "BadDigest")
    wrong_sha = hashlib.sha256(b"other").hexdigest()
    r = send_signed(node, v2(node, "PUT", wire_path(bucket, key), headers=[("x-amz-content-sha256", wrong_sha)],
                             body=b"not empty"))
    assert r.status == 400 and r.code in ("XAmzContentSHA256Mismatch", "BadDigest")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)


def test_aws_chunked_with_v2_is_refused(node, s3, bucket):
    key = _key()
    body = b"5;chunk-signature=" + b"0" * 64 + b"\r\nhello\r\n0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n"
    s = v2(node, "PUT", wire_path(bucket, key), body=body, headers=[
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "5")])
    r = send_signed(node, s)
    assert (r.status, r.code) == (400, "InvalidRequest")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)


def test_skewed_v2_date(node, bucket):
    s = v2(node, "GET", f"/{bucket}")
    stale = [(k, "Tue, 27 Mar 2007 19:36:42 +0000" if k.lower() == "date" else v) for k, v in s.headers]
    r = send(node.endpoint, "GET", s.target, stale)
    assert (r.status, r.code) == (403, "RequestTimeTooSkewed")
