"""Ingested directories through a real node: `[[ingest]]` in its config, boto3,
the aws cli and `meshd ingest status|rescan` against the running process.

One node for the module (scanning is the expensive part); tests that change
files on disk use their own subdirectory of the ingested tree.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY, MeshdProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(180)

BUCKET = "ingested"
PREFIX = "raw/"
TREE_BUCKET = "tenk"
TREE_FILES = 10_000
DEEP = "/".join(f"level{i}" for i in range(40))
BIG = os.urandom(3 * 1024 * 1024 + 17)
SPARSE = 1 << 30
SHA256_OF_1GIB_OF_ZEROS = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"

FILES: dict[str, bytes] = {
    "hello.txt": b"hello, ingested world\n",
    "empty.bin": b"",
    "dir/sub/table.csv": b"a,b\n1,2\n",
    "Ünïcødé/数据/файл.dat": "μέτρηση".encode() * 50,
    "spaces and+plus/x y.json": b'{"k": 1}',
    "odd/100%?#&=;,'~!@$()[]{}.txt": b"odd characters",
    "odd/emoji 🧪 and tab\tname": b"tab",
    f"{DEEP}/leaf.txt": b"deep leaf",
    "big/blob.bin": BIG,
}


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def snapshot(root: Path, exclude: str) -> dict[str, tuple[int, int, str]]:
    """mtime, size and SHA-256 of every regular file (streamed: one is 1 GiB)."""
    out = {}
    for p in root.rglob("*"):
        rel = str(p.relative_to(root))
        if p.is_file() and not p.is_symlink() and not rel.startswith(exclude):
            with open(p, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            out[rel] = (p.stat().st_mtime_ns, p.stat().st_size, digest)
    return out


class IngestNode:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.tree = base / "survey"
        self.tenk = base / "tenk"
        self.data = base / "data"
        self.config = base / "meshd.toml"
        for rel, data in FILES.items():
            write(self.tree / rel, data)
        with open(self.tree / "sparse.img", "wb") as f:  # 1 GiB of holes: nothing on disk
            f.truncate(SPARSE)
        os.mkfifo(self.tree / "a-fifo")
        write(base / "outside-secret.txt", b"secret")
        os.symlink(base / "outside-secret.txt", self.tree / "escape-link")
        os.symlink("..", self.tree / "dir" / "loop")
        for i in range(TREE_FILES):
            d = self.tenk / f"d{i // 100:03d}"
            if i % 100 == 0:
                d.mkdir(parents=True)
            (d / f"f{i:05d}").write_bytes(b"%d" % i)
        (self.tree / "mutable").mkdir()
        self.config.write_text(
            f'[node]\ndata_dir = "{self.data}"\n\n'
            f'[[ingest]]\npath = "{self.tree}"\nbucket = "{BUCKET}"\nprefix = "{PREFIX}"\n'
            "rescan_interval_seconds = 0\nhash_bytes_per_second = 0\n\n"
            f'[[ingest]]\npath = "{self.tenk}"\nbucket = "{TREE_BUCKET}"\nprefix = ""\n'
            "rescan_interval_seconds = 0\nhash_bytes_per_second = 0\n"
        )
        self.before = snapshot(self.tree, "mutable")
        self.proc = MeshdProcess(self.data, config=self.config)

    def cli(self, *args: str, check: bool = True, use_config: bool = False) -> subprocess.CompletedProcess:
        where = ["--config", str(self.config)] if use_config else ["--data", str(self.data)]
        return subprocess.run([sys.executable, "-m", "meshd", *args, *where], capture_output=True, text=True,
                              timeout=120, check=check)

    def status(self) -> list[dict]:
        return json.loads(self.cli("ingest", "status", "--json").stdout)["entries"]

    def rescan(self) -> dict:
        return json.loads(self.cli("ingest", "rescan", "--json", "--entry", "0").stdout)["scans"][0]


@pytest.fixture(scope="module")
def ing(tmp_path_factory: pytest.TempPathFactory):
    n = IngestNode(tmp_path_factory.mktemp("ingest"))
    n.proc.start()
    yield n
    n.proc.stop()


@pytest.fixture(scope="module")
def s3(ing: IngestNode):
    return ing.proc.client()


def wait_for(check, timeout: float = 60.0, what: str = "condition"):
    return wait_until(check, timeout, what=what, interval=0.1)


def wait_hashed(s3, key: str) -> None:
    wait_for(lambda: "ChecksumSHA256" in s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED"),
             timeout=120, what=f"{key} hashed")


def listed_keys(s3, bucket: str, prefix: str = "") -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


@pytest.fixture(scope="module")
def scanned(ing: IngestNode, s3) -> IngestNode:
    wait_for(lambda: len(listed_keys(s3, BUCKET, PREFIX)) >= len(FILES), what="the first scan")
    return ing


def test_every_file_is_listed_and_nothing_else(scanned: IngestNode, s3) -> None:
    keys = listed_keys(s3, BUCKET, PREFIX)
    assert sorted(keys) == sorted([PREFIX + rel for rel in FILES] + [PREFIX + "sparse.img"])


def test_a_sparse_gibibyte_file_is_served_by_range(scanned: IngestNode, s3) -> None:
    key = PREFIX + "sparse.img"
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == SPARSE
    got = s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={SPARSE - 100_000}-")
    assert got["Body"].read() == bytes(100_000)
    assert got["ContentRange"] == f"bytes {SPARSE - 100_000}-{SPARSE - 1}/{SPARSE}"


def test_get_head_and_ranges_return_the_file_bytes(scanned: IngestNode, s3) -> None:
    for rel, data in FILES.items():
        key = PREFIX + rel
        got = s3.get_object(Bucket=BUCKET, Key=key)
        assert got["Body"].read() == data, rel
        assert got["ContentLength"] == len(data)
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == len(data)
        assert head["ETag"] == got["ETag"]
        assert head["ETag"].endswith('-1"') and len(head["ETag"]) == 36
        mtime = (scanned.tree / rel).stat().st_mtime
        assert abs(head["LastModified"].timestamp() - mtime) < 1.0
    key = PREFIX + "big/blob.bin"
    for start, end in ((0, 0), (100, 70_000), (len(BIG) - 10, len(BIG) - 1), (1 << 20, 3 << 20)):
        got = s3.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{end}")
        assert got["Body"].read() == BIG[start:end + 1]
        assert got["ContentRange"] == f"bytes {start}-{end}/{len(BIG)}"
    got = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=-5")
    assert got["Body"].read() == BIG[-5:]
    assert s3.head_object(Bucket=BUCKET, Key=PREFIX + "dir/sub/table.csv")["ContentType"] == "text/csv"


def test_aws_cli_copies_an_ingested_file_out(scanned: IngestNode, tmp_path: Path) -> None:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    out = tmp_path / "blob.bin"
    subprocess.run(["aws", "--endpoint-url", scanned.proc.endpoint, "s3", "cp",
                    f"s3://{BUCKET}/{PREFIX}big/blob.bin", str(out)], env=env, check=True,
                   capture_output=True, timeout=120)
    assert out.read_bytes() == BIG


def test_ten_thousand_files_are_listable(scanned: IngestNode, s3) -> None:
    keys = wait_for(lambda: (k := listed_keys(s3, TREE_BUCKET)) and len(k) == TREE_FILES and k,
                    what="10,000 files listed")
    assert keys[0] == "d000/f00000" and keys[-1] == f"d099/f{TREE_FILES - 1:05d}"
    assert s3.get_object(Bucket=TREE_BUCKET, Key="d042/f04242")["Body"].read() == b"4242"


@pytest.mark.parametrize("op", ["put", "delete", "delete_objects", "copy_into", "multipart", "put_outside_ok"])
def test_writes_inside_the_prefix_are_denied(scanned: IngestNode, s3, op: str) -> None:
    key = PREFIX + "hello.txt"

    def denied(call) -> None:
        with pytest.raises(ClientError) as info:
            call()
        err = info.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert err["Error"]["Code"] == "AccessDenied"
        assert "read-only" in err["Error"]["Message"]
        assert str(scanned.tree) not in err["Error"]["Message"]  # no server path to the client

    if op == "put":
        denied(lambda: s3.put_object(Bucket=BUCKET, Key=key, Body=b"overwrite"))
        denied(lambda: s3.put_object(Bucket=BUCKET, Key=PREFIX + "new-file", Body=b"new"))
    elif op == "delete":
        denied(lambda: s3.delete_object(Bucket=BUCKET, Key=key))
    elif op == "delete_objects":
        got = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": key}, {"Key": "outside/none"}]})
        assert [e["Key"] for e in got.get("Errors", [])] == [key]
        assert got["Errors"][0]["Code"] == "AccessDenied"
        assert [d["Key"] for d in got.get("Deleted", [])] == ["outside/none"]
    elif op == "copy_into":
        s3.put_object(Bucket=BUCKET, Key="outside/src", Body=b"src")
        denied(lambda: s3.copy_object(Bucket=BUCKET, Key=PREFIX + "copied",
                                      CopySource={"Bucket": BUCKET, "Key": "outside/src"}))
    elif op == "multipart":
        denied(lambda: s3.create_multipart_upload(Bucket=BUCKET, Key=PREFIX + "mp"))
    else:
        # Outside the prefix the bucket is an ordinary one.
        s3.put_object(Bucket=BUCKET, Key="notes/readme.txt", Body=b"mine")
        assert s3.get_object(Bucket=BUCKET, Key="notes/readme.txt")["Body"].read() == b"mine"
        s3.delete_object(Bucket=BUCKET, Key="notes/readme.txt")
    # Whatever was tried, the file and its object are as they were.
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == FILES["hello.txt"]
    assert (scanned.tree / "hello.txt").read_bytes() == FILES["hello.txt"]


def test_copy_from_an_ingested_object_stores_a_normal_copy(scanned: IngestNode, s3) -> None:
    s3.copy_object(Bucket=BUCKET, Key="copies/blob.bin", CopySource={"Bucket": BUCKET, "Key": PREFIX + "big/blob.bin"})
    got = s3.get_object(Bucket=BUCKET, Key="copies/blob.bin")
    assert got["Body"].read() == BIG
    s3.delete_object(Bucket=BUCKET, Key="copies/blob.bin")  # a normal object: deletable
    # UploadPartCopy of a range of an ingested file, into a key outside the prefix.
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="copies/part.bin")["UploadId"]
    part = s3.upload_part_copy(Bucket=BUCKET, Key="copies/part.bin", UploadId=up, PartNumber=1,
                               CopySource={"Bucket": BUCKET, "Key": PREFIX + "big/blob.bin"},
                               CopySourceRange="bytes=1000-1999999")
    s3.complete_multipart_upload(Bucket=BUCKET, Key="copies/part.bin", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=BUCKET, Key="copies/part.bin")["Body"].read() == BIG[1000:2_000_000]
    s3.delete_object(Bucket=BUCKET, Key="copies/part.bin")


def test_rescan_sees_added_changed_and_removed_files(scanned: IngestNode, s3) -> None:
    m = scanned.tree / "mutable"
    write(m / "stays.txt", b"stays")
    write(m / "changes.txt", b"v1")
    write(m / "goes.txt", b"bye")
    first = scanned.rescan()
    assert first["added"] == 3
    # Once hashed, only the rescan looks at them again (the hasher, finding one
    # changed, would refresh it itself, and rightly so).
    for name in ("stays.txt", "changes.txt", "goes.txt"):
        wait_hashed(s3, PREFIX + "mutable/" + name)
    old_etag = s3.head_object(Bucket=BUCKET, Key=PREFIX + "mutable/changes.txt")["ETag"]
    write(m / "changes.txt", b"version two")
    (m / "goes.txt").unlink()
    write(m / "new.txt", b"new")
    out = scanned.cli("ingest", "rescan", "--entry", "0").stdout
    assert "added 1, changed 1, removed 1" in out
    assert sorted(listed_keys(s3, BUCKET, PREFIX + "mutable/")) == [
        PREFIX + "mutable/changes.txt", PREFIX + "mutable/new.txt", PREFIX + "mutable/stays.txt"]
    got = s3.get_object(Bucket=BUCKET, Key=PREFIX + "mutable/changes.txt")
    assert got["Body"].read() == b"version two" and got["ETag"] != old_etag
    # Removed means gone: no delete marker, no older version left behind.
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=PREFIX + "mutable/")
    assert "DeleteMarkers" not in versions
    assert len(versions["Versions"]) == 3


def test_a_file_modified_after_the_scan_is_not_served_as_the_old_version(scanned: IngestNode, s3) -> None:
    # No retry: boto3 would retry the 503 and (rightly) get the new version.
    once = boto3.client("s3", endpoint_url=scanned.proc.endpoint, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, region_name=REGION,
                        config=Config(retries={"total_max_attempts": 1}))
    m = scanned.tree / "mutable"
    small, large = m / "edit-small.txt", m / "edit-large.bin"
    write(small, b"original")
    write(large, b"o" * 200_000)  # above the inline-read size: the sendfile path
    scanned.rescan()
    for path, new in ((small, b"EDITED!!"), (large, b"n" * 200_000)):  # same sizes: only mtime tells
        key = PREFIX + "mutable/" + path.name
        wait_hashed(s3, key)  # as above: then only the read looks at the file
        scanned_ns = path.stat().st_mtime_ns
        path.write_bytes(new)
        # A later mtime, whatever the file system's timestamp granularity.
        os.utime(path, ns=(scanned_ns + 10**9, scanned_ns + 10**9))
        with pytest.raises(ClientError) as info:
            once.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert info.value.response["Error"]["Code"] == "SlowDown"
        # The refused read scheduled a rescan of the file: the new bytes follow.
        wait_for(lambda k=key, n=new: _get_or_none(s3, k) == n, what="the changed file served")


def test_a_file_changed_while_it_is_sent_never_arrives_complete(scanned: IngestNode, s3) -> None:
    path = scanned.tree / "mutable" / "stream.bin"
    size = 48 * 1024 * 1024  # far more than the socket buffers: sendfile is mid-way when we change it
    write(path, b"s" * size)
    scanned.rescan()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": PREFIX + "mutable/stream.bin"})
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        resp = conn.getresponse()
        assert resp.status == 200 and int(resp.headers["Content-Length"]) == size
        first = resp.read(1024 * 1024)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # "changed" while being sent
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert len(first) + len(info.value.partial) < size
    finally:
        conn.close()


def _get_or_none(s3, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except ClientError:
        return None


def test_status_shows_skipped_files_and_hashing_reaches_every_file(scanned: IngestNode, s3) -> None:
    def all_hashed():
        entries = scanned.status()
        return entries if all(e["hashed_files"] == e["files"] for e in entries) else None

    entries = wait_for(all_hashed, timeout=120, what="every file hashed")
    assert entries[1]["files"] == TREE_FILES
    skipped = {s["path"]: s["reason"] for s in entries[0]["last_scan"]["skipped"]}
    assert "fifo" in skipped["a-fifo"]
    assert "leaves the root" in skipped["escape-link"]
    assert "directory" in skipped["dir/loop"]
    text = scanned.cli("ingest", "status", use_config=True).stdout
    assert f"s3://{BUCKET}/{PREFIX}" in text and "a-fifo: special file (fifo)" in text
    assert f"{TREE_FILES}/{TREE_FILES} files" in text
    for rel, data in FILES.items():
        head = s3.head_object(Bucket=BUCKET, Key=PREFIX + rel, ChecksumMode="ENABLED")
        assert base64.b64decode(head["ChecksumSHA256"]) == hashlib.sha256(data).digest(), rel
    head = s3.head_object(Bucket=BUCKET, Key=PREFIX + "sparse.img", ChecksumMode="ENABLED")
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == SHA256_OF_1GIB_OF_ZEROS


def test_files_on_disk_are_never_modified(scanned: IngestNode, s3) -> None:
    # Reads, denied writes, copies and rescans happened above (module order).
    for rel in FILES:
        s3.get_object(Bucket=BUCKET, Key=PREFIX + rel)["Body"].read()
    assert snapshot(scanned.tree, "mutable") == scanned.before
    assert (scanned.base / "outside-secret.txt").read_bytes() == b"secret"


def test_cli_without_a_running_node_fails_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "meshd", "ingest", "status", "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "no node is running" in out.stderr
