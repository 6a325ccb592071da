"""Optional per-backend compression: a streaming, seekable zstd blob format.

The format is specified in docs/encryption.md ("Compression"); this module is
the one implementation of it. It sits *under* at-rest encryption: a backend
compresses the plaintext, then encrypts the compressed blob. Layout (integers
big-endian):

    blob   = frame_0 || ... || frame_{n-1} || table || footer
    frame  = the plaintext cut every S bytes (only the last may be shorter),
             each stored either as one zstd frame (content size written, xxh64
             content checksum on) or raw, whichever is smaller: raw wins ties
    table  = one u32 per frame: bit 31 set = zstd, bits 0..30 = stored length
    footer = 56 bytes: magic "MESHZST1", version 1, 3 reserved zero bytes,
             S (u32), n (u64), plaintext size P (u64), table length 4n (u64),
             SHA-256(table)[:8], SHA-256(footer[0:48])[:8]

A range read reads the footer, the table and only the frames the range
touches; the footer and table are checked on every read (checksums and every
derived size), so a damaged footer or table, or a blob cut or extended
anywhere, raises `CompressionError` on every read. A damaged zstd frame body
is caught by zstd's own checksum, but a damaged *raw* frame body decodes to
different bytes of the right length: that is accepted only because this
layer always sits under AEAD encryption (or the catalog's SHA-256 check),
which catches it. The checksums are not a MAC. A zstd frame must declare its
exact plaintext length before it is decoded, so a hostile frame cannot make
the reader allocate more than one frame. Compression and decompression run
in worker threads, about `BATCH_BYTES` per hop, overlapped with the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import struct
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import zstandard

from backends.base import BackendError
from backends.readahead import drop, read_ahead

MAGIC = b"MESHZST1"
FORMAT_VERSION = 1
DEFAULT_FRAME_SIZE = 1024 * 1024
MIN_FRAME_SIZE = 64
MAX_FRAME_SIZE = 16 * 1024 * 1024  # bounds what one hostile frame can make a reader allocate
DEFAULT_LEVEL = 3

ZSTD_FLAG = 1 << 31
LENGTH_MASK = ZSTD_FLAG - 1
ENTRY_SIZE = 4

# magic, version, 3 reserved, frame size, frame count, plaintext size, table length,
# table checksum; then the footer checksum over these 48 bytes
_FOOTER_HEAD = struct.Struct(">8sB3sIQQQ8s")
FOOTER_SIZE = _FOOTER_HEAD.size + 8  # 56

BATCH_BYTES = 1024 * 1024  # plaintext per worker-thread hop
INLINE_BYTES = 64 * 1024  # up to this much is (de)compressed on the loop: a hop costs more

ReadAt = Callable[[int, int], Awaitable[bytes]]


class CompressionError(BackendError):
    """A compressed blob is malformed, truncated, extended or inconsistent."""


def _digest(data: bytes | bytearray) -> bytes:
    return hashlib.sha256(data).digest()[:8]


def _check_frame_size(frame_size: int) -> None:
    if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
        raise ValueError(f"frame size {frame_size} outside {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE}")


async def _run(fn: Callable[..., Any], plain_bytes: int, *args: Any) -> Any:
    """Run `fn` inline when it handles little plaintext, else in a worker thread."""
    if plain_bytes <= INLINE_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


# ---------------------------------------------------------------- writing


def _compress_frames(cctx: zstandard.ZstdCompressor, plain: memoryview, frame_size: int) -> tuple[bytes, bytes]:
    """Frames for `plain` (cut every frame_size bytes) and their table entries."""
    stored: list[bytes | memoryview] = []
    entries: list[int] = []
    for pos in range(0, len(plain), frame_size):
        frame = plain[pos : pos + frame_size]
        packed = cctx.compress(frame)
        if len(packed) < len(frame):
            stored.append(packed)
            entries.append(len(packed) | ZSTD_FLAG)
        else:  # compression would not shrink it: keep it raw
            stored.append(frame)
            entries.append(len(frame))
    return b"".join(stored), struct.pack(f">{len(entries)}I", *entries)


def _trailer(table: bytearray, frame_size: int, plain_size: int) -> bytes:
    count = len(table) // ENTRY_SIZE
    head = _FOOTER_HEAD.pack(MAGIC, FORMAT_VERSION, b"\0\0\0", frame_size, count, plain_size,
                             len(table), _digest(table))
    return bytes(table) + head + _digest(head)


async def _batches(chunks: AsyncIterable[bytes], hop: int, frame_size: int) -> AsyncIterator[memoryview]:
    """Regroup the input into runs of whole frames of about `hop` bytes, then the tail."""
    pending: list[bytes] = []
    pending_len = 0
    async for chunk in chunks:
        pending.append(chunk)
        pending_len += len(chunk)
        if pending_len >= hop:
            joined = b"".join(pending)
            cut = len(joined) // frame_size * frame_size
            yield memoryview(joined)[:cut]
            pending, pending_len = [joined[cut:]], len(joined) - cut
    if pending_len:  # whole frames and a last, shorter one
        yield memoryview(b"".join(pending))


async def compress_stream(
    chunks: AsyncIterable[bytes],
    *,
    level: int = DEFAULT_LEVEL,
    frame_size: int = DEFAULT_FRAME_SIZE,
) -> AsyncIterator[bytes]:
    """Compress a stream of unknown length into a blob, about BATCH_BYTES at a time.

    A batch of whole frames is compressed in a worker thread while the caller
    consumes the previous one; the table and footer come last. Memory: a few
    batches, plus 4 bytes of table per frame.
    """
    _check_frame_size(frame_size)
    # Contexts are reused (a fresh one per hop costs more than 1 MiB of random
    # data) but never shared: two hops run at once, and a context is not thread-safe.
    idle = [zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True)]
    hop = max(1, BATCH_BYTES // frame_size) * frame_size
    table = bytearray()
    plain_size = 0
    inflight: asyncio.Future[tuple[bytes, bytes]] | None = None

    async def compress(plain: memoryview) -> tuple[bytes, bytes]:
        cctx = idle.pop() if idle else zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True)
        result: tuple[bytes, bytes] = await _run(_compress_frames, len(plain), cctx, plain, frame_size)
        idle.append(cctx)  # not after a failure or cancellation: a thread may still hold it
        return result

    def take(result: tuple[bytes, bytes]) -> bytes:
        table.extend(result[1])  # here, in stream order: hops may finish out of order
        return result[0]

    try:
        async for plain in _batches(chunks, hop, frame_size):
            plain_size += len(plain)
            # The new task is `inflight` before the yield, so closing the stream there drops it.
            previous, inflight = inflight, asyncio.ensure_future(compress(plain))
            if previous is not None:
                yield take(await previous)
        if inflight is not None:
            previous, inflight = inflight, None
            yield take(await previous)
        yield _trailer(table, frame_size, plain_size)
    finally:
        drop(inflight)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Layout:
    frame_size: int
    plain_size: int
    entries: tuple[int, ...]
    offsets: list[int]  # offsets[i]: where frame i starts; offsets[n]: where the table starts

    def frame_len(self, index: int) -> int:
        return min(self.frame_size, self.plain_size - index * self.frame_size)


async def _read_footer(read_at: ReadAt, stored_size: int) -> tuple[int, int, int, bytes]:
    """The footer's frame size, plaintext size, table length and table digest, checked."""
    if stored_size < FOOTER_SIZE:
        raise CompressionError(f"compressed blob of {stored_size} bytes is truncated")
    raw = await _read_exact(read_at, stored_size - FOOTER_SIZE, FOOTER_SIZE)
    head, footer_sum = raw[: _FOOTER_HEAD.size], raw[_FOOTER_HEAD.size :]
    magic, version, reserved, frame_size, count, plain_size, table_len, table_sum = _FOOTER_HEAD.unpack(head)
    if magic != MAGIC:
        raise CompressionError("not a compressed blob, or truncated (bad footer magic)")
    if _digest(head) != footer_sum:
        raise CompressionError("compressed blob footer is damaged (checksum mismatch)")
    if version != FORMAT_VERSION or reserved != b"\0\0\0":
        raise CompressionError(f"unsupported compressed blob format (version {version})")
    if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
        raise CompressionError(f"compressed blob frame size {frame_size} is out of bounds")
    if count != -(-plain_size // frame_size) or table_len != ENTRY_SIZE * count:
        raise CompressionError("compressed blob footer is inconsistent (frame count, size, table)")
    if table_len > stored_size - FOOTER_SIZE:
        raise CompressionError("compressed blob is truncated (seek table does not fit)")
    return frame_size, plain_size, table_len, table_sum


async def _read_layout(read_at: ReadAt, stored_size: int) -> _Layout:
    frame_size, plain_size, table_len, table_sum = await _read_footer(read_at, stored_size)
    table_at = stored_size - FOOTER_SIZE - table_len
    table = await _read_exact(read_at, table_at, table_len)
    if _digest(table) != table_sum:
        raise CompressionError("compressed blob seek table is damaged (checksum mismatch)")
    entries = struct.unpack(f">{table_len // ENTRY_SIZE}I", table)
    offsets = [0, *itertools.accumulate(e & LENGTH_MASK for e in entries)]
    if offsets[-1] != table_at:
        raise CompressionError(f"compressed blob frames take {table_at} bytes, the table says {offsets[-1]}")
    return _Layout(frame_size, plain_size, entries, offsets)


async def compressed_plain_size(read_at: ReadAt, stored_size: int) -> int:
    """The plaintext size of a compressed blob (reads and checks the footer only)."""
    return (await _read_footer(read_at, stored_size))[1]


def _decompress_frames(stored: memoryview, layout: _Layout, first: int, last: int) -> bytes:
    """Decode frames first..last, whose stored bytes are `stored`."""
    dctx = zstandard.ZstdDecompressor()  # per hop, like the compressor
    pieces: list[bytes | memoryview] = []
    pos = 0
    for index in range(first, last + 1):
        entry = layout.entries[index]
        n, want = entry & LENGTH_MASK, layout.frame_len(index)
        frame = stored[pos : pos + n]
        pos += n
        if not entry & ZSTD_FLAG:
            if n != want:
                raise CompressionError(f"raw frame {index} holds {n} bytes, expected {want}")
            pieces.append(frame)
            continue
        if n >= want:  # the writer keeps a frame raw unless zstd shrinks it
            raise CompressionError(f"zstd frame {index} of {n} bytes for {want} is not a valid frame")
        try:
            # Check the declared size first: decompress() allocates whatever it says.
            declared = zstandard.frame_content_size(frame)
            if declared != want:
                raise CompressionError(f"zstd frame {index} declares {declared} bytes, expected {want}")
            plain = dctx.decompress(frame, max_output_size=want, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise CompressionError(f"zstd frame {index} is damaged: {e}") from None
        if len(plain) != want:
            raise CompressionError(f"zstd frame {index} decoded to {len(plain)} bytes, expected {want}")
        pieces.append(plain)
    return b"".join(pieces)


async def decompress_range(
    read_at: ReadAt,
    stored_size: int,
    start: int = 0,
    length: int | None = None,
    *,
    expected_size: int | None = None,
) -> AsyncIterator[bytes]:
    """Yield plaintext bytes [start, start+length) of a compressed blob.

    `read_at(offset, n)` must return exactly n stored bytes (fewer means
    truncated); calls never overlap. Reads the footer, the table, then only the
    frames the range touches, about BATCH_BYTES of plaintext per call; the next
    batch is read and decoded while the caller consumes the current one.
    `expected_size` (the catalog's size) must match the footer's. A range
    outside the plaintext is a ValueError.
    """
    layout = await _read_layout(read_at, stored_size)
    total = layout.plain_size
    if expected_size is not None and total != expected_size:
        raise CompressionError(f"compressed blob holds {total} bytes, expected {expected_size}")
    if length is None:
        length = total - start
    if start < 0 or length < 0 or start + length > total:
        raise ValueError(f"range {start}+{length} outside a blob of {total} bytes")
    if length == 0:
        return
    size, end = layout.frame_size, start + length
    first, last = start // size, (end - 1) // size
    per_batch = max(1, BATCH_BYTES // size)
    reading = asyncio.Lock()  # read-ahead must not overlap the current batch's read

    async def batch(index: int, upto: int) -> bytes:
        offset = layout.offsets[index]
        async with reading:
            stored = await _read_exact(read_at, offset, layout.offsets[upto + 1] - offset)
        plain_bytes = min(total, (upto + 1) * size) - index * size
        plain: bytes = await _run(_decompress_frames, plain_bytes, memoryview(stored), layout, index, upto)
        return plain

    async for piece in read_ahead(batch, first, last, per_batch, size, start, end):
        yield piece


async def _read_exact(read_at: ReadAt, offset: int, n: int) -> bytes:
    if n == 0:  # an empty blob's table: nothing to ask the backend for
        return b""
    data = await read_at(offset, n)
    if len(data) != n:
        raise CompressionError(f"compressed blob is truncated: wanted {n} bytes at {offset}, got {len(data)}")
    return data
