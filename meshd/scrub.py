"""Scrubbing: re-read every blob this node stores and check it is still what was written.

A pass walks the catalog's blob records a page at a time and reads each blob
back the way a GET would (through its backend's codec, so AEAD tags and zstd
seek tables are verified), hashing the plain bytes with SHA-256 and comparing
the digest to the content id. The verdicts:

- intact: nothing to do;
- corrupt (digest mismatch, failed authentication, malformed compressed data,
  truncated or missing blob): `BlobStore.record_corruption` marks the copy
  damaged, so every version using it is served from another copy or answers
  an error instead of bad bytes, until a PUT of the same content repairs it
  (`BlobStore.commit`);
- unreachable (the backend failed for a reason that says nothing about the
  bytes: network, permissions, a backend not configured here): counted and
  tried again next pass, never marked damaged.

A suspected corruption is checked again under the blob's lock, the lock every
commit and every blob deletion holds, so a version deleted (and its blob
removed) or a blob repaired while the pass was reading it is not reported.

Blobs already marked damaged are skipped (counted): a damaged blob stays so
until repaired. Ingested files (role "ingested") are skipped too: ingestion
checks their size, mtime and hash itself.

Pacing: after each chunk the pass sleeps until bytes read / elapsed time is at
most `bytes_per_second`. The background loop runs a paced pass every
`interval_seconds`, the first one interval after start-up; `meshd scrub` (POST
/scrub on the admin socket) runs one now, unpaced unless asked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web

from backends.base import BackendError, BlobMissing, BlobTruncated
from backends.encoded import is_corruption
from backends.pacing import Pacer
from meshd.blobs import BlobStore, blob_ref
from meshd.catalog.records import INGESTED, INLINE_BACKEND, BlobInfo
from meshd.digests import INLINE_LIMIT

log = logging.getLogger("meshd.scrub")

PAGE = 256  # blob records read from the catalog at a time
VERSIONS_LISTED = 20  # versions named per corrupt blob in a report
UNREACHABLE_LISTED = 100  # unreachable blobs named in a report

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Corrupt(Exception):
    """The stored bytes of a blob are not the bytes it was written with."""


class Unreachable(Exception):
    """The blob could not be read now, for a reason that says nothing about its bytes."""


@dataclass
class CorruptBlob:
    content_id: str
    backend: str
    reason: str
    versions: list[dict[str, str]] = field(default_factory=list)


@dataclass
class ScrubReport:
    started: float
    finished: float | None = None
    paced: bool = False
    checked: int = 0  # blobs read through and found intact or corrupt
    bytes: int = 0  # plain bytes read
    corrupt: list[CorruptBlob] = field(default_factory=list)
    unreachable: int = 0
    unreachable_blobs: list[dict[str, str]] = field(default_factory=list)
    already_damaged: int = 0  # skipped: marked damaged before this pass
    skipped_ingested: int = 0
    vanished: int = 0  # deleted or repaired while the pass was reading them
    error: str | None = None  # the pass stopped early

    @property
    def damaged_total(self) -> int:
        """Damaged blobs known at the end of the pass."""
        return self.already_damaged + len(self.corrupt)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["damaged_total"] = self.damaged_total
        d["seconds"] = (self.finished or time.time()) - self.started
        return d


class Scrubber:
    def __init__(
        self,
        blobs: BlobStore,
        *,
        interval_seconds: float = 0.0,
        bytes_per_second: int = 0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.blobs = blobs
        self.catalog = blobs.catalog
        self.interval_seconds = interval_seconds
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._current: asyncio.Task[ScrubReport] | None = None
        self._running: ScrubReport | None = None  # the pass in progress, updated as it goes
        self.last: ScrubReport | None = None
        self._loop_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------

    async def start(self) -> None:
        if self.interval_seconds > 0:
            self._loop_task = asyncio.create_task(self._loop(), name="scrub")

    async def aclose(self) -> None:
        for task in (self._loop_task, self._current):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._loop_task, self._current) if t is not None),
                             return_exceptions=True)
        self._loop_task = self._current = None

    async def _loop(self) -> None:
        while True:
            # The first pass one interval after start-up: a restart does not re-read everything.
            await self._sleep(self.interval_seconds)
            try:
                report = await self.scrub(paced=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scrub pass failed")
                continue
            if report.corrupt:
                log.warning("scrub: %d corrupt blobs found", len(report.corrupt))

    # -- passes ---------------------------------------------------------

    async def scrub(self, *, paced: bool = False) -> ScrubReport:
        """Run a pass now and return its report; if one is running, wait for it instead."""
        if self._current is None or self._current.done():
            self._current = asyncio.create_task(self._pass(paced), name="scrub-pass")
        # Shielded: a caller that goes away (an admin client disconnecting) does not stop the pass.
        return await asyncio.shield(self._current)

    async def _pass(self, paced: bool) -> ScrubReport:
        report = self._running = ScrubReport(started=time.time(), paced=paced)
        pacer = Pacer(self.bytes_per_second if paced else 0, clock=self._clock, sleep=self._sleep)
        try:
            after: tuple[str, str] | None = None
            while True:
                page = await self.catalog.read(lambda c, after=after: c.blobs_after(after, PAGE))
                if not page:
                    break
                for info in page:
                    await self._check(info, report, pacer)
                after = (page[-1].backend, page[-1].content_id)
        except Exception as e:
            # Reported, not raised: the caller (the admin route, the loop) shows what was found so far.
            log.exception("scrub pass stopped early")
            report.error = f"{type(e).__name__}: {e}"
        finally:
            report.finished = time.time()
            self._running = None
            self.last = report
            await self._record_pass(report)
        return report

    async def _record_pass(self, report: ScrubReport) -> None:
        detail = {k: v for k, v in report.as_dict().items() if k not in ("corrupt", "unreachable_blobs")}
        detail["corrupt_blobs"] = [c.content_id for c in report.corrupt]
        try:
            await self.catalog.write(lambda c: c.add_event("scrub.pass", detail=detail))
        except Exception:  # the catalog closing under a cancelled pass
            log.warning("could not record the scrub pass event", exc_info=True)

    async def _check(self, info: BlobInfo, report: ScrubReport, pacer: Pacer) -> None:
        if info.role == INGESTED:
            report.skipped_ingested += 1
            return
        if info.damaged:
            report.already_damaged += 1
            return
        try:
            await self._verify(info, report, pacer)
        except Unreachable as e:
            report.unreachable += 1
            if len(report.unreachable_blobs) < UNREACHABLE_LISTED:
                report.unreachable_blobs.append(
                    {"content_id": info.content_id, "backend": info.backend, "reason": str(e)})
            return
        except Corrupt as first:
            await self._confirm(info, str(first), report)
            return
        report.checked += 1

    async def _confirm(self, info: BlobInfo, reason: str, report: ScrubReport) -> None:
        """Check a suspect again under its blob lock (which commits and deletions
        hold): only what is still recorded, still undamaged and still bad counts."""
        # The content's lock: held from a blob's commit to its catalog record,
        # and from a blob's last release to its deletion.
        async with self.blobs.lock(info.content_id):
            fresh = await self.catalog.run(lambda c: c.get_blob(info.content_id, info.backend))
            if fresh is None:
                report.vanished += 1
                return
            if not fresh.damaged:
                try:
                    await self._verify(fresh, None, Pacer(0))
                except Corrupt as e:
                    reason = str(e)
                except Unreachable:
                    report.vanished += 1  # it was readable a moment ago: call it nothing
                    return
                else:
                    report.vanished += 1  # repaired meanwhile
                    return
                await self.blobs.record_corruption(info.content_id, info.backend, f"scrub: {reason}")
        report.checked += 1
        versions = await self.catalog.read(
            lambda c: c.versions_of_blob(info.content_id, VERSIONS_LISTED))
        report.corrupt.append(CorruptBlob(
            info.content_id, info.backend, reason,
            [{"bucket": v.bucket, "key": v.key, "version_id": v.version_id} for v in versions],
        ))
        log.warning("scrub: blob %s on %s is corrupt: %s", info.content_id, info.backend, reason)

    async def _verify(self, info: BlobInfo, report: ScrubReport | None, pacer: Pacer) -> None:
        """Read the blob through and hash it; raises Corrupt or Unreachable."""
        h = hashlib.sha256()
        size = 0
        try:
            async for chunk in self._chunks(info):
                size += len(chunk)
                if len(chunk) >= INLINE_LIMIT:
                    await asyncio.to_thread(h.update, chunk)  # hashlib lets go of the GIL
                else:
                    h.update(chunk)
                if report is not None:
                    report.bytes += len(chunk)
                await pacer.spent(len(chunk))
        except (BlobMissing, BlobTruncated) as e:
            raise Corrupt(str(e) or type(e).__name__) from e
        except BackendError as e:
            if is_corruption(e):
                raise Corrupt(str(e)) from e
            raise Unreachable(str(e)) from e
        if size != info.size:
            raise Corrupt(f"read {size} bytes, {info.size} recorded")
        if h.hexdigest() != info.content_id:
            raise Corrupt(f"SHA-256 of the stored bytes is {h.hexdigest()}")

    async def _chunks(self, info: BlobInfo) -> AsyncIterator[bytes]:
        """The copy's plain bytes, read through its codec. Raw backend errors,
        not the blob store's verdicts: this pass decides what counts as corrupt."""
        if info.size == 0 and info.backend != INLINE_BACKEND:
            return
        if info.backend == INLINE_BACKEND:
            found = await self.catalog.read(lambda c: c.get_inline(info.content_id))
            if found is None:
                raise BlobMissing(f"inline blob {info.content_id} is missing from the catalog")
            yield await self.blobs.inline_codec.decode_bytes(found.encoding, found.data, info.size, 0, info.size)
            return
        backend = self.blobs.backends.get(info.backend)
        if backend is None:
            raise BackendError(f"backend {info.backend!r} is not configured on this node")
        async for chunk in backend.open(blob_ref(info), 0, info.size):
            yield chunk

    # -- status and admin -----------------------------------------------

    def status(self) -> dict[str, Any]:
        running = self._running
        return {
            "state": "running" if running is not None else "idle",
            "interval_seconds": self.interval_seconds,
            "bytes_per_second": self.bytes_per_second,
            "current": running.as_dict() if running is not None else None,
            "last": self.last.as_dict() if self.last is not None else None,
        }

    def admin_routes(self) -> list[web.RouteDef]:
        return [web.get("/scrub", self._status_route), web.post("/scrub", self._scrub_route)]

    async def _status_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _scrub_route(self, request: web.Request) -> web.Response:
        paced = request.query.get("paced", "0").lower() in ("1", "true", "yes")
        report = await self.scrub(paced=paced)
        return web.json_response(report.as_dict())
