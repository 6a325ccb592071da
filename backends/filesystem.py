"""Blobs as files on a local filesystem, addressed by SHA-256.

Layout under the backend root::

    tmp/                  staged writes (random names); emptied at start-up
    blobs/ab/cd/abcd...   committed blobs, named by content id

Durability follows Garage's block manager: write the temp file, fsync it,
rename it into place, fsync the directory. Every open/read/write/fsync runs in
a worker thread so the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator, Callable, TypeVar

from backends.base import (
    BackendError,
    BackendFull,
    BlobMissing,
    BlobRef,
    BlobTruncated,
    FileRegion,
    StagedBlob,
)
from backends.durable import fsync_dir

READ_CHUNK = 1024 * 1024

T = TypeVar("T")


class FilesystemBackend:
    def __init__(self, name: str, root: Path, read_chunk: int = READ_CHUNK, min_free_bytes: int = 0) -> None:
        self.name = name
        self.root = root
        # Writes stop (BackendFull) before the disk has less than this free, so
        # the catalog, logs and the rest of the machine keep some room.
        self.min_free_bytes = min_free_bytes
        self._tmp = root / "tmp"
        self._blobs = root / "blobs"
        self._read_chunk = read_chunk
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(parents=True, exist_ok=True)

    def blob_path(self, content_id: str) -> Path:
        return self._blobs / content_id[:2] / content_id[2:4] / content_id

    async def write(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        path = self._tmp / f"{secrets.token_hex(16)}.part"
        fd: int | None = None
        size = 0
        source = aiter(chunks)
        try:
            # Thread hops, not bytes, are most of the cost of a small object, so
            # the first hop also creates the file and the last (known by looking
            # one chunk ahead) also fsyncs and closes it: one hop for a small body.
            chunk = await anext(source, b"")
            while (following := await anext(source, None)) is not None:
                if fd is None:
                    fd = await _disk(_create_and_write, path, chunk, self.min_free_bytes)
                else:
                    await _disk(_write_checked, fd, chunk, self.min_free_bytes)
                size += len(chunk)
                chunk = following
            owned, fd = fd, None  # the last hop closes it, whatever happens
            await _disk(_finish, path, owned, chunk, self.min_free_bytes)
            size += len(chunk)
        except BaseException:
            # Disk full, client went away, bad checksum, cancellation: leave nothing
            # behind. Errors of `chunks` itself pass through untranslated: a client's
            # ConnectionResetError is not a disk error.
            await asyncio.shield(asyncio.to_thread(_close_and_unlink, fd, path))
            raise
        return StagedBlob(self.name, str(path), size)

    async def commit(self, staged: StagedBlob, content_id: str) -> BlobRef:
        try:
            await asyncio.to_thread(self._commit_sync, Path(staged.token), content_id)
        except OSError as e:
            raise _translate(e) from e
        return BlobRef(self.name, content_id, staged.size)

    def _commit_sync(self, tmp: Path, content_id: str) -> None:
        final = self.blob_path(content_id)
        _makedirs_durable(final.parent, self._blobs)
        os.rename(tmp, final)  # atomically replaces a leftover or damaged copy
        fsync_dir(final.parent)

    async def discard(self, staged: StagedBlob) -> None:
        await _disk(_unlink_quiet, Path(staged.token))

    async def open(self, ref: BlobRef, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        path = self.blob_path(ref.content_id)
        remaining = ref.size - start if length is None else length
        try:
            f = await asyncio.to_thread(open, path, "rb", buffering=0)
        except FileNotFoundError as e:
            raise BlobMissing(f"blob {ref.content_id} missing on {self.name}") from e
        except OSError as e:
            raise _translate(e) from e
        try:
            if start:
                await _disk(f.seek, start)
            while remaining > 0:
                chunk = await _disk(f.read, min(self._read_chunk, remaining))
                if not chunk:
                    raise BlobTruncated(f"blob {ref.content_id} is shorter than recorded")
                remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(f.close)

    async def read_at(self, ref: BlobRef, offset: int, length: int) -> bytes:
        try:
            return await asyncio.to_thread(pread_file, self.blob_path(ref.content_id), offset, length)
        except FileNotFoundError as e:
            raise BlobMissing(f"blob {ref.content_id} missing on {self.name}") from e
        except OSError as e:
            raise _translate(e) from e

    def file_region(self, ref: BlobRef, start: int, length: int) -> FileRegion | None:
        return FileRegion(self.blob_path(ref.content_id), start, length)

    async def stat(self, ref: BlobRef) -> int | None:
        return await _disk(_size_or_none, self.blob_path(ref.content_id))

    async def delete(self, ref: BlobRef) -> None:
        await _disk(_unlink_quiet, self.blob_path(ref.content_id))

    async def cleanup_staging(self) -> int:
        return await _disk(self._cleanup_sync)

    def _cleanup_sync(self) -> int:
        removed = 0
        for entry in os.scandir(self._tmp):
            _unlink_quiet(Path(entry.path))
            removed += 1
        if removed:
            fsync_dir(self._tmp)
        return removed

    async def blob_ids(self) -> AsyncIterator[list[str]]:
        """Content ids one top-level directory (1/256 of the store) at a time,
        each listed in a worker thread."""
        tops = await _disk(lambda: sorted(e.path for e in os.scandir(self._blobs) if e.is_dir()))
        for top in tops:
            batch = await _disk(_list_blob_names, top)
            if batch:
                yield batch

    async def aclose(self) -> None:
        return None


def pread_file(path: Path, offset: int, length: int) -> bytes:
    """Open, read `length` bytes at `offset` (fewer only at the end of the file), close: one hop."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return pread_all(fd, offset, length)
    finally:
        os.close(fd)


