"""The seekable zstd compression format (backends/compression.py, docs/encryption.md).

Round trips over random sizes, data kinds and chunkings; range reads that must
equal plaintext slices and read only the footer, the table and their frames;
the layout checked against an independent parser written from the docs; and
the failure side: every damaged footer/table byte, every truncation and
extension, hostile frames (decompression bombs, lying lengths) and a wrong
expected size must raise CompressionError — never wrong bytes. Frame bodies
are the one documented exception (raw frames are not checksummed here; the
encryption layer above catches that). Small frame sizes keep multi-frame
cases cheap.

Tests drive the async API with asyncio.run so hypothesis can run them too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.base import BackendError
from backends.compression import (
    FOOTER_SIZE,
    MAGIC,
    CompressionError,
    compress_stream,
    compressed_plain_size,
    decompress_range,
)
from backends.encryption import (
    EncryptionError,
    MasterKey,
    decrypt_range,
    encrypt_stream,
    plaintext_size,
)

pytestmark = pytest.mark.timeout(180)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FRAMES = st.sampled_from([64, 100, 256, 4096])
ZSTD_BIT = 1 << 31

ReadAt = Callable[[int, int], Awaitable[bytes]]


# ---------------------------------------------------------------- helpers


def make_data(kind: str, size: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "zeros":
        return bytes(size)
    if kind == "text":  # moderately compressible: repeated words with random numbers
        lines, length = [], 0
        while length < size:
            lines.append(f"sample {rng.randrange(10**6)} temp={rng.random():.3f} ok\n")
            length += len(lines[-1])
        return "".join(lines).encode()[:size]
    # mixed: alternating random and zero runs, so one blob holds both frame kinds
    out = bytearray()
    while len(out) < size:
        run = rng.randrange(1, 300)
        out += rng.randbytes(run) if rng.random() < 0.5 else bytes(run)
    return bytes(out[:size])


KINDS = st.sampled_from(["random", "zeros", "text", "mixed"])


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    pos = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        yield data[pos:cut]
        pos = cut
    yield data[pos:]


def compress(data: bytes, frame_size: int = 4096, cuts: list[int] | None = None, level: int = 3) -> bytes:
    async def run() -> bytes:
        stream = compress_stream(_chunks(data, cuts or []), level=level, frame_size=frame_size)
        return b"".join([p async for p in stream])

    return asyncio.run(run())


def reader(blob: bytes, log: list[tuple[int, int]] | None = None) -> ReadAt:
    """An in-memory read_at that records its calls and checks they never overlap."""
    busy = False

    async def read_at(offset: int, n: int) -> bytes:
        nonlocal busy
        assert not busy, "read_at calls overlapped"
        busy = True
        if log is not None:
            log.append((offset, n))
        await asyncio.sleep(0)  # give a read-ahead the chance to overlap, if it could
        busy = False
        return blob[offset : offset + n]

    return read_at


def decompress(blob: bytes, start: int = 0, length: int | None = None, *, expected_size: int | None = None,
               log: list[tuple[int, int]] | None = None, read_at: ReadAt | None = None) -> bytes:
    async def run() -> bytes:
        stream = decompress_range(read_at or reader(blob, log), len(blob), start, length, expected_size=expected_size)
        return b"".join([p async for p in stream])

    return asyncio.run(run())


def plain_size(blob: bytes) -> int:
    return asyncio.run(compressed_plain_size(reader(blob), len(blob)))


@dataclass
class Parsed:
    frame_size: int
    count: int
    plain_size: int
    entries: list[int]
    offsets: list[int]


def parse(blob: bytes) -> Parsed:
    """An independent reader of the documented layout (docs/encryption.md)."""
    footer = blob[-56:]
    magic, version, reserved, frame_size, count, size, table_len, table_sum = struct.unpack(">8sB3sIQQQ8s", footer[:48])
    assert (magic, version, reserved) == (b"MESHZST1", 1, b"\0\0\0")
    assert footer[48:] == hashlib.sha256(footer[:48]).digest()[:8]
    table = blob[len(blob) - 56 - table_len : len(blob) - 56]
    assert table_sum == hashlib.sha256(table).digest()[:8]
    assert table_len == 4 * count and count == -(-size // frame_size)
    entries = list(struct.unpack(f">{count}I", table))
    offsets = [0]
    for e in entries:
        offsets.append(offsets[-1] + (e & ~ZSTD_BIT))
    assert offsets[-1] == len(blob) - 56 - table_len
    return Parsed(frame_size, count, size, entries, offsets)


def build(frames: list[tuple[bytes, bool]], frame_size: int, size: int) -> bytes:
    """A blob assembled by hand with valid checksums: for hostile-frame tests."""
    table = b"".join(struct.pack(">I", len(f) | (ZSTD_BIT if z else 0)) for f, z in frames)
    head = struct.pack(">8sB3sIQQQ8s", MAGIC, 1, b"\0\0\0", frame_size, len(frames), size, len(table),
                       hashlib.sha256(table).digest()[:8])
    return b"".join(f for f, _ in frames) + table + head + hashlib.sha256(head).digest()[:8]


# ---------------------------------------------------------------- round trips and layout


def test_compression_error_is_a_backend_error() -> None:
    assert issubclass(CompressionError, BackendError)


def test_empty_input_is_a_footer_only() -> None:
    blob = compress(b"")
    assert len(blob) == FOOTER_SIZE == 56
    assert parse(blob).count == 0
    assert decompress(blob) == b""
    assert decompress(blob, expected_size=0) == b""
    assert plain_size(blob) == 0


@FAST
@given(kind=KINDS, size=st.integers(0, 5 * 4096), frame=FRAMES, seed=st.integers(0, 3),
       cuts=st.lists(st.integers(0, 5 * 4096), max_size=20))
def test_round_trip_random_sizes_kinds_and_chunkings(kind: str, size: int, frame: int, seed: int,
                                                     cuts: list[int]) -> None:
    data = make_data(kind, size, seed)
    blob = compress(data, frame, cuts)
    p = parse(blob)
    assert p.plain_size == size and p.frame_size == frame
    # Chunking does not change the blob: frames are cut at fixed offsets.
    assert blob == compress(data, frame)
    for i, e in enumerate(p.entries):
        frame_plain = data[i * frame : (i + 1) * frame]
        stored = blob[p.offsets[i] : p.offsets[i + 1]]
        if e & ZSTD_BIT:
            assert len(stored) < len(frame_plain)
            assert zstandard.frame_content_size(stored) == len(frame_plain)
        else:
            assert stored == frame_plain
    assert decompress(blob) == data
    assert decompress(blob, expected_size=size) == data
    assert plain_size(blob) == size


def test_round_trip_default_frame_size_and_big_chunks() -> None:
    # 5 MiB + 3 in uneven chunks bigger than a batch: several worker-thread hops.
    data = make_data("text", 5 * 1024 * 1024 + 3)
    blob = compress(data, 1024 * 1024, cuts=[1, 2_500_000, 2_500_001, 4_000_000])
    assert blob == compress(data, 1024 * 1024)
    assert parse(blob).count == 6
    assert decompress(blob) == data
    assert decompress(blob, 1_000_000, 3_000_000) == data[1_000_000:4_000_000]


def test_compressible_data_shrinks_a_lot() -> None:
    data = make_data("text", 1024 * 1024)
    blob = compress(data, 64 * 1024)
    assert len(blob) < len(data) // 3
    assert all(e & ZSTD_BIT for e in parse(blob).entries)
    zeros = compress(bytes(1024 * 1024), 64 * 1024)
    assert len(zeros) < 2000


@pytest.mark.parametrize("frame", [64, 4096, 1024 * 1024])
def test_random_data_is_stored_raw_and_grows_by_the_table_only(frame: int) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    blob = compress(data, frame)
    p = parse(blob)
    assert not any(e & ZSTD_BIT for e in p.entries)  # every frame raw
    assert len(blob) == len(data) + 4 * p.count + FOOTER_SIZE
    assert decompress(blob) == data


def test_mixed_blob_uses_both_frame_kinds() -> None:
    data = os.urandom(4096) + bytes(4096) + os.urandom(100)
    p = parse(blob := compress(data, 4096))
    assert [bool(e & ZSTD_BIT) for e in p.entries] == [False, True, False]
    assert decompress(blob) == data


def test_bad_parameters_are_refused() -> None:
    for frame in (63, 16 * 1024 * 1024 + 1):
        with pytest.raises(ValueError):
            compress(b"abc", frame)
    with pytest.raises(ValueError):
        compress(b"abc", 4096, level=99)


# ---------------------------------------------------------------- range reads


@FAST
@given(kind=KINDS, size=st.integers(0, 3000), frame=st.sampled_from([64, 100, 256]), seed=st.integers(0, 3),
       a=st.integers(0, 3000), b=st.integers(0, 3000))
def test_range_reads_equal_slices_and_touch_only_their_frames(kind: str, size: int, frame: int, seed: int,
                                                              a: int, b: int) -> None:
    data = make_data(kind, size, seed)
    blob = compress(data, frame)
    p = parse(blob)
    start, end = sorted((min(a, size), min(b, size)))
    log: list[tuple[int, int]] = []
    assert decompress(blob, start, end - start, log=log) == data[start:end]
    table_at = len(blob) - FOOTER_SIZE - 4 * p.count
    assert log[0] == (len(blob) - FOOTER_SIZE, FOOTER_SIZE)
    assert log[1:2] == ([(table_at, 4 * p.count)] if p.count else [])
    frame_reads = log[2:] if p.count else log[1:]
    if end == start:
        assert frame_reads == []
        return
    lo, hi = p.offsets[start // frame], p.offsets[(end - 1) // frame + 1]
    assert all(lo <= off and off + n <= hi for off, n in frame_reads)
    assert sum(n for _, n in frame_reads) == hi - lo  # each touched frame read once


def test_small_range_of_a_large_blob_reads_one_frame() -> None:
    data = make_data("text", 4 * 1024 * 1024)
    blob = compress(data, 256 * 1024)
    p = parse(blob)
    start = 2 * 1024 * 1024 + 100
    log: list[tuple[int, int]] = []
    assert decompress(blob, start, 10, log=log) == data[start : start + 10]
    i = start // (256 * 1024)
    assert log[2:] == [(p.offsets[i], p.offsets[i + 1] - p.offsets[i])]


def test_range_outside_the_blob_is_refused() -> None:
    blob = compress(b"abc", 64)
    for start, length in [(2, 5), (-1, 1), (0, -1), (4, None)]:
        with pytest.raises(ValueError):
            decompress(blob, start, length)
    assert decompress(blob, 3, 0) == b""
    assert decompress(blob, 3) == b""


def test_expected_size_mismatch_is_refused() -> None:
    data = make_data("mixed", 1000)
    blob = compress(data, 64)
    for wrong in (0, 999, 1001):
        with pytest.raises(CompressionError, match="expected"):
            decompress(blob, 0, 0, expected_size=wrong)
    assert decompress(blob, 10, 5, expected_size=1000) == data[10:15]


def test_stopping_early_is_clean() -> None:
    data = make_data("text", 3 * 1024 * 1024)
    blob = compress(data, 64 * 1024)

    async def run() -> tuple[bytes, bytes]:
        stream = decompress_range(reader(blob), len(blob))
        first = await stream.__anext__()
        await stream.aclose()
        cstream = compress_stream(_chunks(data, [100_000 * k for k in range(30)]), frame_size=64 * 1024)
        piece = await cstream.__anext__()  # a second batch is in flight by now
        await cstream.aclose()
        for _ in range(10):  # let cancelled tasks finish cancelling
            await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running unowned
        return first, piece

    first, piece = asyncio.run(run())
    assert data.startswith(first) and first
    assert piece


# ---------------------------------------------------------------- damage: footer, table, truncation


def sample_blob() -> tuple[bytes, bytes]:
    rng = random.Random(7)  # 11 frames of 64, alternately random (raw) and zeros (zstd)
    data = b"".join(rng.randbytes(64) if i % 2 else bytes(64) for i in range(11))[:700]
    blob = compress(data, 64)
    assert {bool(e & ZSTD_BIT) for e in parse(blob).entries} == {True, False}
    return data, blob


@pytest.mark.parametrize("xor", [0x01, 0x80, 0xFF])
def test_every_damaged_footer_or_table_byte_is_detected(xor: int) -> None:
    _, blob = sample_blob()
    p = parse(blob)
    trailer_at = p.offsets[-1]
    for pos in range(trailer_at, len(blob)):
        bad = bytearray(blob)
        bad[pos] ^= xor
        bad_blob = bytes(bad)
        with pytest.raises(CompressionError):
            decompress(bad_blob)
        with pytest.raises(CompressionError):  # even a read of nothing checks the table
            decompress(bad_blob, 0, 0)
        if pos >= len(blob) - FOOTER_SIZE:
            with pytest.raises(CompressionError):
                plain_size(bad_blob)


@FAST
@given(pos=st.integers(0, 10**6), value=st.integers(1, 255), size=st.integers(0, 3000), seed=st.integers(0, 3))
def test_random_damage_to_the_trailer_is_detected(pos: int, value: int, size: int, seed: int) -> None:
    blob = compress(make_data("mixed", size, seed), 64)
    trailer_at = parse(blob).offsets[-1]
    pos = trailer_at + pos % (len(blob) - trailer_at)
    bad = bytearray(blob)
    bad[pos] ^= value
    with pytest.raises(CompressionError):
        decompress(bytes(bad), 0, 0)


def test_every_truncation_and_extension_is_detected() -> None:
    _, blob = sample_blob()
    for cut in range(len(blob)):
        with pytest.raises(CompressionError):
            decompress(blob[:cut])
        with pytest.raises(CompressionError):
            decompress(blob[:cut], 0, 0)
    for extra in (b"\0", b"x" * 7, blob[-FOOTER_SIZE:]):
        with pytest.raises(CompressionError):
            decompress(blob + extra, 0, 0)
        with pytest.raises(CompressionError):
            decompress(extra + blob, 0, 0)  # the footer is fine, the sizes no longer add up


@FAST
@given(cut=st.integers(0, 10**6), size=st.integers(1, 50_000), frame=FRAMES)
def test_truncated_compressible_blobs_are_detected(cut: int, size: int, frame: int) -> None:
    blob = compress(make_data("text", size), frame)
    with pytest.raises(CompressionError):
        decompress(blob[: cut % len(blob)], 0, 0)


def test_short_reads_are_truncation() -> None:
    _, blob = sample_blob()
    for limit in (0, 10, 55):
        async def short(offset: int, n: int, limit: int = limit) -> bytes:
            return blob[offset : offset + min(n, limit)]

        with pytest.raises(CompressionError, match="truncated"):
            decompress(blob, read_at=short)
    with pytest.raises(CompressionError):
        asyncio.run(compressed_plain_size(reader(blob), FOOTER_SIZE - 1))


def test_damaged_frame_bodies_never_give_wrong_lengths() -> None:
    """Documented limit: a raw frame body is not checksummed at this layer (the
    AEAD layer above catches it); a zstd frame carries zstd's own checksum."""
    data, blob = sample_blob()
    p = parse(blob)
    for i, e in enumerate(p.entries):
        for pos in range(p.offsets[i], p.offsets[i + 1]):
            bad = bytearray(blob)
            bad[pos] ^= 0x5A
            try:
                out = decompress(bytes(bad))
            except CompressionError:
                assert e & ZSTD_BIT  # a raw frame has nothing to check it by
                continue
            if e & ZSTD_BIT:  # only an inert header field (e.g. window size) may change
                assert out == data
            else:  # exactly that byte of the plaintext changes
                at = i * 64 + pos - p.offsets[i]
                assert out == data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


