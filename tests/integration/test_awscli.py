"""The aws cli (v1) and s3cmd against a real node, exactly as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.process import MeshdProcess
from tests.support.s3cmd import s3cmd_runner

pytestmark = pytest.mark.timeout(300)

TREE = {
    "top.txt": b"top level\n",
    "a/b/c/deep.bin": bytes(range(256)) * 40,
    "a/sibling.txt": b"sibling\n",
    "ünïcødé/日本語.txt": "こんにちは\n".encode(),
    "with spaces/a file named with spaces.txt": b"spaces\n",
    "plus+and=equals/x&y.txt": b"odd characters\n",
    "empty.txt": b"",
}


def aws(env: dict[str, str], endpoint: str, *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["aws", "--endpoint-url", endpoint, *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"aws {' '.join(args)}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def aws_json(env: dict[str, str], endpoint: str, *args: str) -> dict:
    out = aws(env, endpoint, *args, "--output", "json")
    return json.loads(out) if out.strip() else {}


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def cli_bucket(node: MeshdProcess, aws_env: dict[str, str]) -> str:
    name = f"cli-{uuid.uuid4().hex[:12]}"
    out = aws(aws_env, node.endpoint, "s3", "mb", f"s3://{name}")
    assert f"make_bucket: {name}" in out
    return name


def test_mb_shows_in_bucket_list(node: MeshdProcess, aws_env: dict[str, str], cli_bucket: str) -> None:
    out = aws(aws_env, node.endpoint, "s3", "ls")
    assert any(line.split()[-1] == cli_bucket for line in out.splitlines())


def test_cp_small_file_up_and_down(node: MeshdProcess, aws_env: dict[str, str], cli_bucket: str,
                                   tmp_path: Path) -> None:
    src = tmp_path / "small.txt"
    src.write_bytes(b"hello from the aws cli\n")
    out = aws(aws_env, node.endpoint, "s3", "cp", str(src), f"s3://{cli_bucket}/docs/small.txt")
    assert "upload:" in out
    dst = tmp_path / "back.txt"
    aws(aws_env, node.endpoint, "s3", "cp", f"s3://{cli_bucket}/docs/small.txt", str(dst))
    assert dst.read_bytes() == src.read_bytes()


def test_cp_40mib_file_uses_multipart(node: MeshdProcess, aws_env: dict[str, str], cli_bucket: str,
                                      tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(40):
            f.write(block[i:] + block[:i])  # 40 distinct MiB
    aws(aws_env, node.endpoint, "s3", "cp", str(src), f"s3://{cli_bucket}/big.bin")
    head = aws_json(aws_env, node.endpoint, "s3api", "head-object", "--bucket", cli_bucket, "--key", "big.bin")
    assert head["ContentLength"] == 40 << 20
    # The cli split it (8 MiB threshold): a multipart ETag "<md5>-<parts>".
    assert head["ETag"].strip('"').endswith("-5")
    dst = tmp_path / "big.back"
    aws(aws_env, node.endpoint, "s3", "cp", f"s3://{cli_bucket}/big.bin", str(dst))
    assert sha256_file(dst) == sha256_file(src)
    uploads = aws_json(aws_env, node.endpoint, "s3api", "list-multipart-uploads", "--bucket", cli_bucket)
    assert not uploads.get("Uploads")


def _sync_lines(out: str, verb: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{verb}:")]


def test_sync_up_again_changed_and_down(node: MeshdProcess, aws_env: dict[str, str], cli_bucket: str,
                                        tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, TREE)
    # Older than "now" so a second sync sees the uploaded copies as up to date.
    past = time.time() - 3600
    for p in src.rglob("*"):
        os.utime(p, (past, past))
    target = f"s3://{cli_bucket}/tree"

    out = aws(aws_env, node.endpoint, "s3", "sync", str(src), target)
    assert len(_sync_lines(out, "upload")) == len(TREE)

    out = aws(aws_env, node.endpoint, "s3", "sync", str(src), target)
    assert _sync_lines(out, "upload") == [], out

    changed = src / "a" / "sibling.txt"
    changed.write_bytes(b"sibling, now longer\n")
    out = aws(aws_env, node.endpoint, "s3", "sync", str(src), target)
    uploads = _sync_lines(out, "upload")
    assert len(uploads) == 1 and "a/sibling.txt" in uploads[0], out

    down = tmp_path / "down"
    down.mkdir()
    out = aws(aws_env, node.endpoint, "s3", "sync", target, str(down))
    assert len(_sync_lines(out, "download")) == len(TREE)
    assert read_tree(down) == read_tree(src)


def test_ls_list_recursive_and_prefix(node: MeshdProcess, aws_env: dict[str, str], cli_bucket: str,
                                      tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, TREE)
    aws(aws_env, node.endpoint, "s3", "sync", str(src), f"s3://{cli_bucket}/")

    top = aws(aws_env, node.endpoint, "s3", "ls", f"s3://{cli_bucket}/")
    entries = {line.strip().removeprefix("PRE ") if line.strip().startswith("PRE ") else line.split(None, 3)[-1]
               for line in top.splitlines()}
    assert {"a/", "ünïcødé/", "with spaces/", "plus+and=equals/", "top.txt", "empty.txt"} <= entries

    rec = aws(aws_env, node.endpoint, "s3", "ls", "--recursive", f"s3://{cli_bucket}/")
    keys = sorted(line.split(None, 3)[3] for line in rec.splitlines())
    assert keys == sorted(TREE)
    sizes = {line.split(None, 3)[3]: int(line.split()[2]) for line in rec.splitlines()}
    assert sizes == {k: len(v) for k, v in TREE.items()}

    pre = aws(aws_env, node.endpoint, "s3", "ls", "--recursive", f"s3://{cli_bucket}/a/")
    assert sorted(line.split(None, 3)[3] for line in pre.splitlines()) == ["a/b/c/deep.bin", "a/sibling.txt"]

    spaced = aws(aws_env, node.endpoint, "s3", "ls", f"s3://{cli_bucket}/with spaces/")
    assert "a file named with spaces.txt" in spaced


def test_rm_recursive(node: MeshdProcess, aws_env: dict[str, str], cli_bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, TREE)
    aws(aws_env, node.endpoint, "s3", "sync", str(src), f"s3://{cli_bucket}/")
    keep = tmp_path / "keep.txt"
    keep.write_bytes(b"keep")
    aws(aws_env, node.endpoint, "s3", "cp", str(keep), f"s3://{cli_bucket}/zz-keep.txt")

    out = aws(aws_env, node.endpoint, "s3", "rm", "--recursive", f"s3://{cli_bucket}/a/")
    assert len([line for line in out.splitlines() if line.startswith("delete:")]) == 2
    rec = aws(aws_env, node.endpoint, "s3", "ls", "--recursive", f"s3://{cli_bucket}/")
    assert "a/sibling.txt" not in rec and "top.txt" in rec

    aws(aws_env, node.endpoint, "s3", "rm", "--recursive", f"s3://{cli_bucket}/")
    assert aws(aws_env, node.endpoint, "s3", "ls", "--recursive", f"s3://{cli_bucket}/").strip() == ""
    # Objects are versioned: the removed ones are delete markers now, the bucket still has history.
    versions = aws_json(aws_env, node.endpoint, "s3api", "list-object-versions", "--bucket", cli_bucket)
    assert len(versions.get("DeleteMarkers", [])) == len(TREE) + 1


def test_s3api_object_calls(node: MeshdProcess, aws_env: dict[str, str], cli_bucket: str, tmp_path: Path) -> None:
    ep = node.endpoint
    body = tmp_path / "body.bin"
    body.write_bytes(b"version one")
    v1 = aws_json(aws_env, ep, "s3api", "put-object", "--bucket", cli_bucket, "--key", "dir/obj",
                  "--body", str(body), "--content-type", "text/plain", "--metadata", "project=mesh")
    assert v1["ETag"] == f'"{hashlib.md5(b"version one").hexdigest()}"'
    body.write_bytes(b"version two!")
    v2 = aws_json(aws_env, ep, "s3api", "put-object", "--bucket", cli_bucket, "--key", "dir/obj",
                  "--body", str(body))
    assert v1["VersionId"] != v2["VersionId"]

    head = aws_json(aws_env, ep, "s3api", "head-object", "--bucket", cli_bucket, "--key", "dir/obj",
                    "--version-id", v1["VersionId"])
    assert head["ContentLength"] == len(b"version one")
    assert head["ContentType"] == "text/plain"
    assert head["Metadata"] == {"project": "mesh"}

    out = tmp_path / "out.bin"
    got = aws_json(aws_env, ep, "s3api", "get-object", "--bucket", cli_bucket, "--key", "dir/obj", str(out))
    assert out.read_bytes() == b"version two!" and got["VersionId"] == v2["VersionId"]
    aws_json(aws_env, ep, "s3api", "get-object", "--bucket", cli_bucket, "--key", "dir/obj",
             "--version-id", v1["VersionId"], "--range", "bytes=8-", str(out))
    assert out.read_bytes() == b"one"

    versions = aws_json(aws_env, ep, "s3api", "list-object-versions", "--bucket", cli_bucket)
    listed = {(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions["Versions"]}
    assert listed == {("dir/obj", v1["VersionId"], False), ("dir/obj", v2["VersionId"], True)}

    deleted = aws_json(aws_env, ep, "s3api", "delete-object", "--bucket", cli_bucket, "--key", "dir/obj")
    assert deleted["DeleteMarker"] is True
    proc = subprocess.run(["aws", "--endpoint-url", ep, "s3api", "head-object", "--bucket", cli_bucket,
                           "--key", "dir/obj"], env=aws_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "404" in proc.stderr
    # Deleting the marker by version id brings version two back.
    aws_json(aws_env, ep, "s3api", "delete-object", "--bucket", cli_bucket, "--key", "dir/obj",
             "--version-id", deleted["VersionId"])
    aws_json(aws_env, ep, "s3api", "get-object", "--bucket", cli_bucket, "--key", "dir/obj", str(out))
    assert out.read_bytes() == b"version two!"


def test_cli_reports_s3_errors(node: MeshdProcess, aws_env: dict[str, str]) -> None:
    proc = subprocess.run(
        ["aws", "--endpoint-url", node.endpoint, "s3api", "head-bucket", "--bucket", "no-such-bucket-here"],
        env=aws_env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "404" in proc.stderr
    bad = dict(aws_env, AWS_SECRET_ACCESS_KEY="wrong-secret-key-000000000000000000000")
    proc = subprocess.run(["aws", "--endpoint-url", node.endpoint, "s3", "ls"], env=bad,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "SignatureDoesNotMatch" in proc.stderr


# -- s3cmd --------------------------------------------------------------------

@pytest.fixture
def s3cmd(node: MeshdProcess, tmp_path: Path):
    run = s3cmd_runner(node, tmp_path / "s3cfg", signature_v2=False)
    return lambda *args: run(*args).stdout


def test_s3cmd_put_get_ls(s3cmd, tmp_path: Path) -> None:
    name = f"s3cmd-{uuid.uuid4().hex[:10]}"
    s3cmd("mb", f"s3://{name}")
    assert f"s3://{name}" in s3cmd("ls")
    src = tmp_path / "upload me.txt"
    src.write_bytes(b"s3cmd was here\n" * 100)
    s3cmd("put", str(src), f"s3://{name}/dir/upload me.txt")
    big = tmp_path / "multi.bin"
    big.write_bytes(os.urandom(17 << 20))  # above s3cmd's 15 MiB multipart chunk
    s3cmd("put", str(big), f"s3://{name}/multi.bin")
    listing = s3cmd("ls", "--recursive", f"s3://{name}/")
    assert f"s3://{name}/dir/upload me.txt" in listing and f"s3://{name}/multi.bin" in listing
    assert f"s3://{name}/dir/" in s3cmd("ls", f"s3://{name}/")
    back = tmp_path / "back.txt"
    s3cmd("get", f"s3://{name}/dir/upload me.txt", str(back))
    assert back.read_bytes() == src.read_bytes()
    big_back = tmp_path / "multi.back"
    s3cmd("get", f"s3://{name}/multi.bin", str(big_back))
    assert sha256_file(big_back) == sha256_file(big)
    s3cmd("del", f"s3://{name}/dir/upload me.txt")
    assert "upload me.txt" not in s3cmd("ls", "--recursive", f"s3://{name}/")
