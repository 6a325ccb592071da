"""The at-rest encryption format (backends/encryption.py, docs/encryption.md).

Round trips over random sizes and chunkings, range reads that must equal
plaintext slices and touch only their segments, and the failure side: any
damaged, truncated, extended, reordered or foreign ciphertext must raise
EncryptionError on a read that covers it — never return wrong bytes. Small
segment sizes keep multi-segment cases cheap; a few cases use the default.

Tests drive the async API with asyncio.run so hypothesis can run them too.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backends.base import BackendError
from backends.encryption import (
    ALG_AES_256_GCM,
    ALG_CHACHA20_POLY1305,
    CIPHERS,
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    TAG_SIZE,
    EncryptedReader,
    EncryptionError,
    MasterKey,
    MasterKeyError,
    ciphertext_size,
    cpu_has_aes,
    decrypt_bytes,
    default_algorithm,
    decrypt_range,
    encrypt_stream,
    plaintext_size,
)

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEGMENTS = st.sampled_from([64, 100, 256])
MASTER = MasterKey.from_bytes(bytes(range(32)))

ReadAt = Callable[[int, int], Awaitable[bytes]]


# ---------------------------------------------------------------- helpers


async def _chunks(data: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    """`data` cut at the given (sorted, deduplicated) offsets."""
    pos = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}):
        yield data[pos:cut]
        pos = cut
    yield data[pos:]


def encrypt(data: bytes, segment_size: int = DEFAULT_SEGMENT_SIZE, cuts: list[int] | None = None,
            master: MasterKey = MASTER, algorithm: int = ALG_CHACHA20_POLY1305) -> bytes:
    async def run() -> bytes:
        pieces = [p async for p in encrypt_stream(master, _chunks(data, cuts or []), segment_size=segment_size,
                                                  algorithm=algorithm)]
        return b"".join(pieces)

    return asyncio.run(run())


def reader(blob: bytes, log: list[tuple[int, int]] | None = None) -> ReadAt:
    async def read_at(offset: int, n: int) -> bytes:
        if log is not None:
            log.append((offset, n))
        return blob[offset : offset + n]

    return read_at


def decrypt(blob: bytes, start: int = 0, length: int | None = None, *, master: MasterKey = MASTER,
            expected_size: int | None = None, log: list[tuple[int, int]] | None = None) -> bytes:
    async def run() -> bytes:
        stream = decrypt_range(master, reader(blob, log), len(blob), start, length, expected_size=expected_size)
        return b"".join([p async for p in stream])

    return asyncio.run(run())


def segment_span(index: int, segment_size: int) -> tuple[int, int]:
    """Ciphertext offsets [lo, hi) of segment `index` (a full one)."""
    lo = HEADER_SIZE + index * (segment_size + TAG_SIZE)
    return lo, lo + segment_size + TAG_SIZE


# ---------------------------------------------------------------- sizes


@FAST
@given(size=st.integers(0, 5000), segment=SEGMENTS)
def test_size_functions_are_inverse(size: int, segment: int) -> None:
    assert plaintext_size(ciphertext_size(size, segment), segment) == size


@given(total=st.integers(0, 3000), segment=SEGMENTS)
@settings(max_examples=200, deadline=None)
def test_every_ciphertext_size_maps_to_one_plaintext_size_or_is_refused(total: int, segment: int) -> None:
    try:
        size = plaintext_size(total, segment)
    except EncryptionError:
        return
    assert ciphertext_size(size, segment) == total


def test_encryption_error_is_a_backend_error() -> None:
    assert issubclass(EncryptionError, BackendError)
    assert issubclass(MasterKeyError, EncryptionError)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "size",
    [0, 1, DEFAULT_SEGMENT_SIZE - 1, DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE + 1, 3 * 1024 * 1024 + 7],
)
def test_round_trip_default_segment_size(size: int) -> None:
    data = os.urandom(size)
    cuts = [size // 3, size // 3 + 1, size - 5] if size else []
    blob = encrypt(data, cuts=cuts)
    assert len(blob) == ciphertext_size(size)
    assert data not in blob or size < 8  # really encrypted
    assert decrypt(blob) == data
    assert decrypt(blob, expected_size=size) == data


@FAST
@given(data=st.binary(max_size=2000), segment=SEGMENTS, cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_round_trip_random_sizes_and_chunkings(data: bytes, segment: int, cuts: list[int]) -> None:
    blob = encrypt(data, segment, cuts)
    assert len(blob) == ciphertext_size(len(data), segment)
    assert decrypt(blob) == data


def test_round_trip_with_large_chunks_and_batches() -> None:
    # 5 MiB in uneven chunks bigger than a batch: several worker-thread hops.
    data = os.urandom(5 * 1024 * 1024 + 3)
    blob = encrypt(data, cuts=[1, 2_500_000, 2_500_001, 4_000_000])
    assert decrypt(blob) == data
    assert decrypt(blob, 1_000_000, 3_000_000) == data[1_000_000:4_000_000]


def test_same_plaintext_encrypts_differently() -> None:
    data = b"x" * 1000
    assert encrypt(data, 64) != encrypt(data, 64)


@FAST
@given(data=st.binary(max_size=3000), segment=SEGMENTS, a=st.integers(0, 3000), b=st.integers(0, 3000))
def test_range_reads_equal_slices_and_touch_only_their_segments(data: bytes, segment: int, a: int, b: int) -> None:
    blob = encrypt(data, segment)
    start, end = sorted((min(a, len(data)), min(b, len(data))))
    log: list[tuple[int, int]] = []
    assert decrypt(blob, start, end - start, log=log) == data[start:end]
    assert log[0] == (0, HEADER_SIZE)
    if end > start and end < len(data):
        first, last = start // segment, (end - 1) // segment
        lo, hi = HEADER_SIZE + first * (segment + TAG_SIZE), HEADER_SIZE + (last + 1) * (segment + TAG_SIZE)
        hi = min(hi, len(blob))  # the final segment may be short
        assert all(lo <= off and off + n <= hi for off, n in log[1:])
        assert sum(n for _, n in log[1:]) == hi - lo


def test_small_range_of_a_large_blob_reads_one_segment() -> None:
    data = os.urandom(4 * 1024 * 1024)
    blob = encrypt(data)
    log: list[tuple[int, int]] = []
    start = 2 * 1024 * 1024 + 100
    assert decrypt(blob, start, 10, log=log) == data[start : start + 10]
    lo, hi = segment_span(start // DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE)
    assert log == [(0, HEADER_SIZE), (lo, hi - lo)]


def test_range_outside_the_blob_is_refused() -> None:
    blob = encrypt(b"abc", 64)
    with pytest.raises(ValueError):
        decrypt(blob, 2, 5)
    with pytest.raises(ValueError):
        decrypt(blob, -1, 1)


def test_stopping_early_is_clean() -> None:
    data = os.urandom(3 * 1024 * 1024)
    blob = encrypt(data)

    async def run() -> bytes:
        stream = decrypt_range(MASTER, reader(blob), len(blob))
        first = await stream.__anext__()
        await stream.aclose()
        return first

    assert data.startswith(asyncio.run(run()))


# ---------------------------------------------------------------- tampering


def _raises(blob: bytes, start: int = 0, length: int | None = None, **kw: object) -> None:
    with pytest.raises(EncryptionError):
        decrypt(blob, start, length, **kw)  # type: ignore[arg-type]


@FAST
@given(data=st.binary(max_size=1500), segment=SEGMENTS, where=st.integers(0), flip=st.integers(1, 255),
       a=st.integers(0, 1500), b=st.integers(0, 1500))
def test_any_flipped_byte_fails_a_read_covering_it(
    data: bytes, segment: int, where: int, flip: int, a: int, b: int
) -> None:
    blob = bytearray(encrypt(data, segment))
    pos = where % len(blob)
    blob[pos] ^= flip
    damaged = bytes(blob)
    if pos < HEADER_SIZE:
        # Header damage fails every read, even an empty one.
        _raises(damaged, 0, 0)
        _raises(damaged, len(data), 0)
    else:
        index = (pos - HEADER_SIZE) // (segment + TAG_SIZE)
        start = index * segment
        _raises(damaged, start, min(segment, len(data) - start))
    # Whatever a random range read does, it never returns wrong bytes.
    start, end = sorted((min(a, len(data)), min(b, len(data))))
    try:
        got = decrypt(damaged, start, end - start)
    except EncryptionError:
        return
    assert got == data[start:end]


@FAST
@given(data=st.binary(max_size=1500), segment=SEGMENTS, cut=st.integers(0))
def test_truncation_anywhere_fails(data: bytes, segment: int, cut: int) -> None:
    blob = encrypt(data, segment)
    short = blob[: cut % len(blob)]
    _raises(short)  # to the end of whatever the short blob claims to hold
    _raises(short, 0, min(1, len(data)), expected_size=len(data))


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 200])
def test_truncation_at_every_point_fails(size: int) -> None:
    # Exhaustive, so cuts at segment boundaries (a blob that still parses) are covered.
    data = os.urandom(size)
    blob = encrypt(data, 64)
    for cut in range(len(blob)):
        _raises(blob[:cut])


def test_every_flipped_byte_fails_a_full_read() -> None:
    data = os.urandom(150)
    blob = encrypt(data, 64)
    for pos in range(len(blob)):
        damaged = bytearray(blob)
        damaged[pos] ^= 0x01
        _raises(bytes(damaged))


@FAST
@given(data=st.binary(max_size=1500), segment=SEGMENTS, extra=st.binary(min_size=1, max_size=400))
def test_appended_bytes_fail(data: bytes, segment: int, extra: bytes) -> None:
    blob = encrypt(data, segment) + extra
    _raises(blob)
    _raises(blob, 0, min(1, len(data)), expected_size=len(data))


def test_appending_a_whole_segment_fails() -> None:
    blob = encrypt(os.urandom(640), 64)  # ten full segments
    lo, hi = segment_span(3, 64)
    _raises(blob + blob[lo:hi])


@FAST
@given(segments=st.integers(2, 8), tail=st.integers(0, 63), pick=st.tuples(st.integers(0), st.integers(0)))
def test_swapped_segments_fail(segments: int, tail: int, pick: tuple[int, int]) -> None:
    data = os.urandom(segments * 64 + tail)
    blob = encrypt(data, 64)
    full = segments  # segments 0..full-1 are full-sized
    i, j = pick[0] % full, pick[1] % full
    assume(i != j)
    i, j = min(i, j), max(i, j)
    (ilo, ihi), (jlo, jhi) = segment_span(i, 64), segment_span(j, 64)
    swapped = blob[:ilo] + blob[jlo:jhi] + blob[ihi:jlo] + blob[ilo:ihi] + blob[jhi:]
    assert len(swapped) == len(blob)
    _raises(swapped)
    _raises(swapped, i * 64, 64)


def test_dropped_segment_fails() -> None:
    data = os.urandom(64 * 5)
    blob = encrypt(data, 64)
    lo, hi = segment_span(2, 64)
    _raises(blob[:lo] + blob[hi:])


def test_segment_from_another_blob_fails() -> None:
    data = os.urandom(64 * 4)
    one, two = encrypt(data, 64), encrypt(data, 64)
    lo, hi = segment_span(1, 64)
    mixed = one[:lo] + two[lo:hi] + one[hi:]
    _raises(mixed, 64, 64)
    # A header from another blob does not open this one's segments.
    _raises(two[:HEADER_SIZE] + one[HEADER_SIZE:], 0, 64)


def test_other_master_key_fails_clearly() -> None:
    blob = encrypt(b"secret data", 64)
    other = MasterKey.from_bytes(bytes(32))
    with pytest.raises(EncryptionError, match="master key"):
        decrypt(blob, master=other)
    with pytest.raises(EncryptionError, match="master key"):
        decrypt(blob, 0, 0, master=other)


def test_not_an_encrypted_blob() -> None:
    plain = b"just some plain bytes " * 20
    _raises(plain)
    _raises(b"")


def test_short_read_fails() -> None:
    blob = encrypt(os.urandom(500), 64)

    async def short_read(offset: int, n: int) -> bytes:
        return blob[offset : offset + n][:-1] if offset else blob[:n]

    async def run() -> bytes:
        return b"".join([p async for p in decrypt_range(MASTER, short_read, len(blob))])

    with pytest.raises(EncryptionError, match="truncated"):
        asyncio.run(run())


def test_segment_size_out_of_bounds_is_refused() -> None:
    with pytest.raises(EncryptionError):
        encrypt(b"x", 8)


# ---------------------------------------------------------------- master key


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = MasterKey.load_or_create(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600
    assert path.stat().st_size == 32
    again = MasterKey.load_or_create(path)
    assert again.key_id == first.key_id
    assert MasterKey.load(path).key_id == first.key_id
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    blob = encrypt(b"hello", 64, master=first)
    assert decrypt(blob, master=again) == b"hello"
    assert path.read_bytes().hex() not in repr(first)


def test_key_file_is_created_private_despite_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        MasterKey.load_or_create(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_racing_creators_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ids: list[bytes] = []
    threads = [threading.Thread(target=lambda: ids.append(MasterKey.load_or_create(path).key_id)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 8 and len(set(ids)) == 1


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    MasterKey.load_or_create(path)
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        MasterKey.load_or_create(path)


@pytest.mark.parametrize("content", [b"", b"x" * 31, b"x" * 33, b"x" * 64])
def test_key_file_of_wrong_length_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="exactly 32 bytes"):
        MasterKey.load_or_create(path)


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir(mode=0o700)
    with pytest.raises(MasterKeyError):
        MasterKey.load_or_create(tmp_path / "k")


def test_missing_key_file_is_refused_by_load(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        MasterKey.load(tmp_path / "nope")


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_from_bytes_wrong_length(length: int) -> None:
    with pytest.raises(MasterKeyError):
        MasterKey.from_bytes(b"k" * length)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=700), segment=st.sampled_from([64, 100, 256]), a=st.integers(0, 700),
       b=st.integers(0, 700))
def test_decrypt_bytes_agrees_with_decrypt_range(data: bytes, segment: int, a: int, b: int) -> None:
    blob = encrypt(data, segment)
    start, end = sorted((min(a, len(data)), min(b, len(data))))
    assert decrypt_bytes(MASTER, blob, start, end - start, expected_size=len(data)) == data[start:end]
    with pytest.raises(EncryptionError):
        decrypt_bytes(MASTER, blob, start, end - start, expected_size=len(data) + 1)
    if len(data) > 0:
        damaged = bytearray(blob)
        damaged[-1] ^= 1  # the final segment's tag: every read reaching the end fails
        with pytest.raises(EncryptionError):
            decrypt_bytes(MASTER, bytes(damaged), 0, len(data))
        with pytest.raises(EncryptionError):
            decrypt_bytes(MASTER, blob[:-1], 0, len(data) - 1)  # truncated: the size no longer fits


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=900), ranges=st.lists(st.tuples(st.integers(0, 900), st.integers(0, 900)),
                                                               min_size=1, max_size=6))
def test_one_reader_serves_many_ranges_with_one_header_read(data: bytes, ranges) -> None:
    blob = encrypt(data, 100)
    log: list[tuple[int, int]] = []

    async def run() -> None:
        r = await EncryptedReader.open(MASTER, reader(blob, log), len(blob), expected_size=len(data))
        assert r.size == len(data)
        for a, b in ranges:
            start, end = sorted((min(a, len(data)), min(b, len(data))))
            assert await r.read(start, end - start) == data[start:end]

    asyncio.run(run())
    assert [entry for entry in log if entry[0] == 0] == [(0, HEADER_SIZE)]  # the header, once


# ---------------------------------------------------------------- ciphers


@FAST
@given(data=st.binary(max_size=2000), segment_size=SEGMENTS, bounds=st.tuples(st.integers(0, 2000), st.integers(0, 2000)),
       algorithm=st.sampled_from([ALG_AES_256_GCM, ALG_CHACHA20_POLY1305]))
def test_every_cipher_round_trips_any_range(data: bytes, segment_size: int, bounds, algorithm: int) -> None:
    blob = encrypt(data, segment_size, algorithm=algorithm)
    assert blob[9] == algorithm  # the header records the segment cipher
    assert len(blob) == ciphertext_size(len(data), segment_size)
    start = min(bounds[0], len(data))
    length = min(bounds[1], len(data) - start)
    assert decrypt(blob, start, length) == data[start:start + length]
    assert decrypt_bytes(MASTER, blob, start, length, expected_size=len(data)) == data[start:start + length]


@pytest.mark.parametrize("algorithm", [ALG_AES_256_GCM, ALG_CHACHA20_POLY1305])
def test_a_flipped_byte_fails_under_either_cipher(algorithm: int) -> None:
    data = os.urandom(1000)
    blob = bytearray(encrypt(data, 256, algorithm=algorithm))
    blob[HEADER_SIZE + 300] ^= 1
    with pytest.raises(EncryptionError, match="segment 1"):
        decrypt(bytes(blob))


def test_the_cipher_byte_is_authenticated() -> None:
    """Relabelling an AES-GCM blob as ChaCha20 (or back) breaks the header, not a segment."""
    blob = bytearray(encrypt(b"payload" * 50, 256, algorithm=ALG_AES_256_GCM))
    blob[9] = ALG_CHACHA20_POLY1305
    with pytest.raises(EncryptionError, match="header"):
        decrypt(bytes(blob))
    blob[9] = 77
    with pytest.raises(EncryptionError, match="unsupported"):
        decrypt(bytes(blob))


def test_cipher_names_and_the_automatic_choice() -> None:
    assert CIPHERS == {"chacha20-poly1305": ALG_CHACHA20_POLY1305, "aes-256-gcm": ALG_AES_256_GCM}
    assert default_algorithm("chacha20-poly1305") == ALG_CHACHA20_POLY1305
    assert default_algorithm("aes-256-gcm") == ALG_AES_256_GCM
    assert default_algorithm("auto") == (ALG_AES_256_GCM if cpu_has_aes() else ALG_CHACHA20_POLY1305)


@pytest.mark.parametrize("cpuinfo, expected", [
    ("processor\t: 0\nflags\t\t: fpu vme sse2 aes avx2\n", True),  # x86 with AES-NI
    ("processor\t: 0\nflags\t\t: fpu vme sse2 avx2\n", False),
    ("Features\t: fp asimd evtstrm aes pmull sha1\n", True),  # arm64 with the AES extension
    ("Features\t: fp asimd evtstrm\n", False),
    ("flags\t\t: fpu vaes\n", False),  # only a whole word counts
    ("", False),
])
def test_aes_instructions_are_read_from_cpuinfo(cpuinfo: str, expected: bool) -> None:
    assert cpu_has_aes(cpuinfo) is expected
