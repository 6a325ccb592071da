"""Existing directories served read-only, in place, as objects (`[[ingest]]`).

For each configured entry (path, bucket, prefix) the service:

- creates the bucket if it is missing;
- scans the tree in the background (at start, every `rescan_interval_seconds`,
  and on demand) and syncs the catalog in large write batches: a new file
  becomes a version (origin this node, version id from the node's clock,
  Last-Modified the file's mtime), a file whose size, mtime or inode changed
  replaces its version, a file gone from disk takes its version with it (no
  delete marker; the old version leaves a tombstone). Files below a directory that could not be read
  are kept as they were; a root that is missing or unreadable (an unmounted
  filesystem) changes nothing;
- hashes the files in the background, paced by `hash_bytes_per_second`, and
  stores each SHA-256 on the version once the file is known not to have changed
  while it was read (the file is then a copy of that content, role "ingested");
- serves reads from the file itself (sendfile), refusing one that is no longer
  the scanned file (503, and a rescan of that file is scheduled);
- answers whether a key is inside an ingested prefix, so writes there are refused.

Files are only ever opened for reading; nothing here writes below a root.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from backends.base import BackendError, FileRegion
from backends.ingest import (
    Expect,
    HashCancelled,
    IngestRootUnavailable,
    ScannedFile,
    Skipped,
    checked_real_path,
    hash_file,
    read_checked,
    scan_one,
    scan_tree,
)
from backends.pacing import Pacer
from meshd.bodies import ObjectBody
from meshd.catalog import Catalog
from meshd.catalog.records import IngestedFile
from meshd.config import ConfigError, IngestSection
from meshd.errors import (
    BucketExists,
    BucketNotFound,
    IngestedReadOnly,
    StorageUnavailable,
)
from meshd.hlc import HybridClock, VersionId, hlc_millis
from meshd.model import BucketRecord, VersionRecord
from meshd.sources import Wanted

log = logging.getLogger("meshd.ingest")

# Skipped files kept per entry for `meshd ingest status` and recorded as events.
SKIPPED_SHOWN = 1000
# Hashed digests are stored at least this often (and after every batch of files).
HASH_FLUSH_SECONDS = 1.0
DEFAULT_CONTENT_TYPE = "binary/octet-stream"


@dataclass
class ScanReport:
    """What one scan of one entry found and changed."""

    entry: int
    started: float  # wall clock, seconds
    seconds: float = 0.0
    files: int = 0
    bytes: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    skipped_total: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry, "started": self.started, "seconds": round(self.seconds, 3),
            "files": self.files, "bytes": self.bytes, "added": self.added, "changed": self.changed,
            "removed": self.removed, "skipped_total": self.skipped_total,
            "skipped": [{"path": s.rel, "reason": s.reason} for s in self.skipped], "error": self.error,
        }


def ingest_etag(size: int, mtime_ns: int, inode: int) -> str:
    """Stable for one (size, mtime, inode); the '-' tells S3 tools it is not an MD5."""
    digest = hashlib.sha256(f"{size}:{mtime_ns}:{inode}".encode()).hexdigest()[:32]
    return f'"{digest}-1"'


def content_type_of(rel: str) -> str:
    guessed, _ = mimetypes.guess_type(rel, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


class IngestEntry:
    """One `[[ingest]]` entry and its background state."""

    def __init__(self, index: int, section: IngestSection) -> None:
        assert section.path is not None
        self.index = index
        self.section = section
        self.root = Path(section.path).resolve()
        self.root_key = str(self.root)
        self.bucket = section.bucket
        self.prefix = section.prefix
        self.scan_lock = asyncio.Lock()
        self.last: ScanReport | None = None
        self.scanning_since: float | None = None
        self.reported_skips: set[tuple[str, str]] = set()
        self.pacer_stop = threading.Event()
        self.pacer = Pacer(section.hash_bytes_per_second, self.pacer_stop)
        # Since start: bytes hashed and the time spent hashing them (pauses of
        # the pacer included, idle time not), for status and the bench.
        self.hashed_bytes = 0
        self.hash_seconds = 0.0

    def key_of(self, rel: str) -> str:
        return self.prefix + rel

    def owns(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix)


class IngestService:
    def __init__(
        self, catalog: Catalog, sections: tuple[IngestSection, ...], clock: HybridClock, node_id: str,
        owner: str = "", data_dir: Path | None = None,
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.node_id = node_id
        self.owner = owner
        self.entries = [IngestEntry(i, s) for i, s in enumerate(sections)]
        _check_no_overlap(self.entries)
        if data_dir is not None:
            _check_data_dir_apart(self.entries, data_dir.resolve())
        self._tasks: list[asyncio.Task] = []
        self._hash_wanted = asyncio.Event()
        self._refresh: set[tuple[int, str]] = set()
        self._refresh_wanted = asyncio.Event()

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Create the buckets; scanning runs in the background."""
        # Also with no entries left: those removed from the config go.
        await self._forget_removed_entries()
        if not self.entries:
            return
        for entry in self.entries:
            await self._ensure_bucket(entry.bucket)
        for entry in self.entries:
            self._spawn(self._scan_loop(entry), f"ingest-scan-{entry.index}")
        self._spawn(self._hash_loop(), "ingest-hash")
        self._spawn(self._refresh_loop(), "ingest-refresh")

    def _spawn(self, coro, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def aclose(self) -> None:
        for entry in self.entries:
            entry.pacer_stop.set()  # a hashing thread stops at its next read
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _ensure_bucket(self, bucket: str) -> None:
        try:
            await self.catalog.read(lambda c: c.get_bucket(bucket))
            return
        except BucketNotFound:
            pass
        rec = BucketRecord(bucket, self.owner, hlc_millis(self.clock.now()))
        try:
            await self.catalog.write(lambda c: c.create_bucket(rec))
            log.info("ingest: created bucket %s", bucket)
        except BucketExists:
            pass

    async def _forget_removed_entries(self) -> None:
        """Versions of entries no longer configured are no longer served."""
        configured = {(e.root_key, e.bucket, e.prefix) for e in self.entries}
        for root, bucket, prefix in await self.catalog.read(lambda c: c.ingest_entries()):
            if (root, bucket, prefix) in configured:
                continue
            files = await self.catalog.read(
                lambda c, r=root, b=bucket, p=prefix: c.ingested_files(r, b, p))
            await self._remove(files)
            log.info("ingest: %s is no longer configured; %d versions removed", root, len(files))

    # -- writes are refused inside ingested prefixes ----------------------

    def check_writable(self, bucket: str, key: str) -> None:
        for entry in self.entries:
            if entry.owns(bucket, key):
                raise IngestedReadOnly(
                    # The directory is the operator's business, not the client's.
                    f"{bucket}/{entry.prefix} is ingested read-only from a directory on the "
                    "node's disk; writes and deletes there are refused"
                )

    def holds(self, v: VersionRecord) -> bool:
        """Is this an ingested version (made here, inside an ingested prefix,
        where nothing else can be written at this node)?"""
        return v.origin == self.node_id and any(e.owns(v.bucket, v.key) for e in self.entries)

    # -- reads ------------------------------------------------------------

    async def open_object(self, wanted: Wanted) -> ObjectBody | None:
        """The file of an ingested version, checked to be the one scanned; None
        for any other version."""
        v = wanted.version
        if not self.holds(v):
            return None
        start, length = wanted.start, wanted.length
        row = await self.catalog.read(lambda c: c.get_ingested(v.bucket, v.key))
        entry = self._entry_of(row) if row is not None else None
        if row is None or entry is None or row.version_id != v.version_id:
            raise StorageUnavailable(f"{v.key}: the ingested file changed; try again")
        expect = Expect(row.size, row.mtime_ns, row.inode)
        try:
            path = await asyncio.to_thread(checked_real_path, entry.root, row.rel, expect)
        except BackendError as e:
            self.schedule_refresh(entry, row.rel)
            raise StorageUnavailable(f"{v.key}: {e}; a rescan of it is scheduled") from None
        region = FileRegion(path, start, length, expect=(row.size, row.mtime_ns)) if length else None
        return wanted.body(self._read(entry, row, expect, start, length), region)

    async def _read(
        self, entry: IngestEntry, row: IngestedFile, expect: Expect, start: int, length: int
    ) -> Any:
        if length == 0:
            return
        try:
            async for chunk in read_checked(entry.root, row.rel, expect, start, length):
                yield chunk
        except BackendError as e:
            self.schedule_refresh(entry, row.rel)
            raise StorageUnavailable(f"{row.key}: {e}") from e

    def _entry_of(self, row: IngestedFile) -> IngestEntry | None:
        for entry in self.entries:
            if (entry.root_key, entry.bucket, entry.prefix) == (row.root, row.bucket, row.prefix):
                return entry
        return None

    # -- scanning -----------------------------------------------------------

    async def _scan_loop(self, entry: IngestEntry) -> None:
        interval = entry.section.rescan_interval_seconds
        while True:
            try:
                await self.rescan_entry(entry)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ingest: scan of %s failed", entry.root)
            if interval <= 0:
                return
            await asyncio.sleep(interval)

    async def rescan(self, index: int | None = None) -> list[ScanReport]:
        """Scan now (every entry, or one) and wait for it; a scan already
        running finishes first, then a fresh one sees what changed since."""
        entries = self.entries if index is None else [self.entries[index]]
        return [await self.rescan_entry(e) for e in entries]

    async def rescan_entry(self, entry: IngestEntry) -> ScanReport:
        async with entry.scan_lock:
            entry.scanning_since = time.time()
            try:
                report = await self._scan(entry)
            finally:
                entry.scanning_since = None
            entry.last = report
        await self._record_scan(entry, report)
        if report.added or report.changed:
            self._hash_wanted.set()
        return report

    async def _scan(self, entry: IngestEntry) -> ScanReport:
        report = ScanReport(entry.index, time.time())
        t0 = time.monotonic()
        await self._ensure_bucket(entry.bucket)  # deleted while its tree was empty?
        known = {f.rel: f for f in await self.catalog.read(
            lambda c: c.ingested_files(entry.root_key, entry.bucket, entry.prefix))}
        tree = scan_tree(entry.root, entry.prefix)
        try:
            async for batch in tree:
                await self._sync_batch(entry, batch, known, report)
        except IngestRootUnavailable as e:
            # Not "every file was removed": keep the catalog as it is.
            report.error = str(e)
            report.seconds = time.monotonic() - t0
            log.warning("ingest: %s", e)
            return report
        # What was not seen is gone, unless it sits below a directory that
        # could not be listed this time.
        gone = [f for rel, f in known.items() if not _below_any(rel, tree.unreadable_dirs)]
        await self._remove(gone)
        report.removed = len(gone)
        report.files, report.bytes = tree.files, tree.bytes
        report.skipped_total = len(tree.skipped)
        report.skipped = tree.skipped[:SKIPPED_SHOWN]
        report.seconds = time.monotonic() - t0
        return report

    async def _sync_batch(
        self, entry: IngestEntry, batch: list[ScannedFile], known: dict[str, IngestedFile], report: ScanReport
    ) -> None:
        changes: list[tuple[IngestedFile, VersionRecord, bool]] = []
        for f in batch:
            old = known.pop(f.rel, None)
            if old is not None and (old.size, old.mtime_ns, old.inode) == (f.size, f.mtime_ns, f.inode):
                continue
            changes.append((*self._new_file(entry, f), old is None))
            if old is None:
                report.added += 1
            else:
                report.changed += 1
        if changes:
            await self.catalog.write(lambda c: _put_all(c, changes))

    def _new_file(self, entry: IngestEntry, f: ScannedFile) -> tuple[IngestedFile, VersionRecord]:
        hlc = self.clock.now()
        key = entry.key_of(f.rel)
        vid = str(VersionId(hlc, self.node_id))
        v = VersionRecord(
            bucket=entry.bucket, key=key, version_id=vid, hlc=hlc, origin=self.node_id, size=f.size,
            etag=ingest_etag(f.size, f.mtime_ns, f.inode), sha256=None,
            last_modified_ms=f.mtime_ns // 1_000_000, content_type=content_type_of(f.rel),
        )
        row = IngestedFile(entry.bucket, key, vid, entry.root_key, entry.prefix, f.rel, f.size, f.mtime_ns, f.inode)
        return row, v

    async def _remove(self, files: list[IngestedFile]) -> None:
        for i in range(0, len(files), 2000):
            chunk = files[i:i + 2000]
            hlc = self.clock.now()
            await self.catalog.write(
                lambda c, chunk=chunk: [c.remove_ingested(f.bucket, f.key, f.version_id, hlc) for f in chunk])

    async def _record_scan(self, entry: IngestEntry, report: ScanReport) -> None:
        detail = {k: v for k, v in report.as_dict().items() if k != "skipped"}
        detail["root"] = entry.root_key
        new_skips = [s for s in report.skipped if (s.rel, s.reason) not in entry.reported_skips]
        entry.reported_skips = {(s.rel, s.reason) for s in report.skipped}

        def record(c) -> None:
            c.add_event("ingest.scan", entry.bucket, None, None, detail)
            for s in new_skips:
                c.add_event("ingest.skipped", entry.bucket, None, None,
                            {"root": entry.root_key, "path": s.rel, "reason": s.reason})

        try:
            await self.catalog.write(record)
        except Exception:  # events are a record, not the work: never fail a scan for them
            log.exception("ingest: could not record scan events")

    # -- single-file refresh (a read found a changed file) ---------------------

    def schedule_refresh(self, entry: IngestEntry, rel: str) -> None:
        self._refresh.add((entry.index, rel))
        self._refresh_wanted.set()

    async def _refresh_loop(self) -> None:
        while True:
            await self._refresh_wanted.wait()
            self._refresh_wanted.clear()
            pending, self._refresh = self._refresh, set()
            for index, rel in sorted(pending):
                try:
                    await self.refresh_file(self.entries[index], rel)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("ingest: refresh of %s failed", rel)

    async def refresh_file(self, entry: IngestEntry, rel: str) -> None:
        """Bring one file's version up to date with the disk (under the entry's scan lock)."""
        async with entry.scan_lock:
            try:
                found = await asyncio.to_thread(scan_one, entry.root, rel, entry.prefix)
            except IngestRootUnavailable as e:  # not "the file is gone"
                log.warning("ingest: %s", e)
                return
            key = entry.key_of(rel)
            row = await self.catalog.read(lambda c: c.get_ingested(entry.bucket, key))
            if isinstance(found, ScannedFile):
                if row is None or (row.size, row.mtime_ns, row.inode) != (found.size, found.mtime_ns, found.inode):
                    change = (*self._new_file(entry, found), False)
                    await self.catalog.write(lambda c: _put_all(c, [change]))
                    self._hash_wanted.set()
            elif row is not None:
                await self._remove([row])

    # -- hashing ------------------------------------------------------------

    async def _hash_loop(self) -> None:
        while True:
            self._hash_wanted.clear()
            if not await self.hash_pending():
                await self._hash_wanted.wait()

    async def hash_pending(self, batch: int = 64) -> int:
        """Hash every file that has no SHA-256 yet, a batch of each entry in
        turn (one entry's big tree does not starve another's new files); the
        count of digests stored."""
        done = 0
        cursors = {entry.index: "" for entry in self.entries}
        while cursors:
            for entry in self.entries:
                if entry.index not in cursors:
                    continue
                stored, after = await self._hash_batch(entry, cursors[entry.index], batch)
                done += stored
                if after is None:
                    del cursors[entry.index]
                else:
                    cursors[entry.index] = after
        return done

    async def _hash_batch(self, entry: IngestEntry, after: str, batch: int) -> tuple[int, str | None]:
        """Hash up to `batch` files after key `after`; (digests stored, last key
        or None when there were none). Digests are stored a batch at a time (one
        catalog transaction, one fsync), and at least every HASH_FLUSH_SECONDS."""
        rows = await self.catalog.read(
            lambda c: c.unhashed_ingested(entry.root_key, entry.bucket, entry.prefix, after, batch))
        if not rows:
            return 0, None
        stored = 0
        found: list[tuple[IngestedFile, str]] = []
        last_flush = time.monotonic()
        try:
            for row in rows:
                digest = await self._hash_one(entry, row)
                if digest is not None:
                    found.append((row, digest))
                if found and time.monotonic() - last_flush >= HASH_FLUSH_SECONDS:
                    stored += await self._store_digests(found)
                    found, last_flush = [], time.monotonic()
            stored += await self._store_digests(found)
            found = []
        finally:
            if found:  # cancelled (shutdown): keep what was hashed
                await asyncio.shield(self._store_digests(found))
        return stored, rows[-1].key

    async def _hash_one(self, entry: IngestEntry, row: IngestedFile) -> str | None:
        expect = Expect(row.size, row.mtime_ns, row.inode)
        t0 = time.monotonic()
        try:
            digest = await asyncio.to_thread(hash_file, entry.root, row.rel, expect, entry.pacer)
        except HashCancelled:
            raise asyncio.CancelledError from None
        except BackendError:
            # Changed or gone since the scan: the digest would be of no version.
            self.schedule_refresh(entry, row.rel)
            return None
        except OSError as e:
            log.warning("ingest: cannot hash %s: %s", row.rel, e)
            return None
        entry.hash_seconds += time.monotonic() - t0
        entry.hashed_bytes += row.size
        return digest

    async def _store_digests(self, found: list[tuple[IngestedFile, str]]) -> int:
        if not found:
            return 0
        stored = await self.catalog.write(
            lambda c: [c.set_ingested_sha256(r.bucket, r.key, r.version_id, d) for r, d in found])
        return sum(stored)

    # -- status -------------------------------------------------------------

    async def status(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.entries:
            totals = await self.catalog.read(
                lambda c, e=entry: c.ingest_totals(e.root_key, e.bucket, e.prefix))
            last = entry.last.as_dict() if entry.last else None
            out.append({
                "entry": entry.index, "path": entry.root_key, "bucket": entry.bucket, "prefix": entry.prefix,
                **totals, "scanning": entry.scanning_since is not None, "last_scan": last,
                "rescan_interval_seconds": entry.section.rescan_interval_seconds,
                "hash_bytes_per_second": entry.section.hash_bytes_per_second,
                "hasher": {"bytes": entry.hashed_bytes, "seconds": round(entry.hash_seconds, 6)},
            })
        return out

    # -- admin routes ---------------------------------------------------------

    def admin_routes(self) -> list[web.RouteDef]:
        return [web.get("/ingest/status", self._status_route), web.post("/ingest/rescan", self._rescan_route)]

    async def _status_route(self, request: web.Request) -> web.Response:
        return web.json_response({"entries": await self.status()})

    async def _rescan_route(self, request: web.Request) -> web.Response:
        raw = request.query.get("entry")
        index = None
        if raw is not None:
            if not raw.isdigit() or int(raw) >= len(self.entries):
                return web.json_response({"error": f"no ingest entry {raw}"}, status=400)
            index = int(raw)
        reports = await self.rescan(index)
        return web.json_response({"scans": [r.as_dict() for r in reports]})


def _put_all(c, changes: list[tuple[IngestedFile, VersionRecord, bool]]) -> None:
    for row, version, known_new in changes:
        c.put_ingested(row, version, known_new=known_new)


def _below_any(rel: str, dirs: list[str]) -> bool:
    return any(d == "" or rel.startswith(d) for d in dirs)


def _check_data_dir_apart(entries: list[IngestEntry], data_dir: Path) -> None:
    """A root holding the node's data directory would serve its master key,
    catalog and blobs to S3 clients: refuse to start."""
    for e in entries:
        if data_dir == e.root or e.root in data_dir.parents or data_dir in e.root.parents:
            raise ConfigError(
                f"ingest[{e.index}].path {e.root} and the node's data directory {data_dir} "
                "must not contain one another")


def _check_no_overlap(entries: list[IngestEntry]) -> None:
    for a in entries:
        for b in entries:
            if a is not b and a.bucket == b.bucket and b.prefix.startswith(a.prefix):
                raise ConfigError(
                    f"ingest entries {a.index} and {b.index} overlap: {a.bucket}/{a.prefix!r} "
                    f"and {b.bucket}/{b.prefix!r}")
