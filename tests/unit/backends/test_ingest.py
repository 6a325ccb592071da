"""backends/ingest.py: the scanner, checked reads and the paced hasher, on real trees.

Tests run as root in CI, where chmod 000 does not stop a read; the permission
test then scans in a forked child that dropped to user `nobody`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.base import BackendError
from backends.ingest import (
    MAX_KEY_BYTES,
    Expect,
    HashCancelled,
    IngestedFileChanged,
    IngestedPathRefused,
    IngestRootUnavailable,
    ScannedFile,
    Skipped,
    TreeScan,
    checked_real_path,
    hash_file,
    open_checked,
    read_checked,
    scan_one,
    scan_tree,
)
from backends.pacing import Pacer

pytestmark = pytest.mark.timeout(120)


def scan(root: Path, prefix: str = "", batch_size: int = 100) -> tuple[dict[str, ScannedFile], TreeScan]:
    ts = scan_tree(root, prefix, batch_size)

    async def collect() -> list[ScannedFile]:
        return [f async for batch in ts for f in batch]

    files = asyncio.run(collect())
    by_rel = {f.rel: f for f in files}
    assert len(by_rel) == len(files), "a file was reported twice"
    return by_rel, ts


def reasons(ts: TreeScan) -> dict[str, str]:
    return {s.rel: s.reason for s in ts.skipped}


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_all(
    root: Path, rel: str, expect: Expect, start: int = 0, length: int | None = None, chunk: int = 1 << 20
) -> bytes:
    async def go() -> bytes:
        return b"".join([c async for c in read_checked(root, rel, expect, start, length, chunk)])

    return asyncio.run(go())


def expect_of(path: Path) -> Expect:
    st_ = path.stat()
    return Expect(st_.st_size, st_.st_mtime_ns, st_.st_ino)


# ---------------------------------------------------------------------------
# Scanning


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root / "a.txt", b"hello")
    write(root / "empty.bin", b"")
    write(root / "dir" / "sub" / "b.csv", b"1,2,3\n")
    write(root / "Ünïcødé" / "数据" / "файл.dat", "μ".encode() * 100)
    write(root / "space name" / "with+plus & amp.txt", b"sp")
    deep = root.joinpath(*[f"d{i}" for i in range(40)])
    write(deep / "leaf", b"deep")
    (root / "emptydir").mkdir()
    return root


def test_scan_lists_every_regular_file_with_its_stat(tree: Path) -> None:
    files, ts = scan(tree)
    deep_rel = "/".join(f"d{i}" for i in range(40)) + "/leaf"
    assert set(files) == {
        "a.txt",
        "empty.bin",
        "dir/sub/b.csv",
        "Ünïcødé/数据/файл.dat",
        "space name/with+plus & amp.txt",
        deep_rel,
    }
    for rel, f in files.items():
        st_ = (tree / rel).stat()
        assert (f.size, f.mtime_ns, f.inode) == (st_.st_size, st_.st_mtime_ns, st_.st_ino)
    assert files["empty.bin"].size == 0
    assert ts.skipped == []
    assert ts.files == 6
    assert ts.bytes == sum(f.size for f in files.values())


def test_scan_batches_are_bounded(tree: Path) -> None:
    async def sizes() -> list[int]:
        return [len(b) async for b in scan_tree(tree, "", batch_size=2)]

    got = asyncio.run(sizes())
    assert all(n <= 2 for n in got) and sum(got) == 6


def test_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = write(tmp_path / "secret.txt", b"secret")
    write(root / "real.txt", b"real")
    write(root / "sub" / "inner.txt", b"inner")
    os.symlink(outside, root / "escape.txt")
    os.symlink("../secret.txt", root / "escape-rel.txt")
    os.symlink(tmp_path, root / "escape-dir")
    os.symlink("sub", root / "dir-link")
    os.symlink(".", root / "sub" / "loop-dir")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("missing", root / "dangling")
    os.symlink("real.txt", root / "file-link")
    os.symlink("../real.txt", root / "sub" / "up-link")
    files, ts = scan(root)
    assert set(files) == {"real.txt", "sub/inner.txt", "file-link", "sub/up-link"}
    # A symlink to a file inside the root is served as that file.
    assert files["file-link"].inode == files["real.txt"].inode
    assert files["file-link"].size == 4
    r = reasons(ts)
    assert "leaves the root" in r["escape.txt"]
    assert "leaves the root" in r["escape-rel.txt"]
    assert "leaves the root" in r["escape-dir"]
    assert "directory" in r["dir-link"]
    assert "directory" in r["sub/loop-dir"]
    assert "loop" in r["loop-a"] and "loop" in r["loop-b"]
    assert "broken" in r["dangling"]


def test_special_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "ok", b"ok")
    os.mkfifo(root / "fifo")
    sock_path = root / "sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_path))
        files, ts = scan(root)
    finally:
        s.close()
    assert set(files) == {"ok"}
    r = reasons(ts)
    assert "fifo" in r["fifo"]
    assert "socket" in r["sock"]


def test_devices_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    try:
        os.mknod(root / "null", 0o600 | 0o020000, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs privileges")
    files, ts = scan(root)
    assert files == {}
    assert "device" in reasons(ts)["null"]


def test_undecodable_names_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "fine", b"1")
    bad = os.fsencode(root) + b"/bad-\xff\xfe"
    with open(bad, "wb") as f:
        f.write(b"x")
    files, ts = scan(root)
    assert set(files) == {"fine"}
    [skipped] = ts.skipped
    assert "UTF-8" in skipped.reason
    assert skipped.rel == "bad-\\xff\\xfe"


def test_keys_longer_than_s3_allows_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # 4 directories of 250 bytes, 4 slashes and a 20-byte name: 1024 bytes of key.
    dirs = ["a" * 250, "b" * 250, "c" * 250, "d" * 250]
    ok_name = "x" * (MAX_KEY_BYTES - 1004)
    long_name = "y" * (MAX_KEY_BYTES - 1003)
    write(root.joinpath(*dirs, ok_name))
    write(root.joinpath(*dirs, long_name))
    files, ts = scan(root)
    assert list(files) == ["/".join([*dirs, ok_name])]
    assert "1024" in reasons(ts)["/".join([*dirs, long_name])]
    # With a prefix the same file no longer fits.
    files, ts = scan(root, prefix="raw/")
    assert files == {}
    assert len(ts.skipped) == 2


def test_missing_root_is_an_error_not_an_empty_tree(tmp_path: Path) -> None:
    with pytest.raises(IngestRootUnavailable):
        scan(tmp_path / "nope")
    write(tmp_path / "file")
    with pytest.raises(IngestRootUnavailable):
        scan(tmp_path / "file")


def test_scan_one_sees_a_file_as_the_walk_does(tree: Path) -> None:
    files, _ = scan(tree)
    for rel, f in files.items():
        assert scan_one(tree, rel) == f
    assert scan_one(tree, "nope") is None
    assert scan_one(tree, "dir/sub") is None  # a directory is not a file
    assert scan_one(tree, "../x") is None
    os.mkfifo(tree / "fifo")
    got = scan_one(tree, "fifo")
    assert isinstance(got, Skipped) and "fifo" in got.reason
    (tree / "a.txt").write_bytes(b"changed!")
    got = scan_one(tree, "a.txt")
    assert isinstance(got, ScannedFile) and got.size == 8
    with pytest.raises(IngestRootUnavailable):  # not "gone": the root is
        scan_one(tree.with_name("elsewhere"), "a.txt")


def test_stopping_early_ends_the_walker(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for i in range(300):
        write(root / f"f{i:04}")

    async def first_batch() -> int:
        async for batch in scan_tree(root, "", batch_size=10):
            return len(batch)
        return 0

    assert asyncio.run(first_batch()) == 10
    assert not any(t.name == "ingest-scan" for t in threading.enumerate())


SHA256_OF_1GIB_OF_ZEROS = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"


def test_sparse_gibibyte_file_is_scanned_by_its_size(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with open(root / "sparse.img", "wb") as f:
        f.truncate(1 << 30)
    files, _ = scan(root)
    assert files["sparse.img"].size == 1 << 30
    digest = hash_file(root, "sparse.img", Expect.of(files["sparse.img"]))
    assert digest == SHA256_OF_1GIB_OF_ZEROS  # `truncate -s 1G f && sha256sum f`


def scan_as_nobody(root: Path) -> dict:
    """Scan in a forked child that dropped root (root reads any file)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter need not be readable by nobody
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            ts = TreeScan(root)
            files = sorted(f.rel for batch in ts.walk() for f in batch)
            out = {"files": files, "skipped": reasons(ts), "unreadable_dirs": ts.unreadable_dirs}
            os.write(w, json.dumps(out).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


def test_unreadable_files_and_directories_are_skipped() -> None:
    base = Path(tempfile.mkdtemp(prefix="ingest-perm-"))
    try:
        base.chmod(0o755)
        root = base / "root"
        write(root / "ok.txt").parent.chmod(0o755)
        write(root / "locked.txt").chmod(0o000)
        write(root / "closed" / "inside.txt")
        (root / "closed").chmod(0o000)
        if os.geteuid() != 0:
            files, ts = scan(root)
            got = {"files": sorted(files), "skipped": reasons(ts), "unreadable_dirs": ts.unreadable_dirs}
        else:
            got = scan_as_nobody(root)
        assert got["files"] == ["ok.txt"]
        assert got["skipped"]["locked.txt"] == "permission denied"
        assert got["skipped"]["closed/"] == "permission denied"
        assert got["unreadable_dirs"] == ["closed/"]
    finally:
        closed = base / "root" / "closed"
        if closed.exists():
            closed.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


# hypothesis: any name a POSIX filesystem takes (no "/" or NUL, not "." or "..")
# comes back as the same key with the same bytes.
_name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
_names = st.text(_name_chars, min_size=1, max_size=40).filter(
    lambda n: n not in (".", "..") and len(n.encode()) <= 255
)


@given(paths=st.lists(st.lists(_names, min_size=1, max_size=4), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hypothesis_random_names_round_trip(paths: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        wanted: dict[str, bytes] = {}
        for i, parts in enumerate(paths):
            target = root.joinpath(*parts)
            # Skip paths that collide with an existing file or directory.
            if any((root.joinpath(*parts[:k])).is_file() for k in range(1, len(parts))) or target.exists():
                continue
            try:
                write(target, str(i).encode())
            except OSError:
                continue
            wanted["/".join(parts)] = str(i).encode()
        files, ts = scan(root)
        assert ts.skipped == []
        assert set(files) == set(wanted)
        for rel, data in wanted.items():
            assert read_all(root, rel, Expect.of(files[rel])) == data
            assert scan_one(root, rel) == files[rel]


# ---------------------------------------------------------------------------
# Checked reads


def test_read_checked_full_and_ranges(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    p = write(tmp_path / "f.bin", data)
    ex = expect_of(p)
    assert read_all(tmp_path, "f.bin", ex) == data
    assert read_all(tmp_path, "f.bin", ex, chunk=4096) == data
    assert read_all(tmp_path, "f.bin", ex, 1000, 5000, chunk=777) == data[1000:6000]
    assert read_all(tmp_path, "f.bin", ex, 299_999, 1) == data[-1:]
    assert read_all(tmp_path, "f.bin", ex, 10, 0) == b""
    empty = write(tmp_path / "empty", b"")
    assert read_all(tmp_path, "empty", expect_of(empty)) == b""


def test_open_refuses_a_file_changed_since_the_scan(tmp_path: Path) -> None:
    p = write(tmp_path / "f", b"version one")
    ex = expect_of(p)
    p.write_bytes(b"version two!")
    with pytest.raises(IngestedFileChanged):
        read_all(tmp_path, "f", ex)
    # Same size, new mtime.
    p = write(tmp_path / "g", b"aaaa")
    ex = expect_of(p)
    os.utime(p, ns=(ex.mtime_ns + 1_000_000, ex.mtime_ns + 1_000_000))
    with pytest.raises(IngestedFileChanged):
        open_checked(tmp_path, "g", ex)
    # Replaced by another file with the same size and mtime (rsync -t style).
    p = write(tmp_path / "h", b"bbbb")
    ex = expect_of(p)
    write(tmp_path / "h.new", b"cccc")
    os.utime(tmp_path / "h.new", ns=(ex.mtime_ns, ex.mtime_ns))
    os.replace(tmp_path / "h.new", p)
    with pytest.raises(IngestedFileChanged, match="replaced"):
        open_checked(tmp_path, "h", ex)
    p.unlink()
    with pytest.raises(IngestedFileChanged, match="removed"):
        open_checked(tmp_path, "h", ex)


def test_a_file_changed_while_being_read_fails_the_stream(tmp_path: Path) -> None:
    data = b"A" * 100_000
    p = write(tmp_path / "f", data)
    ex = expect_of(p)

    def meddle() -> None:  # in place, same size: only the mtime tells
        with open(p, "r+b") as f:
            f.seek(50_000)
            f.write(b"B" * 10)
        os.utime(p, ns=(ex.mtime_ns + 5_000_000, ex.mtime_ns + 5_000_000))

    async def go() -> bytes:
        got = b""
        async for chunk in read_checked(tmp_path, "f", ex, chunk=10_000):
            got += chunk
            if len(got) == 20_000:
                meddle()
        return got

    with pytest.raises(IngestedFileChanged) as info:
        asyncio.run(go())
    assert isinstance(info.value, BackendError)


def test_a_file_truncated_while_being_read_fails_the_stream(tmp_path: Path) -> None:
    p = write(tmp_path / "f", b"z" * 100_000)
    ex = expect_of(p)

    async def go() -> int:
        n = 0
        async for chunk in read_checked(tmp_path, "f", ex, chunk=10_000):
            n += len(chunk)
            if n == 10_000:
                os.truncate(p, 15_000)
        return n

    with pytest.raises(IngestedFileChanged):
        asyncio.run(go())


def test_a_directory_swapped_for_a_symlink_after_the_scan_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "data" / "f.txt", b"inside")
    write(tmp_path / "elsewhere" / "f.txt", b"inside")  # same size, even same mtime
    files, _ = scan(root)
    ex = Expect.of(files["data/f.txt"])
    os.utime(tmp_path / "elsewhere" / "f.txt", ns=(ex.mtime_ns, ex.mtime_ns))
    shutil.rmtree(root / "data")
    os.symlink(tmp_path / "elsewhere", root / "data")
    without_inode = Expect(ex.size, ex.mtime_ns)
    with pytest.raises(IngestedPathRefused):
        open_checked(root, "data/f.txt", without_inode)
    with pytest.raises(IngestedPathRefused):
        read_all(root, "data/f.txt", without_inode)
    with pytest.raises(IngestedPathRefused):
        checked_real_path(root, "data/f.txt", without_inode)
    # The same swap inside the root is refused as well: directories are never followed.
    write(root / "real" / "g.txt", b"g")
    files, _ = scan(root)
    ex = Expect.of(files["real/g.txt"])
    os.rename(root / "real", root / "moved")
    os.symlink("moved", root / "real")
    with pytest.raises(IngestedPathRefused):
        open_checked(root, "real/g.txt", ex)


def test_a_file_swapped_for_a_symlink_leaving_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    p = write(root / "f.txt", b"inside")
    files, _ = scan(root)
    ex = Expect.of(files["f.txt"])
    write(tmp_path / "secret", b"secret")
    p.unlink()
    os.symlink(tmp_path / "secret", p)
    with pytest.raises(IngestedPathRefused):
        open_checked(root, "f.txt", Expect(ex.size, ex.mtime_ns))


def test_a_symlink_to_a_file_inside_the_root_is_served(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "sub" / "target.txt", b"target")
    os.symlink("sub/target.txt", root / "link")
    files, _ = scan(root)
    assert read_all(root, "link", Expect.of(files["link"])) == b"target"
    assert checked_real_path(root, "link", Expect.of(files["link"])) == (root / "sub" / "target.txt").resolve()


def test_a_fifo_swapped_in_is_refused_without_blocking(tmp_path: Path) -> None:
    p = write(tmp_path / "f", b"abc")
    ex = expect_of(p)
    p.unlink()
    os.mkfifo(p)
    with pytest.raises(IngestedPathRefused):
        open_checked(tmp_path, "f", ex)


@pytest.mark.parametrize("rel", ["", "../x", "a/../b", "/etc/passwd", "a//b", "./a"])
def test_relative_paths_that_are_not_plain_are_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(IngestedPathRefused):
        open_checked(tmp_path, rel)


# ---------------------------------------------------------------------------
# Hashing


def test_hash_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    for size in (0, 1, 4 * 1024 * 1024 - 1, 4 * 1024 * 1024, 9 * 1024 * 1024 + 7):
        data = os.urandom(size)
        p = write(tmp_path / f"f{size}", data)
        assert hash_file(tmp_path, p.name, expect_of(p)) == hashlib.sha256(data).hexdigest()
        assert hash_file(tmp_path, p.name, expect_of(p), buf_size=1000) == hashlib.sha256(data).hexdigest()


def test_hash_of_a_file_changed_while_hashing_is_discarded(tmp_path: Path) -> None:
    p = write(tmp_path / "f", os.urandom(3 * 1024 * 1024))
    ex = expect_of(p)

    class Meddling(Pacer):
        def account(self, n: int) -> None:
            with open(p, "r+b") as f:
                f.write(b"changed")
            os.utime(p, ns=(ex.mtime_ns + 1, ex.mtime_ns + 1))

    with pytest.raises(IngestedFileChanged):
        hash_file(tmp_path, "f", ex, Meddling(0), buf_size=1024 * 1024)


def test_pacer_spreads_bytes_over_time() -> None:
    now = [100.0]
    waits: list[float] = []

    class FakeStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            now[0] += timeout or 0.0
            return False

    pacer = Pacer(1000, FakeStop(), clock=lambda: now[0])
    for _ in range(10):
        pacer.account(500)
    assert now[0] == pytest.approx(105.0)
    # Unpaced: never waits.
    waits.clear()
    Pacer(0, FakeStop(), clock=lambda: now[0]).account(10**9)
    assert waits == []


def test_hashing_stops_when_asked(tmp_path: Path) -> None:
    p = write(tmp_path / "f", os.urandom(2 * 1024 * 1024))
    stop = threading.Event()
    pacer = Pacer(1024, stop)  # 1 KiB/s: would take half an hour
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    with pytest.raises(HashCancelled):
        hash_file(tmp_path, "f", expect_of(p), pacer, buf_size=64 * 1024)
