"""Existing files served in place: walking a tree, reading a file safely, hashing it.

Nothing here knows the catalog. Three parts:

* `scan_tree(root, prefix)` walks a directory with `os.scandir` in a worker
  thread and yields batches of `ScannedFile` (POSIX relative path, size,
  mtime_ns, inode). What cannot or must not be served is collected as
  `Skipped(rel, reason)` on the `TreeScan`:
  - symlinks to directories (never followed: no loops, no escapes), symlinks
    whose target leaves the root, dangling symlinks and symlink loops;
  - special files (fifo, socket, device);
  - files and directories the node cannot read;
  - names that are not valid UTF-8 or that make a key (prefix + path) longer
    than 1024 bytes.
  A symlink to a regular file inside the root is served as that file (its size,
  mtime and inode are the target's).
* `open_checked(root, rel, expect)` opens a file for serving so that it cannot
  leave the root even when a directory was swapped for a symlink after the scan
  (each component is opened with O_NOFOLLOW relative to its parent), then
  fstats the open file and raises `IngestedFileChanged` when it is not the file
  that was scanned. `read_checked` streams a range and re-checks at the end, so
  a file that changed while it was read fails instead of passing off mixed bytes
  as the old version.
* `hash_file` computes SHA-256 in a worker thread with large reads into one
  reused buffer (hashlib releases the GIL), paced by a shared `Pacer`, and
  raises `IngestedFileChanged` when the file changed while it was hashed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import queue
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backends.base import BackendError
from backends.pacing import Pacer

MAX_KEY_BYTES = 1024
SCAN_BATCH = 2000
READ_CHUNK = 1024 * 1024
HASH_CHUNK = 4 * 1024 * 1024


class IngestedFileChanged(BackendError):
    """The file on disk is not the one that was scanned (changed, replaced or removed)."""


class IngestedPathRefused(BackendError):
    """The path leaves the ingested root or is not a regular file."""


class IngestRootUnavailable(BackendError):
    """The ingested root itself cannot be read (missing, unmounted, permission).

    A scan that fails this way must not be taken to mean "every file was removed"."""


@dataclass(frozen=True)
class ScannedFile:
    rel: str  # POSIX path relative to the root, valid UTF-8
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True)
class Skipped:
    rel: str  # undecodable bytes shown as \\xNN escapes
    reason: str


@dataclass(frozen=True)
class Expect:
    """What the catalog recorded of a file; the open file must still match it."""

    size: int
    mtime_ns: int
    inode: int | None = None

    @classmethod
    def of(cls, f: ScannedFile) -> Expect:
        return cls(f.size, f.mtime_ns, f.inode)

    def check(self, st: os.stat_result, rel: str) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise IngestedPathRefused(f"{rel}: not a regular file")
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            raise IngestedFileChanged(f"{rel}: changed on disk since it was scanned")
        if self.inode is not None and st.st_ino != self.inode:
            raise IngestedFileChanged(f"{rel}: replaced on disk since it was scanned")


# ---------------------------------------------------------------------------
# Scanning


@dataclass
class TreeScan:
    """One walk of a tree. Iterate it for batches; `skipped`, `unreadable_dirs`,
    `files` and `bytes` are complete once the iteration ends."""

    root: Path
    prefix: str = ""
    batch_size: int = SCAN_BATCH
    skipped: list[Skipped] = field(default_factory=list)
    # Directories (rel, "" for none) whose content could not be listed: files
    # known below them must not be taken as removed.
    unreadable_dirs: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0

    async def __aiter__(self) -> AsyncIterator[list[ScannedFile]]:
        q: queue.Queue[list[ScannedFile] | BaseException | None] = queue.Queue(maxsize=4)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self.walk():
                    while not stop.is_set():
                        try:
                            q.put(batch, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                q.put(exc)

        worker = threading.Thread(target=produce, name="ingest-scan", daemon=True)
        worker.start()
        try:
            while True:
                item = await asyncio.to_thread(q.get)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # Unblock a producer waiting on a full queue, then let it end.
            while worker.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.01)
            # A `q.get` still waiting in a worker thread (this iteration was
            # cancelled while awaiting it) must end too, or it holds the
            # executor, and the loop's shutdown, forever.
            try:
                q.put_nowait(None)
            except queue.Full:
                pass

    def walk(self) -> Iterator[list[ScannedFile]]:
        """The synchronous walk (run in a worker thread by `__aiter__`)."""
        root_b = os.fsencode(self.root)
        try:
            st = os.stat(root_b)
        except OSError as exc:
            raise IngestRootUnavailable(f"{self.root}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise IngestRootUnavailable(f"{self.root}: not a directory")
        real_root = os.path.realpath(root_b)
        prefix_len = len(self.prefix.encode("utf-8"))
        batch: list[ScannedFile] = []
        # (absolute bytes path, relative str path with trailing "/" or "")
        stack: list[tuple[bytes, str]] = [(root_b, "")]
        first = True
        while stack:
            dir_b, dir_rel = stack.pop()
            try:
                it = os.scandir(dir_b)
            except OSError as exc:
                if first:
                    raise IngestRootUnavailable(f"{self.root}: {exc.strerror}") from None
                self._skip(dir_rel, _reason(exc))
                self.unreadable_dirs.append(dir_rel)
                continue
            first = False
            with it:
                subdirs = []
                while True:
                    try:
                        entry = next(it)
                    except StopIteration:
                        break
                    except OSError as exc:  # a directory that fails half way
                        self._skip(dir_rel, _reason(exc))
                        self.unreadable_dirs.append(dir_rel)
                        break
                    try:
                        name = entry.name.decode("utf-8")
                    except UnicodeDecodeError:
                        rel_shown = dir_rel + entry.name.decode("utf-8", "backslashreplace")
                        self._skip(rel_shown, "name is not valid UTF-8")
                        continue
                    rel = dir_rel + name
                    found = self._entry(entry, rel, real_root, subdirs)
                    if found is None:
                        continue
                    if prefix_len + len(rel.encode("utf-8")) > MAX_KEY_BYTES:
                        self._skip(rel, f"key longer than {MAX_KEY_BYTES} bytes")
                        continue
                    batch.append(found)
                    self.files += 1
                    self.bytes += found.size
                    if len(batch) >= self.batch_size:
                        yield batch
                        batch = []
            # Sorted in reverse so the stack pops them in name order.
            stack.extend(sorted(subdirs, reverse=True))
        if batch:
            yield batch
        # A root unmounted, moved or replaced while it was walked makes every
        # file below it look removed: that must not be taken as a result.
        try:
            now = os.stat(root_b)
        except OSError as exc:
            raise IngestRootUnavailable(f"{self.root}: {exc.strerror} (during the scan)") from None
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise IngestRootUnavailable(f"{self.root}: replaced or unmounted during the scan")

    def _entry(
        self, entry: os.DirEntry[bytes], rel: str, real_root: bytes, subdirs: list[tuple[bytes, str]]
    ) -> ScannedFile | None:
        try:
            if entry.is_symlink():
                return self._symlink(entry, rel, real_root)
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            self._skip(rel, _reason(exc))
            return None
        if stat.S_ISDIR(st.st_mode):
            subdirs.append((entry.path, rel + "/"))
            return None
        if not stat.S_ISREG(st.st_mode):
            self._skip(rel, _special_kind(st.st_mode))
            return None
        if not os.access(entry.path, os.R_OK):
            self._skip(rel, "permission denied")
            return None
        return ScannedFile(rel, st.st_size, st.st_mtime_ns, st.st_ino)

    def _symlink(self, entry: os.DirEntry[bytes], rel: str, real_root: bytes) -> ScannedFile | None:
        target = os.path.realpath(entry.path)
        if not _inside(target, real_root):
            self._skip(rel, "symlink leaves the root (not followed)")
            return None
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            self._skip(rel, "symlink loop" if exc.errno == errno.ELOOP else f"broken symlink ({_reason(exc)})")
            return None
        if stat.S_ISDIR(st.st_mode):
            self._skip(rel, "symlink to a directory (not followed)")
            return None
        if not stat.S_ISREG(st.st_mode):
            self._skip(rel, "symlink to a " + _special_kind(st.st_mode))
            return None
        if not os.access(entry.path, os.R_OK):
            self._skip(rel, "permission denied")
            return None
        return ScannedFile(rel, st.st_size, st.st_mtime_ns, st.st_ino)

    def _skip(self, rel: str, reason: str) -> None:
        self.skipped.append(Skipped(rel, reason))


def _inside(path: bytes, root: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "special file (fifo)"
    if stat.S_ISSOCK(mode):
        return "special file (socket)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "special file (device)"
    return "special file"


def scan_tree(root: Path, prefix: str = "", batch_size: int = SCAN_BATCH) -> TreeScan:
    return TreeScan(root, prefix, batch_size)


def scan_one(root: Path, rel: str, prefix: str = "") -> ScannedFile | Skipped | None:
    """One file as a full scan would see it now; None when it is gone (or a
    directory on its path is a symlink or not a directory). Raises
    `IngestRootUnavailable` when the root itself is not there. Blocking."""
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise IngestRootUnavailable(f"{root}: not a directory")
    except OSError as exc:
        raise IngestRootUnavailable(f"{root}: {exc.strerror}") from None
    try:
        parts = _parts(rel)
    except IngestedPathRefused:
        return None
    ts = TreeScan(root, prefix)
    real_root = os.path.realpath(os.fsencode(root))
    # The directories on the way must be real ones, as the walk would see them.
    path = os.fsencode(root)
    for part in parts[:-1]:
        path = os.path.join(path, os.fsencode(part))
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
        except OSError:
            return None
    parent = path
    try:
        with os.scandir(parent) as it:
            entry = next((e for e in it if e.name == os.fsencode(parts[-1])), None)
    except OSError:
        return None
    if entry is None:
        return None
    found = ts._entry(entry, rel, real_root, [])
    if found is None:
        return ts.skipped[0] if ts.skipped else None
    if len(prefix.encode("utf-8")) + len(rel.encode("utf-8")) > MAX_KEY_BYTES:
        return Skipped(rel, f"key longer than {MAX_KEY_BYTES} bytes")
    return found


# ---------------------------------------------------------------------------
# Checked reads

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def open_checked(root: Path, rel: str, expect: Expect | None = None) -> int:
    """An fd of `root/rel` opened without following any symlink on the way,
    checked against `expect`. A final symlink to a file inside the root is
    resolved and the target opened the same way. Blocking: call in a thread."""
    fd = _open_beneath(root, rel)
    try:
        st = os.fstat(fd)
        if expect is not None:
            expect.check(st, rel)
        elif not stat.S_ISREG(st.st_mode):
            raise IngestedPathRefused(f"{rel}: not a regular file")
        # O_NONBLOCK only kept a fifo swapped in from blocking the open.
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_beneath(root: Path, rel: str) -> int:
    parts = _parts(rel)
    try:
        dir_fd = _open_dirs(root, parts[:-1])
    except OSError as exc:
        raise _translate(rel, exc) from None
    try:
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise _translate(rel, exc) from None
    finally:
        os.close(dir_fd)
    # The last component is a symlink (its directories are real ones). As the
    # scanner does, serve it only when it ends at a file inside the root: open
    # the resolved target, again without following anything.
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(root, *parts))
    if not _inside(os.fsencode(target), os.fsencode(real_root)) or target == real_root:
        raise IngestedPathRefused(f"{rel}: symlink leaves the ingested root")
    target_parts = os.path.relpath(target, real_root).split("/")
    try:
        dir_fd = _open_dirs(Path(real_root), target_parts[:-1])
        try:
            return os.open(target_parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _translate(rel, exc) from None


def _parts(rel: str) -> list[str]:
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        raise IngestedPathRefused(f"{rel!r}: not a plain relative path")
    return parts


def _open_dirs(root: Path, parts: list[str]) -> int:
    """An fd of root/parts..., refusing any symlink among `parts`."""
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = nxt
    except BaseException:
        os.close(dir_fd)
        raise
    return dir_fd


def _translate(rel: str, exc: OSError) -> BackendError:
    if exc.errno == errno.ENOENT:
        return IngestedFileChanged(f"{rel}: removed from disk since it was scanned")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return IngestedPathRefused(f"{rel}: a directory on its path is a symlink or not a directory")
    return BackendError(f"{rel}: {exc.strerror}")


def checked_stat(root: Path, rel: str, expect: Expect) -> os.stat_result:
    """Check a file without keeping it open (blocking)."""
    fd = open_checked(root, rel, expect)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def checked_real_path(root: Path, rel: str, expect: Expect) -> Path:
    """The file's path with no symlink in it, after a checked open (blocking).

    For sendfile, which opens by path: the S3 edge then fstats what it opened
    against `FileRegion.expect`, so a swap in between is caught as a change."""
    fd = open_checked(root, rel, expect)
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


async def read_checked(
    root: Path, rel: str, expect: Expect, start: int = 0, length: int | None = None, chunk: int = READ_CHUNK
) -> AsyncIterator[bytes]:
    """Stream `length` bytes from `start`; raise `IngestedFileChanged` if the
    file is not the scanned one, when it opens or when the last byte was read."""
    fd = await asyncio.to_thread(open_checked, root, rel, expect)
    try:
        remaining = expect.size - start if length is None else length
        offset = start
        while remaining > 0:
            data = await asyncio.to_thread(os.pread, fd, min(chunk, remaining), offset)
            if not data:
                raise IngestedFileChanged(f"{rel}: shorter than when it was scanned")
            offset += len(data)
            remaining -= len(data)
            if remaining == 0:
                # Checked before the last bytes leave, so a change while reading
                # ends the stream with an error, never as a complete old version.
                await asyncio.to_thread(_recheck, fd, rel, expect)
            yield data
        if length == 0 or expect.size == start:
            await asyncio.to_thread(_recheck, fd, rel, expect)
    finally:
        os.close(fd)


def _recheck(fd: int, rel: str, expect: Expect) -> None:
    expect.check(os.fstat(fd), rel)


# ---------------------------------------------------------------------------
# Hashing


class HashCancelled(Exception):
    pass


def hash_file(
    root: Path, rel: str, expect: Expect, pacer: Pacer | None = None, buf_size: int = HASH_CHUNK
) -> str:
    """SHA-256 hex of the file (blocking: call in a worker thread).

    Raises `IngestedFileChanged` when the file is not, or stopped being, the
    one scanned: the digest is then of no version and must be discarded."""
    fd = open_checked(root, rel, expect)
    try:
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):
            pass
        h = hashlib.sha256()
        view = memoryview(bytearray(buf_size))
        total = 0
        with open(fd, "rb", buffering=0, closefd=False) as f:
            while True:
                if pacer is not None and pacer.stop.is_set():
                    raise HashCancelled(rel)
                n = f.readinto(view)
                if not n:
                    break
                h.update(view[:n])
                total += n
                if pacer is not None:
                    pacer.account(n)
        _recheck(fd, rel, expect)
        if total != expect.size:
            raise IngestedFileChanged(f"{rel}: {total} bytes read, {expect.size} scanned")
        return h.hexdigest()
    finally:
        os.close(fd)
