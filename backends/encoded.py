"""Encryption and compression in front of any backend.

`BlobCodec` turns a plain byte stream into stored bytes and back: optional
seekable zstd (backends/compression.py), then optional ChaCha20-Poly1305
(backends/encryption.py). A blob's `encoding` names the layers it went through
("plain", "aead", "zstd", "zstd+aead"); the catalog records it per blob, so a
node whose settings change still reads what it wrote before.

`EncodedBackend` wraps a backend with a codec: writes go through the codec,
reads decode according to each blob's recorded encoding and touch only the
stored bytes a range needs (the codecs are seekable). Only plain blobs offer a
file region, so sendfile never sends ciphertext.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterable, AsyncIterator, Awaitable, Callable

from backends.base import PLAIN, Backend, BackendError, BlobMissing, BlobRef, FileRegion, StagedBlob
from backends.compression import CompressionError, compress_stream, decompress_range
from backends.encryption import (
    ALG_AES_256_GCM,
    EncryptedReader,
    EncryptionError,
    MasterKey,
    MasterKeyError,
    decrypt_bytes,
    decrypt_range,
    encrypt_stream,
    plaintext_size,
)
from backends.filesystem import pread_file

AEAD = "aead"
ZSTD = "zstd"
ENCODINGS = (PLAIN, AEAD, ZSTD, f"{ZSTD}+{AEAD}")

ReadAt = Callable[[int, int], Awaitable[bytes]]

# Encrypted blobs up to this many stored bytes are read whole and decrypted in
# one worker-thread call (EncodedBackend.open): 2 MiB of plaintext at most.
ONE_HOP_BYTES = 2 * 1024 * 1024 + 4096


def is_corruption(e: BaseException) -> bool:
    """A failed authentication tag or a malformed compressed blob: the stored
    bytes are damaged. A missing or wrong master key is a setup problem, and an
    unreachable backend a passing one; neither marks a blob damaged."""
    return isinstance(e, (EncryptionError, CompressionError)) and not isinstance(e, MasterKeyError)


@dataclass(frozen=True)
class BlobCodec:
    master: MasterKey | None
    encrypt: bool = False
    compress: bool = False
    # Segment cipher of new encrypted blobs (backends/encryption.py); reads follow each blob's header.
    algorithm: int = ALG_AES_256_GCM

    @property
    def encoding(self) -> str:
        layers = [name for name, on in ((ZSTD, self.compress), (AEAD, self.encrypt)) if on]
        return "+".join(layers) or PLAIN

    def encode(self, chunks: AsyncIterable[bytes]) -> AsyncIterable[bytes]:
        if self.compress:
            chunks = compress_stream(chunks)
        if self.encrypt:
            chunks = encrypt_stream(self.require_key(), chunks, algorithm=self.algorithm)
        return chunks

    async def decode(
        self, encoding: str, read_at: ReadAt, stored_size: int, size: int, start: int, length: int
    ) -> AsyncIterator[bytes]:
        """Plain bytes [start, start+length) of a blob of `size` plain bytes
        whose stored bytes `read_at` returns."""
        if encoding not in ENCODINGS or encoding == PLAIN:
            raise BackendError(f"not a blob encoding to decode: {encoding!r}")
        layers = encoding.split("+")
        if AEAD in layers:
            master = self.require_key()
            if ZSTD not in layers:
                async for piece in decrypt_range(master, read_at, stored_size, start, length, expected_size=size):
                    yield piece
                return
            # The compression layer reads a footer, a seek table, then frames:
            # one reader, so the header is authenticated once, not per read.
            reader = await EncryptedReader.open(master, read_at, stored_size)
            read_at, stored_size = reader.read, reader.size
        async for piece in decompress_range(read_at, stored_size, start, length, expected_size=size):
            yield piece

    async def encode_bytes(self, data: bytes) -> bytes:
        """A small blob encoded whole (inline objects kept in the catalog)."""
        if self.encoding == PLAIN:
            return data
        return b"".join([piece async for piece in self.encode(_one(data))])

    async def decode_whole(
        self, encoding: str, stored: bytes, size: int, start: int, length: int
    ) -> AsyncIterator[bytes]:
        """Like `decode`, for a blob whose stored bytes are all in memory (small
        blobs read in one go, inline objects): decrypted in one call, then
        decompressed frame by frame (a small blob may hold much more plaintext)."""
        if encoding not in ENCODINGS:
            raise BackendError(f"not a blob encoding to decode: {encoding!r}")
        if encoding == PLAIN:
            yield stored[start:start + length]
            return
        layers = encoding.split("+")
        if AEAD in layers:
            master = self.require_key()
            if ZSTD not in layers:
                yield await _off_loop(decrypt_bytes, master, stored, start, length, expected_size=size)
                return
            stored = await _off_loop(decrypt_bytes, master, stored, 0, plaintext_size(len(stored)))

        async def read_at(offset: int, n: int) -> bytes:
            return stored[offset:offset + n]

        async for piece in decompress_range(read_at, len(stored), start, length, expected_size=size):
            yield piece

    async def decode_bytes(self, encoding: str, stored: bytes, size: int, start: int, length: int) -> bytes:
        return b"".join([p async for p in self.decode_whole(encoding, stored, size, start, length)])

    def require_key(self) -> MasterKey:
        if self.master is None:
            raise MasterKeyError("this blob is encrypted and the node has no master key")
        return self.master


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


# Crypto on more bytes than this runs in a worker thread, not on the event loop.
ON_LOOP_BYTES = 64 * 1024


async def _off_loop(fn: Callable[..., bytes], master: MasterKey, blob: bytes, *args, **kw) -> bytes:
    if len(blob) <= ON_LOOP_BYTES:  # an inline object: cheaper than a thread hop
        return fn(master, blob, *args, **kw)
    return await asyncio.to_thread(fn, master, blob, *args, **kw)


class EncodedBackend:
    """A backend whose blobs go through a codec; see the module docstring."""

    def __init__(self, inner: Backend, codec: BlobCodec) -> None:
        self.inner = inner
        self.codec = codec
        self.name = inner.name

    def _stored(self, ref: BlobRef) -> BlobRef:
        """The inner backend's view: the stored bytes, as plain bytes of their own."""
        return BlobRef(ref.backend, ref.content_id, ref.stored)

    @staticmethod
    def _inner_staged(staged: StagedBlob) -> StagedBlob:
        return StagedBlob(staged.backend, staged.token, staged.stored)

    async def write(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        plain = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal plain
            async for chunk in chunks:
                plain += len(chunk)
                yield chunk

        staged = await self.inner.write(self.codec.encode(counted()))
        return StagedBlob(staged.backend, staged.token, plain, self.codec.encoding, stored_size=staged.size)

    async def commit(self, staged: StagedBlob, content_id: str) -> BlobRef:
        await self.inner.commit(self._inner_staged(staged), content_id)
        return BlobRef(self.name, content_id, staged.size, staged.encoding, staged.stored)

    async def discard(self, staged: StagedBlob) -> None:
        await self.inner.discard(self._inner_staged(staged))

    async def open(self, ref: BlobRef, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        length = ref.size - start if length is None else length
        stored = self._stored(ref)
        if ref.encoding == PLAIN:
            async for chunk in self.inner.open(stored, start, length):
                yield chunk
            return
        if start < 0 or length < 0 or start + length > ref.size:
            # A BackendError like the raw backends' (the codecs raise ValueError,
            # which the object service would not map to an S3 error).
            raise BackendError(f"range {start}+{length} outside blob {ref.content_id} of {ref.size} bytes")

        if ref.stored <= ONE_HOP_BYTES:
            # Small blobs whole: one read (one thread hop for a local file, one
            # request for a remote one) instead of headers, tables, then segments.
            region = self.inner.file_region(stored, 0, ref.stored)
            if region is not None and ref.encoding == AEAD:  # read and decrypted in the same hop
                pieces = _one(await asyncio.to_thread(self._decrypt_file, region, ref, start, length))
            else:
                blob = await (asyncio.to_thread(self._read_file, region, ref) if region is not None
                              else self.inner.read_at(stored, 0, ref.stored))
                pieces = self.codec.decode_whole(ref.encoding, blob, ref.size, start, length)
            async for piece in pieces:
                if piece:
                    yield piece
            return

        async def read_at(offset: int, n: int) -> bytes:
            return await self.inner.read_at(stored, offset, n)

        async for piece in self.codec.decode(ref.encoding, read_at, ref.stored, ref.size, start, length):
            yield piece

    def _decrypt_file(self, region: FileRegion, ref: BlobRef, start: int, length: int) -> bytes:
        """A small encrypted blob in a local file, read whole and opened in one
        worker-thread call: a 1 MiB GET makes one thread hop, not a pipeline's."""
        blob = self._read_file(region, ref)
        return decrypt_bytes(self.codec.require_key(), blob, start, length, expected_size=ref.size)

    def _read_file(self, region: FileRegion, ref: BlobRef) -> bytes:
        try:
            return pread_file(region.path, 0, region.length)
        except FileNotFoundError as e:
            raise BlobMissing(f"blob {ref.content_id} missing on {self.name}") from e
        except OSError as e:
            raise BackendError(f"blob {ref.content_id}: {e.strerror}") from e

    async def read_at(self, ref: BlobRef, offset: int, length: int) -> bytes:
        return b"".join([piece async for piece in self.open(ref, offset, length)])

    def file_region(self, ref: BlobRef, start: int, length: int) -> FileRegion | None:
        if ref.encoding != PLAIN:
            return None
        return self.inner.file_region(self._stored(ref), start, length)

    async def stat(self, ref: BlobRef) -> int | None:
        return await self.inner.stat(self._stored(ref))

    async def delete(self, ref: BlobRef) -> None:
        await self.inner.delete(self._stored(ref))

    async def cleanup_staging(self) -> int:
        return await self.inner.cleanup_staging()

    def blob_ids(self) -> AsyncIterator[list[str]]:
        return self.inner.blob_ids()

    async def aclose(self) -> None:
        await self.inner.aclose()

