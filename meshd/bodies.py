"""The bytes of a GET and how they are sent.

An `ObjectBody` is what `ObjectService.open_object` returns: the length, a
stream of chunks, and, when the bytes sit plain in a local file, that file's
region. The S3 edge knows no files: it hands the body a `Sink` (its response)
and the body sends itself, with sendfile where it can:

- a small local region is read whole in one thread hop and sent with the headers;
- a larger one is opened, the headers sent, then the file sendfile'd; a file
  that ends early cuts the response instead of leaving the client waiting;
- files that are not the node's own (ingested data) are checked to be
  unchanged (size, mtime) when opened and before the last byte is sent;
- anything else streams chunk by chunk, with the first chunk read before the
  headers, so a blob that fails to open answers an error, not a cut body.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import AsyncIterator, BinaryIO, Protocol

from backends.base import FileRegion
from backends.filesystem import pread_all
from meshd.errors import StorageUnavailable
from meshd.model import VersionRecord
from meshd.transfers import ByteRange

# A local body up to this size is read whole in one thread hop and sent with the
# headers: for small objects that costs about half of open, sendfile, close.
SMALL_BODY_BYTES = 64 * 1024


class Sink(Protocol):
    """Where a GET's bytes go: the S3 edge's response."""

    async def start(self) -> None:
        """Send the headers."""

    async def write(self, data: bytes) -> None: ...

    async def sendfile(self, f: BinaryIO, offset: int, count: int) -> int:
        """Send `count` bytes of `f` from `offset` without copying them through
        Python; the bytes sent. Raises NotImplementedError where it cannot."""

    async def finish(self, data: bytes = b"") -> None:
        """Send the last bytes (the whole body, if `start` was not called) and end."""


@dataclass(frozen=True)
class ObjectBody:
    """The bytes to send for a GET (or a range of it)."""

    version: VersionRecord
    range: ByteRange | None
    length: int
    chunks: AsyncIterator[bytes]
    local_file: FileRegion | None = None  # where sendfile can take the bytes from

    async def send(self, sink: Sink) -> None:
        if self.local_file is not None:
            await _send_file(sink, self.local_file, self.chunks)
        else:
            await _send_chunks(sink, self.chunks)


async def _send_chunks(sink: Sink, chunks: AsyncIterator[bytes]) -> None:
    # The first piece before the headers: a blob that fails to open (missing,
    # damaged header, wrong size) then answers an S3 error instead of a cut body.
    chunks = aiter(chunks)
    first = await anext(chunks, b"")
    await sink.start()
    if first:
        await sink.write(first)
    async for chunk in chunks:
        await sink.write(chunk)
    await sink.finish()


async def _send_file(sink: Sink, region: FileRegion, chunks: AsyncIterator[bytes]) -> None:
    if region.length <= SMALL_BODY_BYTES:
        await sink.finish(await read_region(region))
        return
    try:
        f = await asyncio.to_thread(open_region, region)
    except OSError as exc:
        raise StorageUnavailable(f"cannot open blob: {exc.strerror}") from None
    try:
        await sink.start()
        try:
            sent = await _sendfile(sink, f, region)
        except NotImplementedError:
            async for chunk in chunks:
                await sink.write(chunk)
        else:
            if sent != region.length:
                # The file ends early (damaged on disk): fail, so the
                # connection is cut instead of the client waiting forever.
                raise StorageUnavailable(f"blob {region.path.name} is shorter than recorded")
    finally:
        # Closing a file opened for reading never waits on the disk: no thread hop.
        f.close()
    await sink.finish()


async def _sendfile(sink: Sink, f: BinaryIO, region: FileRegion) -> int:
    if region.expect is None:
        return await sink.sendfile(f, region.offset, region.length)
    # A file that is not the node's own may change while it is sent: send all
    # but the last byte, check, then the last one. A change cuts the body one
    # byte short, so the client never gets mixed bytes as a complete object.
    head = region.length - 1
    sent = await sink.sendfile(f, region.offset, head) if head else 0
    if sent != head:
        return sent
    check_unchanged(f.fileno(), region)
    return sent + await sink.sendfile(f, region.offset + head, 1)


async def read_region(region: FileRegion) -> bytes:
    try:
        data = await asyncio.to_thread(_read_region_sync, region)
    except OSError as exc:
        raise StorageUnavailable(f"cannot read blob: {exc.strerror}") from None
    if len(data) != region.length:
        raise StorageUnavailable(f"blob {region.path.name} is shorter than recorded")
    return data


def open_region(region: FileRegion) -> BinaryIO:
    f = open(region.path, "rb", buffering=0)
    try:
        check_unchanged(f.fileno(), region)
    except BaseException:
        f.close()
        raise
    return f


def check_unchanged(fd: int, region: FileRegion) -> None:
    """For files that are not the node's own: still the size and mtime recorded?"""
    if region.expect is None:
        return
    st = os.fstat(fd)
    if (st.st_size, st.st_mtime_ns) != region.expect:
        raise StorageUnavailable(f"{region.path.name} changed on disk; try again after a rescan")


def _read_region_sync(region: FileRegion) -> bytes:
    with open_region(region) as f:
        data = pread_all(f.fileno(), region.offset, region.length)
        check_unchanged(f.fileno(), region)
    return data
