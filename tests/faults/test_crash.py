"""kill -9 at awkward moments, restart on the same data directory, and check the
guarantees of DESIGN.md: no partial object is ever visible, no acknowledged
write is lost, nothing reads back corrupt, and start-up removes leftover temp files."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.support.process import MeshdProcess
from tests.support.rawhttp import UNSIGNED, request, sign_headers
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

MiB = 1 << 20
BUCKET = "crash"


def staging(data_dir: Path) -> Path:
    return data_dir / "store" / "tmp"


def wait_for(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    wait_until(cond, timeout, what=what, interval=0.02)


def staged_bytes(data_dir: Path) -> int:
    total = 0
    for p in staging(data_dir).iterdir():
        try:
            total = max(total, p.stat().st_size)
        except FileNotFoundError:
            pass
    return total


def put_several(node: MeshdProcess, n: int = 6) -> dict[str, str]:
    """Objects of assorted sizes; their SHA-256 by key."""
    s3 = node.client()
    expected = {}
    for i, size in enumerate([0, 1, 4096, MiB + 7, 3 * MiB, 9 * MiB][:n]):
        body = os.urandom(size)
        key = f"before/{i}-{size}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        expected[key] = hashlib.sha256(body).hexdigest()
    return expected


def assert_intact(node: MeshdProcess, expected: dict[str, str]) -> None:
    s3 = node.client()
    for key, digest in expected.items():
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest, key


def listed_keys(node: MeshdProcess, bucket: str = BUCKET) -> set[str]:
    s3 = node.client()
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def restart(node: MeshdProcess) -> MeshdProcess:
    """Start a new process on the same data dir; temp files must be gone once it is ready."""
    again = MeshdProcess(node.data_dir).start()
    assert list(staging(node.data_dir).iterdir()) == []
    return again


class StreamingPut(threading.Thread):
    """PUT `total` bytes generated on the fly, in 1 MiB steps, through http.client."""

    def __init__(self, endpoint: str, path: str, total: int, query: str = "") -> None:
        super().__init__(daemon=True)
        self.endpoint, self.path, self.total, self.query = endpoint, path, total, query
        self.status: int | None = None
        self.error: BaseException | None = None
        self.sha256 = hashlib.sha256()

    def run(self) -> None:
        u = urlsplit(self.endpoint)
        target = self.path + (f"?{self.query}" if self.query else "")
        headers = sign_headers(self.endpoint, "PUT", target, {"Content-Length": str(self.total)}, payload=UNSIGNED)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        try:
            conn.putrequest("PUT", target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            block = os.urandom(MiB)
            for i in range(self.total // MiB):
                chunk = block[i % MiB:] + block[: i % MiB]
                self.sha256.update(chunk)
                conn.send(chunk)
            self.status = conn.getresponse().status
        except (OSError, http.client.HTTPException) as exc:
            self.error = exc
        finally:
            conn.close()


@pytest.fixture
def crash_node(tmp_path: Path):
    node = MeshdProcess(tmp_path / "data").start()
    node.client().create_bucket(Bucket=BUCKET)
    started = [node]
    yield node, started
    for n in started:
        n.kill()


def test_kill_during_large_upload_leaves_no_partial_object(crash_node) -> None:
    node, started = crash_node
    expected = put_several(node)
    up = StreamingPut(node.endpoint, f"/{BUCKET}/half-uploaded", 200 * MiB)
    up.start()
    wait_for(lambda: staged_bytes(node.data_dir) >= 32 * MiB, what="the upload to be half-way")
    node.kill()
    up.join(30)
    assert up.status is None  # never acknowledged
    assert list(staging(node.data_dir).iterdir()) != []  # the crash did leave a temp file ...

    again = restart(node)  # ... which start-up removed
    started.append(again)
    assert request(again.endpoint, "HEAD", f"/{BUCKET}/half-uploaded").status == 404
    assert "half-uploaded" not in listed_keys(again)
    versions = again.client().list_object_versions(Bucket=BUCKET, Prefix="half")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")
    assert listed_keys(again) == set(expected)
    assert_intact(again, expected)
    # The node works normally afterwards, including the same key.
    again.client().put_object(Bucket=BUCKET, Key="half-uploaded", Body=b"complete now")
    assert again.client().get_object(Bucket=BUCKET, Key="half-uploaded")["Body"].read() == b"complete now"


def test_kill_between_multipart_parts_then_resume_and_complete(crash_node) -> None:
    node, started = crash_node
    expected = put_several(node, 3)
    s3 = node.client()
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="mpu/resumed")["UploadId"]
    part1 = os.urandom(5 * MiB)
    e1 = s3.upload_part(Bucket=BUCKET, Key="mpu/resumed", UploadId=upload_id, PartNumber=1, Body=part1)["ETag"]
    node.kill()

    again = restart(node)
    started.append(again)
    s3 = again.client()
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("mpu/resumed", upload_id)]
    parts = s3.list_parts(Bucket=BUCKET, Key="mpu/resumed", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, e1, 5 * MiB)]
    part2 = os.urandom(MiB)
    e2 = s3.upload_part(Bucket=BUCKET, Key="mpu/resumed", UploadId=upload_id, PartNumber=2, Body=part2)["ETag"]
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="mpu/resumed", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    body = s3.get_object(Bucket=BUCKET, Key="mpu/resumed")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(part1 + part2).digest()
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
    assert_intact(again, expected)


def test_kill_during_a_part_upload_keeps_the_upload_and_earlier_parts(crash_node) -> None:
    node, started = crash_node
    s3 = node.client()
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key="mpu/cut")["UploadId"]
    part1 = os.urandom(5 * MiB)
    e1 = s3.upload_part(Bucket=BUCKET, Key="mpu/cut", UploadId=upload_id, PartNumber=1, Body=part1)["ETag"]
    up = StreamingPut(node.endpoint, f"/{BUCKET}/mpu/cut", 200 * MiB, f"partNumber=2&uploadId={upload_id}")
    up.start()
    wait_for(lambda: staged_bytes(node.data_dir) >= 16 * MiB, what="part 2 to be half-way")
    node.kill()
    up.join(30)
    assert up.status is None

    again = restart(node)
    started.append(again)
    s3 = again.client()
    parts = s3.list_parts(Bucket=BUCKET, Key="mpu/cut", UploadId=upload_id)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1]
    part2 = b"tail"
    e2 = s3.upload_part(Bucket=BUCKET, Key="mpu/cut", UploadId=upload_id, PartNumber=2, Body=part2)["ETag"]
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="mpu/cut", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert s3.get_object(Bucket=BUCKET, Key="mpu/cut")["Body"].read() == part1 + part2


def test_kill_during_complete_is_all_or_nothing(crash_node) -> None:
    node, started = crash_node
    s3 = node.client()
    key = "mpu/completing"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts, whole = [], hashlib.sha256()
    for n in range(1, 5):
        data = os.urandom(24 * MiB)
        whole.update(data)
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=n, Body=data)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    done = threading.Event()

    def complete() -> None:
        try:
            node.client().complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except Exception:  # the node dies under it
            pass
        done.set()

    threading.Thread(target=complete, daemon=True).start()
    # Kill while the parts are being assembled into one blob.
    wait_for(lambda: staged_bytes(node.data_dir) >= 8 * MiB or done.is_set(), what="assembly to start")
    node.kill()
    done.wait(30)

    again = restart(node)
    started.append(again)
    s3 = again.client()
    pending = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    try:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchKey"
        body = None
    if body is None:
        # Not completed: the upload is still there and can be completed now.
        assert pending == [upload_id]
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    else:
        assert pending == []
    assert hashlib.sha256(body).digest() == whole.digest()


def test_kill_during_concurrent_small_puts_loses_no_acknowledged_write(crash_node) -> None:
    node, started = crash_node
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        s3 = node.client(connect_timeout=2, read_timeout=10)
        i = 0
        while not stop.is_set():
            key = f"small/{worker}/{i}"
            body = os.urandom(100 + (i * 37) % 8000)
            try:
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            except Exception:
                return  # the node is gone
            with lock:
                acked[key] = body
            i += 1

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(writer, w) for w in range(8)]
        wait_for(lambda: len(acked) >= 150, what="a stream of acknowledged PUTs")
        node.kill()
        stop.set()
        for f in futures:
            f.result(timeout=60)

    again = restart(node)
    started.append(again)
    s3 = again.client()
    with lock:
        snapshot = dict(acked)
    assert len(snapshot) >= 150
    present = listed_keys(again)
    assert set(snapshot) <= present
    for key, body in snapshot.items():
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body, key
    # Unacknowledged PUTs may or may not have landed, but whatever is listed is whole.
    for key in present - set(snapshot):
        got = s3.get_object(Bucket=BUCKET, Key=key)
        assert len(got["Body"].read()) == got["ContentLength"]


def test_repeated_kills_during_uploads_never_corrupt(crash_node) -> None:
    node, started = crash_node
    expected = put_several(node, 4)
    current = node
    for round_no in range(3):
        up = StreamingPut(current.endpoint, f"/{BUCKET}/round-{round_no}", 200 * MiB)
        up.start()
        threshold = (8, 24, 48)[round_no] * MiB  # kill at a different point each round
        wait_for(lambda: staged_bytes(current.data_dir) >= threshold, what=f"round {round_no} upload")
        current.kill()
        up.join(30)
        current = restart(current)
        started.append(current)
        assert listed_keys(current) == set(expected)
        assert_intact(current, expected)
        body = f"written after crash {round_no}".encode()
        current.client().put_object(Bucket=BUCKET, Key=f"after/{round_no}", Body=body)
        expected[f"after/{round_no}"] = hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plain"])
def test_damaged_blob_never_hangs_a_reader(tmp_path, encrypt) -> None:
    """A blob cut short on disk (bit rot, an operator's mistake): a GET must end
    at once, with an error or a short body, never leave the client waiting for
    the rest, and never serve bytes that are not the object's."""
    config = tmp_path / "meshd.toml"
    config.write_text(f'[backends.local]\ntype = "filesystem"\nencrypt = {str(encrypt).lower()}\n')
    node = MeshdProcess(tmp_path / "data", config=config).start()
    try:
        data = os.urandom(8 * MiB)
        digest = hashlib.sha256(data).hexdigest()
        node.client().create_bucket(Bucket=BUCKET)
        node.client().put_object(Bucket=BUCKET, Key="damaged", Body=data)
        blob = node.data_dir / "store" / "blobs" / digest[:2] / digest[2:4] / digest
        os.truncate(blob, MiB)
        _fails_cleanly(node, {}, data, 0)
        # A range past the damage, and one before it: the same.
        _fails_cleanly(node, {"Range": f"bytes={2 * MiB}-{2 * MiB + 10}"}, data, 2 * MiB)
        os.unlink(blob)
        _fails_cleanly(node, {}, data, 0)
        node.client().put_object(Bucket=BUCKET, Key="healthy", Body=b"still serving")
        assert node.client().get_object(Bucket=BUCKET, Key="healthy")["Body"].read() == b"still serving"
        assert "Traceback" not in node.stderr_text()
    finally:
        node.kill()


def _fails_cleanly(node: MeshdProcess, headers: dict, data: bytes, offset: int) -> None:
    """A GET ends at once with an S3 error, or with a body cut short that is a
    true piece of the object."""
    try:
        reply = request(node.endpoint, "GET", f"/{BUCKET}/damaged", headers, timeout=20)
    except http.client.IncompleteRead as cut:
        assert cut.partial == data[offset:offset + len(cut.partial)]
    else:
        assert reply.status in (500, 503) and reply.error()["Code"] in ("InternalError", "SlowDown"), reply.body


def test_start_up_sweeps_orphan_blobs_and_keeps_referenced_ones(crash_node) -> None:
    """A crash between a blob's rename and its catalog commit leaves a complete
    blob that no version refers to; the next start removes it in the background,
    and leaves every referenced blob alone."""
    node, started = crash_node
    expected = put_several(node)
    kept = os.urandom(2 * MiB)
    node.client().put_object(Bucket=BUCKET, Key="kept", Body=kept)
    node.kill()
    blobs = node.data_dir / "store" / "blobs"
    orphan = os.urandom(MiB + 3)
    digest = hashlib.sha256(orphan).hexdigest()
    path = blobs / digest[:2] / digest[2:4] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orphan)
    before = {p.name for p in blobs.rglob("*") if p.is_file()}
    again = restart(node)
    started.append(again)
    wait_for(lambda: not path.exists(), timeout=30, what="orphan blob removed")
    after = {p.name for p in blobs.rglob("*") if p.is_file()}
    assert after == before - {digest}
    assert_intact(again, expected)
    assert again.client().get_object(Bucket=BUCKET, Key="kept")["Body"].read() == kept
