"""At-rest encryption and per-bucket backends, through real meshd processes.

What is on disk is checked directly: blob files and the catalog never hold a
recognisable byte of the objects, the master key file is created 0600, and a
node reads what it wrote under earlier settings."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backends.encryption import ALG_AES_256_GCM, ALG_CHACHA20_POLY1305, HEADER_SIZE, MAGIC
from tests.support.process import MeshdProcess
from tests.support.rawhttp import request

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


def marked(size: int, marker: bytes) -> bytes:
    """Random bytes with a marker repeated through them, to look for on disk."""
    body = bytearray(os.urandom(size))
    for i in range(0, size - len(marker), 4096):
        body[i:i + len(marker)] = marker
    return bytes(body)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def blob_path(data_dir: Path, body: bytes) -> Path:
    digest = hashlib.sha256(body).hexdigest()
    return data_dir / "store" / "blobs" / digest[:2] / digest[2:4] / digest


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_blobs_and_inline_objects_are_encrypted_by_default(tmp_path):
    node = MeshdProcess(tmp_path / "data").start()
    try:
        s3 = node.client()
        s3.create_bucket(Bucket="secret")
        big, small = marked(3 * MiB + 17, b"BIG-PLAINTEXT-MARKER"), marked(2000, b"SMALL-PLAINTEXT-MARKER")
        s3.put_object(Bucket="secret", Key="big", Body=big)
        s3.put_object(Bucket="secret", Key="small", Body=small)
        assert s3.get_object(Bucket="secret", Key="big")["Body"].read() == big
        rng = s3.get_object(Bucket="secret", Key="big", Range="bytes=1000000-2100000")["Body"].read()
        assert rng == big[1000000:2100001]
        assert s3.get_object(Bucket="secret", Key="small", Range="bytes=5-9")["Body"].read() == small[5:10]

        stored = blob_path(node.data_dir, big).read_bytes()
        assert stored.startswith(MAGIC) and len(stored) > len(big) + HEADER_SIZE
        for path in files_under(node.data_dir):  # blob files, catalog.db and its WAL
            content = path.read_bytes()
            assert b"BIG-PLAINTEXT-MARKER" not in content, path
            assert b"SMALL-PLAINTEXT-MARKER" not in content, path

        key = node.data_dir / "master.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    finally:
        node.kill()


def test_encryption_off_stores_plain_files_and_old_blobs_stay_readable(tmp_path):
    data_dir = tmp_path / "data"
    node = MeshdProcess(data_dir).start()  # encrypted (the default)
    before = marked(100_000, b"WRITTEN-ENCRYPTED")
    try:
        node.client().create_bucket(Bucket="mixed")
        node.client().put_object(Bucket="mixed", Key="before", Body=before)
    finally:
        assert node.stop() == 0
    plain = config(tmp_path, '[backends.local]\ntype = "filesystem"\nencrypt = false\n')
    node = MeshdProcess(data_dir, config=plain).start()
    try:
        s3 = node.client()
        after = marked(100_000, b"WRITTEN-PLAIN")
        s3.put_object(Bucket="mixed", Key="after", Body=after)
        assert blob_path(data_dir, after).read_bytes() == after  # plain: served with sendfile
        assert s3.get_object(Bucket="mixed", Key="before")["Body"].read() == before
        assert s3.get_object(Bucket="mixed", Key="after")["Body"].read() == after
        # The same bytes again dedup onto the existing (encrypted) blob.
        s3.put_object(Bucket="mixed", Key="copy-of-before", Body=before)
        assert s3.get_object(Bucket="mixed", Key="copy-of-before")["Body"].read() == before
    finally:
        node.kill()


def test_blobs_keep_the_cipher_they_were_written_with(tmp_path):
    data_dir = tmp_path / "data"
    chacha = config(tmp_path, '[encryption]\ncipher = "chacha20-poly1305"\n')
    node = MeshdProcess(data_dir, config=chacha).start()
    old = marked(200_000, b"WRITTEN-WITH-CHACHA")
    try:
        node.client().create_bucket(Bucket="ciphers")
        node.client().put_object(Bucket="ciphers", Key="old", Body=old)
    finally:
        assert node.stop() == 0
    assert blob_path(data_dir, old).read_bytes()[9] == ALG_CHACHA20_POLY1305
    aes = config(tmp_path, '[encryption]\ncipher = "aes-256-gcm"\n')
    node = MeshdProcess(data_dir, config=aes).start()
    try:
        s3 = node.client()
        new = marked(200_000, b"WRITTEN-WITH-AES")
        s3.put_object(Bucket="ciphers", Key="new", Body=new)
        assert blob_path(data_dir, new).read_bytes()[9] == ALG_AES_256_GCM
        assert s3.get_object(Bucket="ciphers", Key="old")["Body"].read() == old
        assert s3.get_object(Bucket="ciphers", Key="old", Range="bytes=70000-140000")["Body"].read() == old[70000:140001]
        assert s3.get_object(Bucket="ciphers", Key="new")["Body"].read() == new
    finally:
        node.kill()


def test_a_wrong_master_key_is_an_error_not_corruption(tmp_path):
    data_dir = tmp_path / "data"
    node = MeshdProcess(data_dir).start()
    body = os.urandom(50_000)
    try:
        node.client().create_bucket(Bucket="keys")
        node.client().put_object(Bucket="keys", Key="k", Body=body)
    finally:
        assert node.stop() == 0
    other = config(tmp_path, f'[encryption]\nkey = "{"ab" * 32}"\n')
    node = MeshdProcess(data_dir, config=other).start()
    try:
        reply = request(node.endpoint, "GET", "/keys/k")
        assert reply.status == 503 and reply.error()["Code"] == "SlowDown"
        assert b"master key" not in reply.body  # the detail is for the operator's log
        assert "was encrypted with master key" in node.stderr_text()
    finally:
        assert node.stop() == 0
    # The blob was not marked damaged: with the right key it reads again.
    node = MeshdProcess(data_dir).start()
    try:
        assert node.client().get_object(Bucket="keys", Key="k")["Body"].read() == body
    finally:
        node.kill()


def test_a_new_data_directory_is_created_private(tmp_path):
    data_dir = tmp_path / "fresh" / "data"
    proc = subprocess.Popen([sys.executable, "-m", "meshd", "run", "--data", str(data_dir), "--listen",
                             "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                break
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700  # the catalog's metadata stays private
        assert stat.S_IMODE((data_dir / "master.key").stat().st_mode) == 0o600
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_a_master_key_file_readable_by_others_stops_start_up(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key = data_dir / "master.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "meshd", "run", "--data", str(data_dir), "--listen",
                           "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("meshd: error: master key file") and "0644" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_buckets_on_different_backends(tmp_path):
    cfg = config(tmp_path, f"""