def _size_or_none(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def pread_all(fd: int, offset: int, length: int) -> bytes:
    """`length` bytes at `offset`, fewer only where the file ends."""
    parts = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
        length -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _list_blob_names(top: str) -> list[str]:
    names: list[str] = []
    for sub in os.scandir(top):
        if sub.is_dir():
            names.extend(e.name for e in os.scandir(sub.path) if e.is_file())
    return names


async def _disk(fn: Callable[..., T], *args: Any) -> T:
    """Run one blocking disk call in a worker thread; its OSError becomes a BackendError."""
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as e:
        raise _translate(e) from e


def _check_free(fd: int, incoming: int, min_free: int) -> None:
    """Refuse a write that would leave less than `min_free` bytes on the disk."""
    if min_free:
        st = os.fstatvfs(fd)
        if st.f_bavail * st.f_frsize - incoming < min_free:
            raise OSError(errno.ENOSPC, f"fewer than {min_free} bytes would stay free")


def _write_checked(fd: int, data: bytes, min_free: int) -> None:
    _check_free(fd, len(data), min_free)
    _write_all(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _create_and_write(path: Path, data: bytes, min_free: int = 0) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _check_free(fd, len(data), min_free)
        _write_all(fd, data)
    except BaseException:
        _close_and_unlink(fd, path)
        raise
    return fd


def _finish(path: Path, fd: int | None, data: bytes, min_free: int = 0) -> None:
    """Write the last chunk (creating the file first if it is the only one),
    fsync and close; the fd is closed whatever fails."""
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _check_free(fd, len(data), min_free)
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    os.close(fd)  # NFS may report a failed write only here


def _close_and_unlink(fd: int | None, path: Path) -> None:
    """Drop a temp file; quietly, so the error that made us drop it is the one raised."""
    try:
        if fd is not None:
            os.close(fd)
    except OSError:
        pass
    try:
        _unlink_quiet(path)
    except OSError:
        pass  # left for cleanup_staging at the next start


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _makedirs_durable(path: Path, top: Path) -> None:
    """Create missing directories below `top`, fsyncing each parent we changed."""
    if path.is_dir():
        return
    missing = []
    p = path
    while not p.is_dir() and p != top:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def _translate(e: OSError) -> BackendError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackendFull(str(e))
    return BackendError(str(e))
