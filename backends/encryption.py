"""At-rest encryption: the blob format and a streaming, range-readable codec.

The on-disk format is specified in docs/encryption.md; this module is the one
implementation of it. In short: a blob is an 84-byte header (magic, version,
algorithm, segment size, master key id, and a random per-blob data key wrapped
by the node's master key with ChaCha20-Poly1305) followed by fixed-size
segments, each sealed with the data key by the header's algorithm:
AES-256-GCM (the default where the CPU has AES instructions) or
ChaCha20-Poly1305 (the default elsewhere, and every blob written before AES-GCM
was added). Every algorithm stays readable. A segment's nonce is its index and its
associated data is the header's SHA-256 plus a final-segment flag, so segments
cannot be reordered, dropped, truncated, extended or moved between blobs
without the read failing. The plaintext length is not stored: the ciphertext
size determines it exactly (`plaintext_size`), and the final flag
authenticates it.

Every failure to authenticate raises `EncryptionError`; wrong bytes are never
returned. Crypto on more than one segment runs in a worker thread, about
`BATCH_BYTES` per hop, so the event loop never blocks on a large blob.

`EncodedBackend` (backends/encoded.py) calls `encrypt_stream` on the way in
and `decrypt_range` (or `decrypt_bytes`, for small blobs) on the way out,
passing `expected_size` (the catalog's size) so that even a short range read
detects a blob truncated or extended at a segment boundary.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import stat
import struct
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from backends.base import BackendError
from backends.durable import fsync_dir
from backends.readahead import drop, read_ahead

MAGIC = b"MESHENC1"
FORMAT_VERSION = 1
ALG_CHACHA20_POLY1305 = 1
ALG_AES_256_GCM = 2
# The segment ciphers by algorithm number, and by the name config uses.
_SEGMENT_AEADS = {ALG_CHACHA20_POLY1305: ChaCha20Poly1305, ALG_AES_256_GCM: AESGCM}
CIPHERS = {"chacha20-poly1305": ALG_CHACHA20_POLY1305, "aes-256-gcm": ALG_AES_256_GCM}

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_ID_SIZE = 8

DEFAULT_SEGMENT_SIZE = 64 * 1024
MIN_SEGMENT_SIZE = 64
MAX_SEGMENT_SIZE = 16 * 1024 * 1024

# Plaintext handed to one worker-thread hop: big enough that the hop's cost
# vanishes, small enough that memory stays flat.
BATCH_BYTES = 1024 * 1024
# Up to this much is sealed/opened on the loop itself: a hop costs more.
INLINE_BYTES = 64 * 1024

# magic, version, algorithm, reserved, segment size, master key id, wrap nonce
_HEADER_PREFIX = struct.Struct(">8sBBHI8s12s")
HEADER_SIZE = _HEADER_PREFIX.size + KEY_SIZE + TAG_SIZE  # 36 + 48 = 84

_KEY_ID_LABEL = b"meshd master key id v1\x00"
_SEGMENT_NONCE_PREFIX = b"\x00\x00\x00\x00"


class EncryptionError(BackendError):
    """A blob failed authentication, is malformed, or a key is unusable."""


class MasterKeyError(EncryptionError):
    """The master key file is missing, malformed or too widely readable."""


# ---------------------------------------------------------------- master key


class MasterKey:
    """The node's 32-byte master key; wraps and unwraps per-blob data keys."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise MasterKeyError(f"master key must be {KEY_SIZE} bytes, got {len(key)}")
        self._aead = ChaCha20Poly1305(bytes(key))
        # Stored in every header so a wrong key is told apart from tampering.
        self.key_id = hashlib.sha256(_KEY_ID_LABEL + bytes(key)).digest()[:KEY_ID_SIZE]

    def __repr__(self) -> str:  # never print the key itself
        return f"MasterKey(id={self.key_id.hex()})"

    @classmethod
    def from_bytes(cls, key: bytes) -> MasterKey:
        return cls(key)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        """Read a key file: a regular file of exactly 32 raw bytes, mode 0600 or stricter."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise MasterKeyError(f"master key file {path} does not exist") from None
        except OSError as e:
            raise MasterKeyError(f"cannot open master key file {path}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise MasterKeyError(f"master key file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise MasterKeyError(
                    f"master key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                    "it must not be readable or writable by group or others (chmod 600)"
                )
            data = os.read(fd, KEY_SIZE + 1)
        finally:
            os.close(fd)
        if len(data) != KEY_SIZE:
            raise MasterKeyError(
                f"master key file {path} must hold exactly {KEY_SIZE} bytes, "
                f"found {len(data) if len(data) <= KEY_SIZE else 'more'}"
            )
        return cls(data)

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        """Load the key file, creating it (mode 0600, durable) on first use.

        The new key is written and fsynced under a temporary name created with
        O_CREAT|O_EXCL, then hard-linked into place: the key file either does
        not exist or is complete, even after a crash, and two starters racing
        both end up with the one key that won the link.
        """
        path = Path(path)
        if path.exists():
            return cls.load(path)
        key = secrets.token_bytes(KEY_SIZE)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # a umask cannot widen it, but be explicit
                view = memoryview(key)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # someone else created it first: theirs is the key
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return cls.load(path)

    def wrap(self, nonce: bytes, data_key: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(nonce, wrapped, aad)
        except InvalidTag:
            raise EncryptionError("blob header failed authentication (damaged header)") from None


def cpu_has_aes(cpuinfo: str | None = None) -> bool:
    """Does this CPU have AES instructions (x86 AES-NI, the ARMv8 AES extension)?
    There AES-256-GCM is several times faster than ChaCha20-Poly1305; without
    them it is slower and ChaCha20 is the better choice."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features") and "aes" in value.split():
            return True
    return False