[backends.scratch]
type = "filesystem"
path = "{tmp_path / 'scratch'}"
compress = "zstd"

[buckets.squeezed]
backend = "scratch"
""")
    node = MeshdProcess(tmp_path / "data", config=cfg).start()
    try:
        s3 = node.client()
        s3.create_bucket(Bucket="squeezed")
        s3.create_bucket(Bucket="ordinary")
        text = b"".join(b"line %d of a very compressible table\n" % i for i in range(200_000))
        s3.put_object(Bucket="squeezed", Key="table.csv", Body=text)
        s3.put_object(Bucket="ordinary", Key="table.csv", Body=text)
        for bucket in ("squeezed", "ordinary"):
            assert s3.get_object(Bucket=bucket, Key="table.csv")["Body"].read() == text
            part = s3.get_object(Bucket=bucket, Key="table.csv", Range="bytes=3000000-3000099")["Body"].read()
            assert part == text[3000000:3000100]
        squeezed = files_under(tmp_path / "scratch" / "blobs")
        ordinary = files_under(tmp_path / "data" / "store" / "blobs")
        assert len(squeezed) == 1 and len(ordinary) == 1
        assert squeezed[0].stat().st_size < len(text) / 5  # compressed, then encrypted
        assert ordinary[0].stat().st_size > len(text)  # encrypted only

        # A copy into a bucket on another backend stores the bytes there too.
        s3.copy_object(Bucket="ordinary", Key="copied", CopySource={"Bucket": "squeezed", "Key": "table.csv"})
        assert s3.get_object(Bucket="ordinary", Key="copied")["Body"].read() == text
        # Deleting the versions frees both blobs.
        for bucket, key in (("squeezed", "table.csv"), ("ordinary", "table.csv"), ("ordinary", "copied")):
            for v in s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]:
                s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
        assert files_under(tmp_path / "scratch" / "blobs") == []
        assert files_under(tmp_path / "data" / "store" / "blobs") == []
    finally:
        node.kill()


def test_a_config_naming_an_unknown_backend_for_a_bucket_is_refused(tmp_path):
    cfg = config(tmp_path, '[buckets.photos]\nbackend = "nowhere"\n')
    proc = subprocess.run([sys.executable, "-m", "meshd", "run", "--config", str(cfg), "--data",
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "meshd: error: buckets.photos.backend: no backend named 'nowhere'"
