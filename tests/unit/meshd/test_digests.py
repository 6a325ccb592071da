"""meshd/digests.py against reference implementations, however the bytes are chunked."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.digests import (
    CHECKSUM_ALGORITHMS,
    INLINE_LIMIT,
    Digests,
    checksum_b64,
    new_checksum,
)


def _crc_table(poly: int) -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32_TABLE = _crc_table(0xEDB88320)  # ISO-HDLC (zlib, S3's CRC32)
_CRC32C_TABLE = _crc_table(0x82F63B78)  # Castagnoli (S3's CRC32C)


def reference_crc(table: list[int], data: bytes) -> bytes:
    """Table-driven reflected CRC-32, written out here so it is independent of the
    libraries under test; S3 sends the 4 bytes big-endian, base64-encoded."""
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return (c ^ 0xFFFFFFFF).to_bytes(4, "big")


def reference(algorithm: str, data: bytes) -> bytes:
    if algorithm == "crc32":
        return reference_crc(_CRC32_TABLE, data)
    if algorithm == "crc32c":
        return reference_crc(_CRC32C_TABLE, data)
    return hashlib.new(algorithm, data).digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# The check values of the CRC catalogue ("123456789"), and S3's empty-object values.
@pytest.mark.parametrize("algorithm, data, expected_hex", [
    ("crc32", b"123456789", "cbf43926"),
    ("crc32c", b"123456789", "e3069283"),
    ("crc32", b"", "00000000"),
    ("crc32c", b"", "00000000"),
    ("sha1", b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
    ("sha256", b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
])
def test_known_values(algorithm: str, data: bytes, expected_hex: str):
    assert checksum_b64(algorithm, data) == b64(bytes.fromhex(expected_hex))
    assert reference(algorithm, data).hex() == expected_hex  # and the reference agrees


def test_reference_crcs_agree_with_zlib():
    data = bytes(range(256)) * 7
    assert reference_crc(_CRC32_TABLE, data) == zlib.crc32(data).to_bytes(4, "big")


def test_unknown_algorithm():
    for name in ("md5", "crc64nvme", "CRC32", ""):
        with pytest.raises(ValueError):
            new_checksum(name)


@st.composite
def chunkings(draw) -> list[bytes]:
    data = draw(st.binary(max_size=5000))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@given(chunkings())
@settings(max_examples=200, deadline=None)
def test_digests_match_references_for_any_chunking(chunks: list[bytes]):
    data = b"".join(chunks)
    d = Digests(CHECKSUM_ALGORITHMS)
    for c in chunks:
        d.update(c)
    assert d.size == len(data)
    assert d.md5_hex() == hashlib.md5(data).hexdigest()
    assert d.sha256_hex() == hashlib.sha256(data).hexdigest()
    assert d.checksum_values() == {a: b64(reference(a, data)) for a in CHECKSUM_ALGORITHMS}
    for a in CHECKSUM_ALGORITHMS:
        assert checksum_b64(a, data) == b64(reference(a, data))


@given(st.lists(st.sampled_from([0, 1, 100, INLINE_LIMIT, INLINE_LIMIT + 1, 300_000]), max_size=6),
       st.integers(0, 255))
@settings(max_examples=50, deadline=None)
def test_aupdate_inline_and_threaded_agree(sizes: list[int], fill: int):
    """Small chunks are hashed inline, large ones in a thread: same result, same order."""
    chunks = [bytes([(fill + i) % 256]) * n for i, n in enumerate(sizes)]
    data = b"".join(chunks)

    async def feed() -> Digests:
        d = Digests(("crc32c", "sha1"))
        for c in chunks:
            await d.aupdate(c)
        return d

    d = asyncio.run(feed())
    assert d.size == len(data)
    assert d.md5_hex() == hashlib.md5(data).hexdigest()
    assert d.sha256_hex() == hashlib.sha256(data).hexdigest()
    assert d.checksum_values() == {"crc32c": b64(reference("crc32c", data)),
                                   "sha1": b64(hashlib.sha1(data).digest())}


def test_only_requested_checksums():
    d = Digests(("crc32",))
    d.update(b"x")
    assert set(d.checksum_values()) == {"crc32"}
    assert Digests().checksum_values() == {}


def test_checksum_values_may_be_read_twice():
    d = Digests(CHECKSUM_ALGORITHMS)
    d.update(b"hello ")
    first = d.checksum_values()
    assert d.checksum_values() == first
    d.update(b"world")  # reading does not finalise: more data still counts
    assert d.checksum_values() == {a: b64(reference(a, b"hello world")) for a in CHECKSUM_ALGORITHMS}
    assert d.sha256_hex() == hashlib.sha256(b"hello world").hexdigest()