def default_algorithm(cipher: str = "auto") -> int:
    """The segment algorithm for new blobs: a name from CIPHERS, or "auto"."""
    if cipher == "auto":
        return ALG_AES_256_GCM if cpu_has_aes() else ALG_CHACHA20_POLY1305
    return CIPHERS[cipher]


# ---------------------------------------------------------------- sizes


def _check_segment_size(segment_size: int) -> None:
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise EncryptionError(
            f"segment size {segment_size} outside {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}"
        )


def segment_count(plaintext_size: int, segment_size: int) -> int:
    """Segments in a blob: at least one, so even an empty blob has a final segment."""
    return max(1, -(-plaintext_size // segment_size))


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Total blob size (header included) for a plaintext of this size."""
    if plaintext_size < 0:
        raise ValueError("negative plaintext size")
    return HEADER_SIZE + plaintext_size + TAG_SIZE * segment_count(plaintext_size, segment_size)


def plaintext_size(ciphertext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Exact inverse of `ciphertext_size`; EncryptionError for a size no blob can have."""
    body = ciphertext_size - HEADER_SIZE
    if body < TAG_SIZE:
        raise EncryptionError(f"encrypted blob of {ciphertext_size} bytes is truncated")
    full, rest = divmod(body, segment_size + TAG_SIZE)
    if rest == 0:
        return full * segment_size
    # A tail shorter than a tag is a cut segment; an empty tail after full
    # segments is never written (the last full segment is the final one).
    if rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        raise EncryptionError(f"encrypted blob of {ciphertext_size} bytes is truncated or extended")
    return full * segment_size + rest - TAG_SIZE


# ---------------------------------------------------------------- header


@dataclass(frozen=True)
class _Header:
    segment_size: int
    aead: ChaCha20Poly1305 | AESGCM  # the header's algorithm, keyed with this blob's data key
    digest: bytes  # SHA-256 of the whole header: every segment's associated data


def _new_header(master: MasterKey, segment_size: int, algorithm: int) -> tuple[bytes, _Header]:
    data_key = secrets.token_bytes(KEY_SIZE)
    nonce = secrets.token_bytes(NONCE_SIZE)
    prefix = _HEADER_PREFIX.pack(MAGIC, FORMAT_VERSION, algorithm, 0, segment_size, master.key_id, nonce)
    header = prefix + master.wrap(nonce, data_key, prefix)
    return header, _Header(segment_size, _SEGMENT_AEADS[algorithm](data_key), hashlib.sha256(header).digest())


def _parse_header(master: MasterKey, header: bytes) -> _Header:
    if len(header) != HEADER_SIZE:
        raise EncryptionError("encrypted blob is shorter than its header")
    magic, version, alg, reserved, segment_size, key_id, nonce = _HEADER_PREFIX.unpack_from(header)
    if magic != MAGIC:
        raise EncryptionError("not an encrypted blob (bad magic)")
    if version != FORMAT_VERSION or alg not in _SEGMENT_AEADS or reserved != 0:
        raise EncryptionError(f"unsupported blob format (version {version}, algorithm {alg})")
    _check_segment_size(segment_size)
    if key_id != master.key_id:
        raise MasterKeyError(
            f"blob was encrypted with master key {key_id.hex()}, this node has {master.key_id.hex()}"
        )
    prefix = header[: _HEADER_PREFIX.size]
    data_key = master.unwrap(nonce, header[_HEADER_PREFIX.size :], prefix)
    return _Header(segment_size, _SEGMENT_AEADS[alg](data_key), hashlib.sha256(header).digest())


# ---------------------------------------------------------------- segments


def _nonce(index: int) -> bytes:
    return _SEGMENT_NONCE_PREFIX + index.to_bytes(8, "big")


def _aad(h: _Header, final: bool) -> bytes:
    return h.digest + (b"\x01" if final else b"\x00")


def _seal(h: _Header, plain: memoryview, first_index: int, last_is_final: bool) -> bytes:
    """Seal consecutive segments; the last one is final if `last_is_final`.

    `plain` is cut every segment_size bytes; only the last piece may be short
    (or empty, for an empty blob).
    """
    size = h.segment_size
    count = max(1, -(-len(plain) // size))
    return b"".join(
        h.aead.encrypt(
            _nonce(first_index + k),
            plain[k * size : (k + 1) * size],
            _aad(h, last_is_final and k == count - 1),
        )
        for k in range(count)
    )


def _open(h: _Header, sealed: memoryview, first_index: int, final_index: int) -> bytes:
    """Open consecutive sealed segments starting at `first_index`."""
    step = h.segment_size + TAG_SIZE
    count = max(1, -(-len(sealed) // step))
    pieces = []
    for k in range(count):
        index = first_index + k
        try:
            pieces.append(
                h.aead.decrypt(_nonce(index), sealed[k * step : (k + 1) * step], _aad(h, index == final_index))
            )
        except InvalidTag:
            raise EncryptionError(f"segment {index} failed authentication (tampered or truncated)") from None
    return b"".join(pieces)


async def _crypt(
    fn: Callable[..., bytes],
    h: _Header,
    data: memoryview,
    index: int,
    flag: int | bool,
) -> bytes:
    """Run `fn` inline for a segment or so, else in a worker thread."""
    if len(data) <= INLINE_BYTES + TAG_SIZE:
        return fn(h, data, index, flag)
    return await asyncio.to_thread(fn, h, data, index, flag)


# ---------------------------------------------------------------- streams


async def encrypt_stream(
    master: MasterKey,
    chunks: AsyncIterable[bytes],
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    algorithm: int = ALG_CHACHA20_POLY1305,
) -> AsyncIterator[bytes]:
    """Encrypt a plaintext stream of unknown length into a blob, piece by piece.

    Yields the header first, then sealed segments in pieces of about
    BATCH_BYTES. A full segment is held back until a byte after it arrives,
    because only then is it known not to be the final one. One batch is sealed
    in a worker thread while the caller consumes the previous one.
    """
    _check_segment_size(segment_size)
    if algorithm not in _SEGMENT_AEADS:
        raise EncryptionError(f"unknown encryption algorithm {algorithm}")
    header_bytes, h = _new_header(master, segment_size, algorithm)
    yield header_bytes
    pending: list[bytes] = []
    pending_len = 0
    index = 0
    inflight: asyncio.Future[bytes] | None = None
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            pending.append(chunk)
            pending_len += len(chunk)
            if pending_len <= BATCH_BYTES:
                continue
            joined = b"".join(pending)
            # Every whole segment but keep at least one byte back: the segment
            # holding it may be the final one.
            cut = (len(joined) - 1) // segment_size * segment_size
            task = asyncio.ensure_future(_crypt(_seal, h, memoryview(joined)[:cut], index, False))
            index += cut // segment_size
            pending, pending_len = [joined[cut:]], len(joined) - cut
            # Own the new task before yielding: a caller that stops here must
            # not leave it running unowned.
            previous, inflight = inflight, task
            if previous is not None:
                yield await previous
        # The tail: its last segment (possibly empty, for an empty blob) is final.
        task = asyncio.ensure_future(_crypt(_seal, h, memoryview(b"".join(pending)), index, True))
        previous, inflight = inflight, task
        if previous is not None:
            yield await previous
        yield await inflight
    finally:
        drop(inflight)


async def decrypt_range(
    master: MasterKey,
    read_at: Callable[[int, int], Awaitable[bytes]],
    ciphertext_size: int,
    start: int = 0,
    length: int | None = None,
    *,
    expected_size: int | None = None,
) -> AsyncIterator[bytes]:
    """Yield plaintext bytes [start, start+length) of a blob, reading only the
    segments that range touches.

    `read_at(offset, n)` must return exactly n ciphertext bytes at offset (fewer
    means truncated); calls never overlap. `length=None` reads to the end. The
    header is always read and authenticated, so a damaged header fails every
    read. A read that reaches the end of the plaintext always authenticates the
    final segment, so a blob truncated or extended anywhere fails such reads;
    pass `expected_size` (the size recorded in the catalog) to make every read
    detect that. The next batch is read and opened while the caller consumes
    the current one.
    """
    reader = await EncryptedReader.open(master, read_at, ciphertext_size, expected_size=expected_size)
    async for piece in reader.range(start, length):
        yield piece


class EncryptedReader:
    """One encrypted blob, its header read and authenticated once, for any
    number of range reads (the compression layer above reads a footer, a seek
    table, then frames)."""

    def __init__(self, h: _Header, read_at: Callable[[int, int], Awaitable[bytes]], total: int) -> None:
        self._h = h
        self._read_at = read_at
        self.size = total  # plaintext bytes
        self._reading = asyncio.Lock()  # read-ahead must not overlap the caller's reads

    @classmethod
    async def open(
        cls, master: MasterKey, read_at: Callable[[int, int], Awaitable[bytes]], ciphertext_size: int,
        *, expected_size: int | None = None,
    ) -> EncryptedReader:
        if ciphertext_size < HEADER_SIZE + TAG_SIZE:
            raise EncryptionError(f"encrypted blob of {ciphertext_size} bytes is truncated")
        h = _parse_header(master, await _read_exact(read_at, 0, HEADER_SIZE))
        total = plaintext_size(ciphertext_size, h.segment_size)
        if expected_size is not None and total != expected_size:
            raise EncryptionError(f"encrypted blob holds {total} bytes, expected {expected_size}")
        return cls(h, read_at, total)

    async def read(self, start: int, length: int) -> bytes:
        return b"".join([piece async for piece in self.range(start, length)])

    async def range(self, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        h, total = self._h, self.size
        size = h.segment_size
        if length is None:
            length = total - start
        if start < 0 or length < 0 or start + length > total:
            raise ValueError(f"range {start}+{length} outside a blob of {total} bytes")
        final_index = segment_count(total, size) - 1
        end = start + length
        if length == 0 and end != total:
            return
        # A read that reaches the end (even an empty one) covers the final segment.
        first = min(start // size, final_index)
        last = final_index if end == total else (end - 1) // size
        per_batch = max(1, BATCH_BYTES // size)
        step = size + TAG_SIZE

        async def batch(index: int, upto: int) -> bytes:
            offset = HEADER_SIZE + index * step
            stop = HEADER_SIZE + upto * step + TAG_SIZE + min(size, total - upto * size)
            async with self._reading:
                sealed = await _read_exact(self._read_at, offset, stop - offset)
            return await _crypt(_open, h, memoryview(sealed), index, final_index)

        async for piece in read_ahead(batch, first, last, per_batch, size, start, end):
            yield piece


def decrypt_bytes(
    master: MasterKey, blob: bytes, start: int, length: int, *, expected_size: int | None = None
) -> bytes:
    """Plaintext bytes [start, start+length) of a whole blob held in memory, in
    one synchronous call with the same checks as `decrypt_range` (header,
    expected size, every touched segment, the final one when the range reaches
    the end). For small blobs, read and opened in one worker-thread hop."""
    if len(blob) < HEADER_SIZE + TAG_SIZE:
        raise EncryptionError(f"encrypted blob of {len(blob)} bytes is truncated")
    h = _parse_header(master, blob[:HEADER_SIZE])
    size, step = h.segment_size, h.segment_size + TAG_SIZE
    total = plaintext_size(len(blob), size)
    if expected_size is not None and total != expected_size:
        raise EncryptionError(f"encrypted blob holds {total} bytes, expected {expected_size}")
    if start < 0 or length < 0 or start + length > total:
        raise ValueError(f"range {start}+{length} outside a blob of {total} bytes")
    final_index = segment_count(total, size) - 1
    end = start + length
    if length == 0 and end != total:
        return b""
    first = min(start // size, final_index)
    last = final_index if end == total else (end - 1) // size
    sealed = memoryview(blob)[HEADER_SIZE + first * step:HEADER_SIZE + last * step + step]
    plain = _open(h, sealed, first, final_index)
    lo = start - first * size
    return plain if lo == 0 and length == len(plain) else plain[lo:lo + length]


async def _read_exact(read_at: Callable[[int, int], Awaitable[bytes]], offset: int, n: int) -> bytes:
    data = await read_at(offset, n)
    if len(data) != n:
        raise EncryptionError(f"encrypted blob is truncated: wanted {n} bytes at {offset}, got {len(data)}")
    return data