# ---------------------------------------------------------------- hostile frames


def test_decompression_bomb_is_refused_before_allocating() -> None:
    frame = 64 * 1024
    bomb = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(64 * 1024 * 1024))
    assert len(bomb) < frame
    blob = build([(bomb, True)], frame, frame)
    tracemalloc.start()
    try:
        with pytest.raises(CompressionError, match="declares"):
            decompress(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_frames_without_a_declared_size_are_refused() -> None:
    plain = bytes(1000)
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(plain)
    with pytest.raises(CompressionError, match="declares"):
        decompress(build([(frame, True)], 1024, 1000))


def test_lying_frames_are_refused() -> None:
    z = zstandard.ZstdCompressor(write_content_size=True, write_checksum=True)
    good = z.compress(bytes(100))
    cases = [
        [(good + b"junk", True)],  # trailing bytes after the zstd frame
        [(good[:-1], True)],  # cut zstd frame
        [(z.compress(bytes(99)), True)],  # declares 99 for a 100-byte frame
        [(b"\0" * 99, False)],  # raw frame one byte short
        [(b"x" * 100, True)],  # "zstd" frame no smaller than the plaintext
        [(b"not zstd at all", True)],
    ]
    for frames in cases:
        with pytest.raises(CompressionError):
            decompress(build(frames, 128, 100))
    # Two raw frames whose lengths add up but are split wrongly.
    with pytest.raises(CompressionError, match="raw frame 0"):
        decompress(build([(b"a" * 63, False), (b"b" * 37, False)], 64, 100))
    assert decompress(build([(good, True)], 128, 100)) == bytes(100)  # the control


def test_hostile_footer_fields_are_refused() -> None:
    # Valid checksums, impossible values: frame size out of bounds, count or table disagreeing.
    def footer(frame_size: int, count: int, size: int, table: bytes) -> bytes:
        head = struct.pack(">8sB3sIQQQ8s", MAGIC, 1, b"\0\0\0", frame_size, count, size, len(table),
                           hashlib.sha256(table).digest()[:8])
        return table + head + hashlib.sha256(head).digest()[:8]

    for blob in (
        footer(32, 0, 0, b""),
        footer(32 * 1024 * 1024, 0, 0, b""),
        footer(64, 2, 64, struct.pack(">2I", 32, 32)),
        footer(64, 1, 10**15, struct.pack(">I", 10)),
        footer(64, 1, 64, struct.pack(">II", 64, 0)),
    ):
        with pytest.raises(CompressionError):
            decompress(blob, 0, 0)
    version2 = bytearray(compress(b"abc", 64))
    version2[-48] = 2
    version2[-8:] = hashlib.sha256(version2[-56:-8]).digest()[:8]
    with pytest.raises(CompressionError, match="unsupported"):
        decompress(bytes(version2))


# ---------------------------------------------------------------- memory


@pytest.mark.slow
def test_64_mib_stream_keeps_memory_flat(tmp_path: Path) -> None:
    total, piece = 64 * 1024 * 1024, 256 * 1024
    text = make_data("text", 4 * 1024 * 1024, seed=1)
    noise = os.urandom(3 * 1024 * 1024)

    def block(k: int) -> bytes:  # alternate compressible and random stretches
        src = text if (k // 8) % 2 == 0 else noise
        at = (k * 7919 * 4096) % (len(src) - piece)
        return src[at : at + piece]

    async def source() -> AsyncIterator[bytes]:
        for k in range(total // piece):
            yield block(k)

    want = hashlib.sha256()
    for k in range(total // piece):
        want.update(block(k))
    path = tmp_path / "blob"

    async def run() -> tuple[str, int, int, int]:
        with path.open("wb") as f:
            async for out in compress_stream(source()):
                f.write(out)
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with path.open("rb") as f:
            async def read_at(offset: int, n: int) -> bytes:
                f.seek(offset)
                return f.read(n)

            got = hashlib.sha256()
            size = path.stat().st_size
            async for out in decompress_range(read_at, size, expected_size=total):
                got.update(out)
        _, peak_read = tracemalloc.get_traced_memory()
        return got.hexdigest(), size, peak_write, peak_read

    tracemalloc.start()
    try:
        digest, size, peak_write, peak_read = asyncio.run(run())
    finally:
        tracemalloc.stop()
    assert digest == want.hexdigest()
    assert size < total * 0.8  # the text half compressed
    assert peak_write < 16 * 1024 * 1024, peak_write
    assert peak_read < 16 * 1024 * 1024, peak_read


# ---------------------------------------------------------------- under encryption


def test_compressed_then_encrypted_round_trip_and_range() -> None:
    """The intended stack: compress, then encrypt the compressed blob; read back
    through decrypt_range. Damage to a raw frame is caught by the AEAD layer."""
    master = MasterKey.from_bytes(bytes(range(32)))
    data = make_data("text", 300_000) + os.urandom(100_000)  # the last frames are random: raw

    async def run(start: int, length: int, damage_at: int | None = None) -> bytes:
        plain = compress_stream(_chunks(data, [5000]), frame_size=64 * 1024)
        sealed = bytearray(b"".join([p async for p in encrypt_stream(master, plain)]))
        if damage_at is not None:
            sealed[damage_at] ^= 1

        async def read_at(offset: int, n: int) -> bytes:
            stream = decrypt_range(master, reader(bytes(sealed)), len(sealed), offset, n)
            return b"".join([p async for p in stream])

        stream = decompress_range(read_at, plaintext_size(len(sealed)), start, length, expected_size=len(data))
        return b"".join([p async for p in stream])

    assert asyncio.run(run(0, len(data))) == data
    assert asyncio.run(run(350_000, 1000)) == data[350_000:351_000]
    with pytest.raises(EncryptionError):
        asyncio.run(run(350_000, 50_000, damage_at=-200))
