"""Named backends from the config: a real meshd node whose default backend is a
bucket on a second real meshd node (type "s3"), one whose blobs go to a configured
directory, and a config naming no backend that stops start-up."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.process import ACCESS_KEY, SECRET_KEY, MeshdProcess

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024
PREFIX = "site-a/"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def remote_keys(remote, bucket: str) -> dict[str, int]:
    """Every key of the remote bucket -> its size."""
    keys = {}
    for page in remote.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return keys


def blob_key(body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    return f"{PREFIX}blobs/{digest[:2]}/{digest[2:4]}/{digest}"


@pytest.fixture
def s3_backed(node: MeshdProcess, tmp_path: Path):
    """A node whose default backend is a bucket on the session node; yields (front, remote client, bucket)."""
    remote = node.client()
    remote_bucket = f"blobs-{uuid.uuid4().hex[:12]}"
    remote.create_bucket(Bucket=remote_bucket)
    config = write_config(tmp_path / "meshd.toml", f"""
[storage]
default_backend = "archive"

[backends.archive]
type = "s3"
endpoint = "{node.endpoint}"
bucket = "{remote_bucket}"
prefix = "{PREFIX}"
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
""")
    front = MeshdProcess(tmp_path / "front", config=config).start()
    try:
        yield front, remote, remote_bucket
    finally:
        front.kill()


def test_s3_default_backend_stores_blobs_on_the_remote(s3_backed, tmp_path):
    front, remote, remote_bucket = s3_backed
    s3 = front.client()
    s3.create_bucket(Bucket="data")
    small = b"tiny object, kept inline in the catalog"
    medium = os.urandom(100 * 1024)  # above the 16 KiB inline limit: goes to the backend
    s3.put_object(Bucket="data", Key="small.txt", Body=small)
    medium_version = s3.put_object(Bucket="data", Key="dir/medium.bin", Body=medium)["VersionId"]
    assert s3.get_object(Bucket="data", Key="small.txt")["Body"].read() == small
    assert s3.get_object(Bucket="data", Key="dir/medium.bin")["Body"].read() == medium
    ranged = s3.get_object(Bucket="data", Key="dir/medium.bin", Range="bytes=70000-80999")
    assert ranged["ContentRange"] == f"bytes 70000-80999/{len(medium)}"
    assert ranged["Body"].read() == medium[70000:81000]

    # 12 MiB in two parts: more than the s3 backend's 8 MiB part, so the remote
    # sees a multipart upload as well.
    big = os.urandom(12 * MiB)
    upload = s3.create_multipart_upload(Bucket="data", Key="big.bin")["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(big), 6 * MiB), 1):
        etag = s3.upload_part(Bucket="data", Key="big.bin", UploadId=upload, PartNumber=number,
                              Body=big[start:start + 6 * MiB])["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket="data", Key="big.bin", UploadId=upload,
                                 MultipartUpload={"Parts": parts})
    got = s3.get_object(Bucket="data", Key="big.bin")
    assert got["ContentLength"] == len(big)
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(big).digest()
    tail = s3.get_object(Bucket="data", Key="big.bin", Range=f"bytes=-{MiB + 7}")["Body"].read()
    assert tail == big[-(MiB + 7):]

    listed = s3.list_objects_v2(Bucket="data")
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [
        ("big.bin", len(big)), ("dir/medium.bin", len(medium)), ("small.txt", len(small))]

    # The bytes are on the remote node, named by content, under the prefix; the
    # inline object never left the catalog, and nothing is left in staging.
    keys = remote_keys(remote, remote_bucket)
    assert blob_key(medium) in keys and blob_key(big) in keys
    assert keys[blob_key(medium)] >= len(medium) and keys[blob_key(big)] >= len(big)
    assert blob_key(small) not in keys
    assert all(k.startswith(f"{PREFIX}blobs/") for k in keys), sorted(keys)
    assert not any(p.is_file() for p in (tmp_path / "front" / "store").rglob("*"))

    s3.delete_object(Bucket="data", Key="dir/medium.bin")
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket="data", Key="dir/medium.bin")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"]] == ["big.bin", "small.txt"]
    # A plain DELETE leaves a delete marker (the version keeps its blob); deleting
    # the version drops the last reference, and the remote blob with it.
    assert blob_key(medium) in remote_keys(remote, remote_bucket)
    s3.delete_object(Bucket="data", Key="dir/medium.bin", VersionId=medium_version)
    assert blob_key(medium) not in remote_keys(remote, remote_bucket)
    assert blob_key(big) in remote_keys(remote, remote_bucket)


def test_s3_backed_objects_survive_a_restart(s3_backed):
    front, _, _ = s3_backed
    s3 = front.client()
    s3.create_bucket(Bucket="keep")
    body = os.urandom(40 * 1024)
    s3.put_object(Bucket="keep", Key="k", Body=body)
    assert front.stop() == 0
    front.start()
    assert front.client().get_object(Bucket="keep", Key="k")["Body"].read() == body


def test_filesystem_backend_path_from_config(tmp_path):
    blobs = tmp_path / "elsewhere"
    config = write_config(tmp_path / "meshd.toml", f"""
[storage]
default_backend = "scratch"
[backends.scratch]
type = "filesystem"
path = "{blobs}"
""")
    proc = MeshdProcess(tmp_path / "data", config=config).start()
    try:
        s3 = proc.client()
        s3.create_bucket(Bucket="fsbucket")
        body = os.urandom(64 * 1024)
        s3.put_object(Bucket="fsbucket", Key="k", Body=body)
        assert s3.get_object(Bucket="fsbucket", Key="k")["Body"].read() == body
        digest = hashlib.sha256(body).hexdigest()
        stored = [p for p in blobs.rglob("*") if p.is_file() and digest in p.name]
        assert stored, sorted(map(str, blobs.rglob("*")))
        assert not (tmp_path / "data" / "store").exists() or not any(
            p.is_file() for p in (tmp_path / "data" / "store").rglob("*"))
    finally:
        proc.kill()


def test_unknown_default_backend_stops_start_up_with_one_line(tmp_path):
    config = write_config(tmp_path / "meshd.toml", """
[storage]
default_backend = "archive"
[backends.archiv]
type = "memory"
""")
    done = subprocess.run(
        [sys.executable, "-m", "meshd", "run", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "d"),
         "--config", str(config)],
        capture_output=True, timeout=60, text=True, check=False,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "storage.default_backend" in done.stderr and "'archive'" in done.stderr
    assert "ready" not in done.stdout
