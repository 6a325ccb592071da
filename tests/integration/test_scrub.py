"""`meshd scrub` against real meshd processes whose stored bytes a test damaged
on disk: blob files (encrypted and plain) and inline objects in catalog.db.

What the client sees once a blob is found corrupt: GET answers 500
InternalError (never the bad bytes); HEAD still answers 200 with the version's
metadata (it reads no bytes, and the metadata is intact); other objects are
served as before; a PUT of the same bytes repairs the blob.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.support.process import MeshdProcess

pytestmark = pytest.mark.timeout(120)

BIG = 64 * 1024  # above inline_max_bytes (16 KiB): a blob file


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_file(data_dir: Path, data: bytes) -> Path:
    cid = sha(data)
    return data_dir / "store" / "blobs" / cid[:2] / cid[2:4] / cid


def scrub(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd", "scrub", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def get_error(s3, bucket: str, key: str) -> dict:
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return e.value.response


def flip_byte(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x40]))


def start(tmp_path: Path, encrypt: bool) -> tuple[MeshdProcess, Path | None]:
    data_dir = tmp_path / "data"
    config = None
    if not encrypt:
        config = tmp_path / "plain.toml"
        config.write_text(f'[node]\ndata_dir = "{data_dir}"\n\n'
                          '[backends.local]\ntype = "filesystem"\nencrypt = false\n')
    return MeshdProcess(data_dir, config=config).start(), config


@pytest.mark.parametrize("encrypt,damage", [
    (True, "flip"), (False, "flip"), (True, "truncate"), (False, "delete"),
], ids=["aead-flip", "plain-flip", "aead-truncate", "plain-delete"])
def test_damaged_blob_found_refused_and_repaired(tmp_path: Path, encrypt: bool, damage: str):
    node, config = start(tmp_path, encrypt)
    try:
        s3 = node.client()
        s3.create_bucket(Bucket="bkt")
        bad, good, small = os.urandom(BIG), os.urandom(BIG + 7), b"small object"
        vid = s3.put_object(Bucket="bkt", Key="dir/bad", Body=bad)["VersionId"]
        s3.put_object(Bucket="bkt", Key="good", Body=good)
        s3.put_object(Bucket="bkt", Key="small", Body=small)
        path = blob_file(node.data_dir, bad)
        assert path.is_file()
        if not encrypt:
            assert path.read_bytes() == bad  # stored plain: only SHA-256 can tell
        if damage == "flip":
            flip_byte(path, path.stat().st_size // 2)
        elif damage == "truncate":
            os.truncate(path, path.stat().st_size - 100)
        else:
            path.unlink()

        # --config (which names the data dir) for the plain node, --data for the other.
        where = ["--config", str(config)] if config else ["--data", str(node.data_dir)]
        r = scrub(*where)
        assert r.returncode == 1, r.stderr
        assert "checked 3 blobs" in r.stdout
        assert "corrupt: 1" in r.stdout
        assert sha(bad) in r.stdout
        assert f"bkt/dir/bad version {vid}" in r.stdout
        assert sha(good) not in r.stdout

        err = get_error(s3, "bkt", "dir/bad")
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert err["Error"]["Code"] == "InternalError"
        head = s3.head_object(Bucket="bkt", Key="dir/bad")  # metadata is intact
        assert head["ContentLength"] == len(bad) and head["VersionId"] == vid
        assert s3.get_object(Bucket="bkt", Key="good")["Body"].read() == good
        assert s3.get_object(Bucket="bkt", Key="small")["Body"].read() == small

        status = scrub("--status", *where)
        assert status.returncode == 0
        assert "state: idle" in status.stdout and "corrupt 1" in status.stdout

        # A second pass skips the damaged blob (still reported as damaged in total) and exits 0.
        again = scrub(*where)
        assert again.returncode == 0, again.stdout
        assert "damaged in total: 1" in again.stdout

        s3.put_object(Bucket="bkt", Key="again", Body=bad)  # the same bytes repair the blob
        assert s3.get_object(Bucket="bkt", Key="dir/bad")["Body"].read() == bad
        repaired = scrub(*where)
        assert repaired.returncode == 0, repaired.stdout
        assert "corrupt: 0" in repaired.stdout and "damaged in total: 0" in repaired.stdout
    finally:
        node.stop()


def test_inline_object_corrupted_in_catalog(tmp_path: Path):
    node, _ = start(tmp_path, encrypt=True)
    small, other = b"a small object kept in the catalog", b"another one"
    try:
        s3 = node.client()
        s3.create_bucket(Bucket="bkt")
        vid = s3.put_object(Bucket="bkt", Key="small", Body=small)["VersionId"]
        s3.put_object(Bucket="bkt", Key="other", Body=other)
    finally:
        node.stop()
    db = sqlite3.connect(node.data_dir / "catalog.db")
    try:
        (stored,) = db.execute("SELECT data FROM inline_blobs WHERE content_id=?", (sha(small),)).fetchone()
        assert small not in stored  # encrypted: only the tag can tell
        damaged = bytearray(stored)
        damaged[len(damaged) // 2] ^= 0x01
        with db:
            db.execute("UPDATE inline_blobs SET data=? WHERE content_id=?", (bytes(damaged), sha(small)))
    finally:
        db.close()
    node.start()
    try:
        s3 = node.client()
        r = scrub("--data", str(node.data_dir))
        assert r.returncode == 1, r.stderr
        assert sha(small) in r.stdout and f"bkt/small version {vid}" in r.stdout
        assert get_error(s3, "bkt", "small")["Error"]["Code"] == "InternalError"
        assert s3.get_object(Bucket="bkt", Key="other")["Body"].read() == other
        s3.put_object(Bucket="bkt", Key="small", Body=small)
        assert s3.get_object(Bucket="bkt", Key="small", VersionId=vid)["Body"].read() == small
        assert scrub("--data", str(node.data_dir)).returncode == 0
    finally:
        node.stop()


def test_no_node_running_is_a_usage_error(tmp_path: Path):
    r = scrub("--data", str(tmp_path))
    assert r.returncode == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "no node is running" in r.stderr


def test_json_report_of_a_clean_node(node: MeshdProcess, s3, bucket: str):
    import json

    data = os.urandom(BIG)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    r = scrub("--data", str(node.data_dir), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["checked"] >= 1 and report["bytes"] >= len(data) and report["corrupt"] == []
    assert report["finished"] >= report["started"]
