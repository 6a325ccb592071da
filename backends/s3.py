"""Blobs as objects in a bucket of a remote S3-compatible service (Ceph RGW,
MinIO, AWS, another meshd), addressed by SHA-256.

Layout under the configured key prefix::

    <prefix>staging/<random>          staged writes; removed by cleanup_staging
    <prefix>blobs/ab/cd/abcd...       committed blobs, named by content id

The two-step contract of backends/base.py maps onto S3 as:

- write: the body streams to `<prefix>staging/<random>`. S3 needs a length
  for every PUT, so one part (`part_size`, 8 MiB by default) is buffered in
  memory: a body that ends within the first part is sent with one PUT, a
  longer one becomes a multipart upload of `part_size` parts, sent one after
  the other. Memory per write is bounded by the part size, whatever the
  blob's size: the part buffer (up to part_size plus one source chunk) and,
  while a part is in flight, its copy — about 2 x part_size at the peak. A
  write that fails aborts its multipart upload, so nothing staged is left
  (best effort: a dead remote leaves an upload for cleanup_staging).
- commit: a server-side copy (CopyObject, or UploadPartCopy for blobs larger
  than `copy_limit`, 5 GiB on AWS) to the content-addressed key, then the
  staging object is deleted. A blob already there is kept (dedup).
- reads are ranged GETs streamed in `read_chunk` pieces; a connection lost
  mid-stream resumes from the last byte delivered.

Every request is signed with SigV4 (header form; UNSIGNED-PAYLOAD, so bodies
are never hashed twice — the object service hashes the stream itself).
Connection errors, 5xx and SlowDown are retried with jittered exponential
backoff, a bounded number of times; other 4xx fail at once. Errors become
BackendFull (507, EntityTooLarge, InsufficientStorage), BlobMissing (a blob
that is not there) or BackendError (everything else).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit
from xml.parsers.expat import ExpatError

import aiohttp
import xmltodict
from yarl import URL

from backends.base import (
    BackendError,
    BackendFull,
    BlobMissing,
    BlobRef,
    BlobTruncated,
    FileRegion,
    StagedBlob,
)
from wire.sigv4 import (
    ALGORITHM,
    UNSIGNED_PAYLOAD,
    sign,
    signing_key,
    string_to_sign,
    uri_encode,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
PART_SIZE = 8 * MiB
COPY_LIMIT = 5 * GiB  # the largest object CopyObject may copy on AWS
COPY_PART_SIZE = 512 * MiB
READ_CHUNK = 1024 * 1024

_FULL_CODES = frozenset({"EntityTooLarge", "InsufficientStorage", "QuotaExceeded", "XMinioStorageFull"})
_RETRY_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    base_delay: float = 0.2  # seconds before the first retry; doubles each time
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): spreads the retries of many writers."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** attempt))


class _Retryable(Exception):
    """A failure worth another try; carries the error to raise when tries run out."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class S3Backend:
    def __init__(
        self,
        name: str,
        *,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        prefix: str = "",
        addressing_style: str = "path",
        part_size: int = PART_SIZE,
        copy_limit: int = COPY_LIMIT,
        copy_part_size: int = COPY_PART_SIZE,
        read_chunk: int = READ_CHUNK,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 60.0,
    ) -> None:
        if addressing_style not in ("path", "virtual"):
            raise ValueError(f"addressing_style must be 'path' or 'virtual', not {addressing_style!r}")
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"endpoint must be an http(s) URL, not {endpoint!r}")
        self.name = name
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.addressing_style = addressing_style
        self.part_size = part_size
        self.copy_limit = copy_limit
        self.copy_part_size = copy_part_size
        self.read_chunk = read_chunk
        self.retry = retry
        self._scheme = url.scheme
        self._netloc = url.netloc
        self._base_path = url.path.rstrip("/")
        self._access_key = access_key
        self._secret_key = secret_key
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    # --- keys --------------------------------------------------------------------------

    def blob_key(self, content_id: str) -> str:
        return f"{self.prefix}blobs/{content_id[:2]}/{content_id[2:4]}/{content_id}"

    @property
    def staging_prefix(self) -> str:
        return f"{self.prefix}staging/"

    # --- the Backend protocol ------------------------------------------------------------

    async def write(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        key = f"{self.staging_prefix}{secrets.token_hex(16)}"
        source = aiter(chunks)
        buffer = bytearray()
        # Fill the first part; a body that ends within it goes as one PUT.
        async for chunk in source:
            buffer += chunk
            if len(buffer) > self.part_size:
                break
        else:
            await self._request("PUT", key, body=bytes(buffer), ok=(200,))
            return StagedBlob(self.name, key, len(buffer))
        return await self._write_multipart(key, source, buffer)

    async def _write_multipart(self, key: str, source: AsyncIterator[bytes], buffer: bytearray) -> StagedBlob:
        upload_id = await self._create_upload(key)
        parts: list[tuple[int, str]] = []
        size = 0
        exhausted = False
        try:
            while buffer or not exhausted:
                while not exhausted and len(buffer) < self.part_size:
                    chunk = await anext(source, None)
                    if chunk is None:
                        exhausted = True
                    else:
                        buffer += chunk
                # Parts are exactly part_size bytes but the last; the rest waits for the next one.
                body = bytes(memoryview(buffer)[:self.part_size])  # one copy, not two
                del buffer[:self.part_size]
                if body:
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, body))
                    size += len(body)
            await self._complete_upload(key, upload_id, parts)
        except BaseException:
            await asyncio.shield(self._abort_quietly(key, upload_id))
            raise
        return StagedBlob(self.name, key, size)

    async def commit(self, staged: StagedBlob, content_id: str) -> BlobRef:
        final = self.blob_key(content_id)
        if staged.size > self.copy_limit:
            await self._copy_multipart(staged.token, final, staged.size)
        else:
            resp = await self._request("PUT", final, headers={"x-amz-copy-source": self._copy_source(staged.token)},
                                       ok=(200,), missing=(404,))
            if resp is None:
                raise BackendError(f"staged blob {staged.token} is gone")
            _check_copy_result(resp)
        await self._request("DELETE", staged.token, ok=(200, 204, 404))
        return BlobRef(self.name, content_id, staged.size)

    async def discard(self, staged: StagedBlob) -> None:
        await self._request("DELETE", staged.token, ok=(200, 204, 404))

    async def open(self, ref: BlobRef, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        key = self.blob_key(ref.content_id)
        remaining = ref.size - start if length is None else length
        if remaining <= 0:
            if await self._head(key) is None:
                raise BlobMissing(f"blob {ref.content_id} missing on {self.name}")
            return
        position = start
        failures = 0
        while remaining > 0:
            headers = {"Range": f"bytes={position}-{position + remaining - 1}"}
            resp = await self._send("GET", key, headers=headers)
            try:
                if resp.status == 404:
                    raise BlobMissing(f"blob {ref.content_id} missing on {self.name}")
                if resp.status == 416:
                    raise BlobTruncated(f"blob {ref.content_id} is shorter than recorded")
                if resp.status not in (200, 206):
                    err = _error_from(resp.status, await resp.read(), f"GET {key}")
                    if isinstance(err, _Retryable) and failures + 1 < self.retry.attempts:
                        failures += 1
                        await asyncio.sleep(self.retry.delay(failures))
                        continue
                    raise err.error if isinstance(err, _Retryable) else err
                if resp.status == 200 and position:
                    raise BackendError(f"{self.name}: the remote ignored a Range request")
                try:
                    async for chunk in resp.content.iter_chunked(self.read_chunk):
                        chunk = chunk[:remaining]
                        position += len(chunk)
                        remaining -= len(chunk)
                        yield chunk
                        if remaining <= 0:
                            break
                except (TimeoutError, aiohttp.ClientError) as e:
                    # Lost mid-stream: resume from the next byte not yet delivered.
                    failures += 1
                    if failures >= self.retry.attempts:
                        raise BackendError(f"{self.name}: reading {key} failed: {e!r}") from e
                    await asyncio.sleep(self.retry.delay(failures))
                    continue
                if remaining > 0:
                    raise BlobTruncated(f"blob {ref.content_id} is shorter than recorded")
            finally:
                resp.release()

    async def read_at(self, ref: BlobRef, offset: int, length: int) -> bytes:
        parts = [chunk async for chunk in self.open(ref, offset, length)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def file_region(self, ref: BlobRef, start: int, length: int) -> FileRegion | None:
        return None  # the bytes are not in a local file

    async def stat(self, ref: BlobRef) -> int | None:
        head = await self._head(self.blob_key(ref.content_id))
        return None if head is None else int(head.headers.get("Content-Length", 0))

    async def delete(self, ref: BlobRef) -> None:
        await self._request("DELETE", self.blob_key(ref.content_id), ok=(200, 204, 404))

    async def cleanup_staging(self) -> int:
        """Delete every staged object and abort every multipart upload under the staging prefix."""
        removed = 0
        async for keys in self._list(self.staging_prefix):
            for key in keys:
                await self._request("DELETE", key, ok=(200, 204, 404))
                removed += 1
        for key, upload_id in await self._list_uploads(self.staging_prefix):
            await self._request("DELETE", key, query={"uploadId": upload_id}, ok=(200, 204, 404))
            removed += 1
        return removed

    async def blob_ids(self) -> AsyncIterator[list[str]]:
        async for keys in self._list(f"{self.prefix}blobs/"):
            yield [k.rsplit("/", 1)[-1] for k in keys]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- S3 operations ---------------------------------------------------------------------

    async def _head(self, key: str) -> _Response | None:
        return await self._request("HEAD", key, ok=(200,), missing=(404,))

    async def _create_upload(self, key: str) -> str:
        resp = await self._request("POST", key, query={"uploads": ""}, ok=(200,))
        return _xml(resp.body)["InitiateMultipartUploadResult"]["UploadId"]

    async def _upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> tuple[int, str]:
        resp = await self._request("PUT", key, query={"partNumber": str(number), "uploadId": upload_id},
                                   body=body, ok=(200,))
        return number, resp.headers.get("ETag", "")

    async def _complete_upload(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        body = xmltodict.unparse({"CompleteMultipartUpload": {"Part": [
            {"PartNumber": n, "ETag": etag} for n, etag in parts]}}).encode()
        resp = await self._request("POST", key, query={"uploadId": upload_id}, body=body, ok=(200,))
        _check_copy_result(resp)  # errors may come inside a 200

    async def _abort_quietly(self, key: str, upload_id: str) -> None:
        try:
            await self._request("DELETE", key, query={"uploadId": upload_id}, ok=(200, 204, 404))
        except BackendError:
            pass  # the error that made us abort is the one to raise; cleanup_staging retries

    async def _copy_multipart(self, source: str, target: str, size: int) -> None:
        """UploadPartCopy in `copy_part_size` ranges, for blobs too large for CopyObject."""
        upload_id = await self._create_upload(target)
        parts: list[tuple[int, str]] = []
        try:
            for number, first in enumerate(range(0, size, self.copy_part_size), start=1):
                last = min(first + self.copy_part_size, size) - 1
                resp = await self._request(
                    "PUT", target, query={"partNumber": str(number), "uploadId": upload_id},
                    headers={"x-amz-copy-source": self._copy_source(source),
                             "x-amz-copy-source-range": f"bytes={first}-{last}"},
                    ok=(200,), missing=(404,))
                if resp is None:
                    raise BackendError(f"staged blob {source} is gone")
                result = _xml(resp.body).get("CopyPartResult") or {}
                parts.append((number, result.get("ETag", "")))
            await self._complete_upload(target, upload_id, parts)
        except BaseException:
            await asyncio.shield(self._abort_quietly(target, upload_id))
            raise

    async def _list(self, prefix: str) -> AsyncIterator[list[str]]:
        """Keys under `prefix`, a page (up to 1000) at a time (ListObjectsV2)."""
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            resp = await self._request("GET", None, query=query, ok=(200,))
            result = _xml(resp.body).get("ListBucketResult") or {}
            keys = [c["Key"] for c in _as_list(result.get("Contents"))]
            if keys:
                yield keys
            token = result.get("NextContinuationToken")
            if str(result.get("IsTruncated", "false")).lower() != "true" or not token:
                return

    async def _list_uploads(self, prefix: str) -> list[tuple[str, str]]:
        uploads: list[tuple[str, str]] = []
        markers: dict[str, str] = {}
        while True:
            resp = await self._request("GET", None, query={"uploads": "", "prefix": prefix, **markers}, ok=(200,))
            result = _xml(resp.body).get("ListMultipartUploadsResult") or {}
            uploads += [(u["Key"], u["UploadId"]) for u in _as_list(result.get("Upload"))]
            if str(result.get("IsTruncated", "false")).lower() != "true":
                return uploads
            markers = {"key-marker": result.get("NextKeyMarker") or "",
                       "upload-id-marker": result.get("NextUploadIdMarker") or ""}

    def _copy_source(self, key: str) -> str:
        return uri_encode(f"/{self.bucket}/{key}", keep_slash=True)

    # --- HTTP: addressing, signing, retries ---------------------------------------------------

    def _url(self, key: str | None) -> tuple[str, str, str]:
        """(host, path, url-without-query) for a key (None: the bucket itself)."""
        suffix = "/" + uri_encode(key, keep_slash=True) if key is not None else "/"
        if self.addressing_style == "virtual":
            host = f"{self.bucket}.{self._netloc}"
            path = self._base_path + suffix
        else:
            host = self._netloc
            path = f"{self._base_path}/{uri_encode(self.bucket, keep_slash=False)}" + (suffix if key is not None else "")
        return host, path, f"{self._scheme}://{host}{path}"

    def signed_headers(self, method: str, host: str, path: str, query: Mapping[str, str],
                       headers: Mapping[str, str], now: datetime | None = None) -> dict[str, str]:
        """The request's headers plus SigV4 `Authorization` (header form, unsigned payload)."""
        now = now or datetime.now(UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        out = {**headers, "host": host, "x-amz-date": amz_date, "x-amz-content-sha256": UNSIGNED_PAYLOAD}
        signed = sorted(k.lower() for k in out)
        lower = {k.lower(): " ".join(str(v).strip().split()) for k, v in out.items()}
        canonical = "\n".join((
            method,
            path,
            _canonical_query(query),
            "".join(f"{k}:{lower[k]}\n" for k in signed),
            ";".join(signed),
            UNSIGNED_PAYLOAD,
        ))
        scope = f"{date}/{self.region}/s3/aws4_request"
        signature = sign(signing_key(self._secret_key, date, self.region),
                         string_to_sign(amz_date, scope, canonical))
        out["Authorization"] = (f"{ALGORITHM} Credential={self._access_key}/{scope}, "
                                f"SignedHeaders={';'.join(signed)}, Signature={signature}")
        del out["host"]  # aiohttp sends the same Host from the URL
        return out

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # auto_decompress off: blobs are bytes, never re-encoded on the way.
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        return self._session

    async def _send(self, method: str, key: str | None, *, query: Mapping[str, str] | None = None,
                    headers: Mapping[str, str] | None = None, body: bytes | None = None) -> aiohttp.ClientResponse:
        """One request with retries of connection errors (the response is not read)."""
        query = dict(query or {})
        host, path, url = self._url(key)
        for attempt in range(self.retry.attempts):
            extra = dict(headers or {})
            if body is not None or method in ("PUT", "POST"):
                extra["Content-Length"] = str(len(body or b""))
            signed = self.signed_headers(method, host, path, query, extra)
            full_url = url + ("?" + _canonical_query(query) if query else "")
            try:
                return await self._client().request(
                    method, yarl_url(full_url), headers=signed, data=body, allow_redirects=False)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                if attempt + 1 >= self.retry.attempts:
                    raise BackendError(f"{self.name}: {method} {key}: {e!r}") from e
                await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    async def _request(self, method: str, key: str | None, *, query: Mapping[str, str] | None = None,
                       headers: Mapping[str, str] | None = None, body: bytes | None = None,
                       ok: tuple[int, ...], missing: tuple[int, ...] = ()) -> _Response | None:
        """A whole request/response with retries; None for a `missing` status."""
        what = f"{method} {key or '/'}"
        for attempt in range(self.retry.attempts):
            resp = await self._send(method, key, query=query, headers=headers, body=body)
            try:
                data = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as e:
                err: BackendError | _Retryable = _Retryable(BackendError(f"{self.name}: {what}: {e!r}"))
            else:
                if resp.status in ok:
                    return _Response(resp.status, resp.headers, data)
                if resp.status in missing:
                    return None
                err = _error_from(resp.status, data, f"{self.name}: {what}")
            finally:
                resp.release()
            if not isinstance(err, _Retryable):
                raise err
            if attempt + 1 >= self.retry.attempts:
                raise err.error
            await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")


def yarl_url(url: str) -> URL:
    """The URL exactly as signed: aiohttp must not re-quote it."""
    return URL(url, encoded=True)


def _canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{uri_encode(k, keep_slash=False)}={uri_encode(v, keep_slash=False)}"
                    for k, v in sorted(query.items()))


def _xml(body: bytes) -> dict:
    try:
        return xmltodict.parse(body) or {}
    except ExpatError as e:  # malformed XML from the remote
        raise BackendError(f"unreadable XML from the remote: {body[:200]!r}") from e


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _error_code(body: bytes) -> tuple[str, str]:
    try:
        err = (xmltodict.parse(body) or {}).get("Error") or {}
        return str(err.get("Code") or ""), str(err.get("Message") or "")
    except (ExpatError, AttributeError):  # not an S3 error document
        return "", ""


def _error_from(status: int, body: bytes, what: str) -> BackendError | _Retryable:
    code, message = _error_code(body)
    text = f"{what}: HTTP {status} {code} {message}".rstrip()
    if status == 507 or code in _FULL_CODES:
        return BackendFull(text)
    if status >= 500 or code in _RETRY_CODES:
        return _Retryable(BackendError(text))
    return BackendError(text)


def _check_copy_result(resp: _Response) -> None:
    """CopyObject and CompleteMultipartUpload may answer 200 with an <Error> body."""
    if resp.body and b"<Error>" in resp.body[:512]:
        code, message = _error_code(resp.body)
        err = _error_from(500, resp.body, f"copy/complete: {code} {message}")
        raise err.error if isinstance(err, _Retryable) else err
