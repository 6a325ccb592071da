"""The composition root: builds every service of a node, starts them in order
and stops them in reverse. Nothing else constructs services.

    Config ─► Catalog (SQLite; the change feed) ───────────┐
              MasterKey ─► BlobCodec per backend               │
              Backends (filesystem, s3, memory), each ─► BlobStore ─┤
                wrapped in EncodedBackend                      ├─► ObjectService ─► S3 app (s3gateway) ─► HTTP site
    IngestService ([[ingest]]: files in place) ────────────────┤     reads ask the byte sources in order:
                                                               │     inline, backends, ingested files
    Registry ─► RegistryClient ─────────────────────────────────────────────────────▲ credentials
    Scrubber (re-reads and verifies blobs, paced) ◄── BlobStore
    Background: orphan blob sweep (BlobStore), change-feed trimming (Catalog)
    Admin socket (<data>/admin.sock) ◄── routes of IngestService, Scrubber, ...
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from backends.base import Backend
from backends.encoded import BlobCodec, EncodedBackend
from backends.encryption import MasterKey, default_algorithm
from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from backends.s3 import RetryPolicy, S3Backend
from meshd.admin import AdminPathTooLong, AdminServer, socket_path
from meshd.blobs import BlobStore
from meshd.catalog import Catalog
from meshd.config import BUILTIN_BACKEND, BackendSection, Config, FeedSection
from meshd.hlc import NODE_ID_HEX, HybridClock
from meshd.ingest import IngestService
from meshd.locks import ContentLocks
from meshd.objects import ObjectService, ObjectSettings
from meshd.scrub import Scrubber
from meshd.sources import BackendSource, IngestSource, InlineSource
from registry.store import AccessKey, RegistryStore
from registry_client.credentials import EmbeddedRegistryClient, InitialCredentials, owner_id
from s3gateway.app import make_app
from s3gateway.context import GatewaySettings
from s3gateway.server import S3AppRunner

log = logging.getLogger("meshd.node")


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    endpoint: str
    data_dir: Path
    admin_key: AccessKey
    cleaned_staging: int
    region: str


class Node:
    def __init__(self, config: Config, initial_credentials: InitialCredentials | None = None) -> None:
        self.config = config
        self._initial = initial_credentials
        self._runner: web.AppRunner | None = None
        self._catalog: Catalog | None = None
        self._registry: RegistryStore | None = None
        self._backends: dict[str, Backend] = {}
        self._blobs: BlobStore | None = None
        self._background: list[asyncio.Task] = []
        self._ingest: IngestService | None = None
        self._admin: AdminServer | None = None
        self._scrubber: Scrubber | None = None
        self.info: NodeInfo | None = None

    async def start(self) -> NodeInfo:
        cfg = self.config
        data_dir = cfg.node.data_dir.resolve()
        # Created private: the catalog holds every key name and the metadata.
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._catalog = catalog = Catalog(data_dir / "catalog.db")
        node_id = await catalog.run(_node_id)
        master = await asyncio.to_thread(load_master_key, cfg, data_dir)
        cipher = default_algorithm(cfg.encryption.cipher)
        for name in sorted({BUILTIN_BACKEND, *cfg.backends}):
            section = cfg.backend(name)
            codec = BlobCodec(master, encrypt=section.encrypted, compress=section.compress == "zstd",
                              algorithm=cipher)
            inner = make_backend(name, section, data_dir, cfg.storage.io_chunk_bytes)
            self._backends[name] = EncodedBackend(inner, codec)
        cleaned = sum([await _cleanup_staging(b) for b in self._backends.values()])
        if cleaned:
            log.info("removed %d unfinished uploads left by an earlier run", cleaned)
        self._registry = registry = await asyncio.to_thread(RegistryStore, data_dir / "registry.db")
        credentials = EmbeddedRegistryClient(registry)
        admin_key = await asyncio.to_thread(credentials.bootstrap, self._initial)
        self._blobs = blobs = BlobStore(
            catalog, self._backends,
            inline_codec=BlobCodec(master, encrypt=cfg.backend(cfg.storage.default_backend).encrypted,
                                   algorithm=cipher),
            untrusted=frozenset(n for n in self._backends if cfg.backend(n).type == "s3"),
            io_chunk_bytes=cfg.storage.io_chunk_bytes, locks=ContentLocks(data_dir / "blobs.lock"),
        )
        clock = HybridClock()
        self._ingest = ingest = IngestService(
            catalog, cfg.ingest, clock, node_id, owner_id(admin_key.user_id), data_dir=data_dir)
        service = ObjectService(
            catalog, blobs, clock, node_id, ObjectSettings.from_config(cfg), ingested=ingest,
            sources=[InlineSource(blobs), BackendSource(blobs), IngestSource(ingest)],
        )
        s3 = cfg.s3
        settings = GatewaySettings(
            region=s3.region, virtual_host_domains=s3.virtual_host_domains,
            max_clock_skew=timedelta(seconds=s3.max_clock_skew_seconds),
            max_xml_body_bytes=s3.max_xml_body_bytes,
            body_read_timeout=s3.body_read_timeout_seconds, access_log=cfg.log.access_log,
        )
        app = make_app(service, credentials, settings)
        self._runner = S3AppRunner(
            app, handle_signals=False, access_log=None,
            keepalive_timeout=s3.keepalive_timeout_seconds,
            shutdown_timeout=s3.shutdown_grace_seconds,
            max_line_size=s3.max_header_bytes, max_field_size=s3.max_header_bytes,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, s3.listen.host, s3.listen.port, backlog=1024, reuse_address=True)
        await site.start()
        self._background.append(asyncio.create_task(_sweep_orphans(blobs), name="orphan-sweep"))
        self._background.append(asyncio.create_task(_trim_feed(catalog, cfg.feed), name="feed-trim"))
        await ingest.start()  # buckets now; scanning and hashing in the background
        self._scrubber = scrubber = Scrubber(blobs, interval_seconds=cfg.scrub.interval_seconds,
                                             bytes_per_second=cfg.scrub.bytes_per_second)
        await scrubber.start()  # the first background pass one interval from now
        admin = AdminServer(socket_path(data_dir), [*ingest.admin_routes(), *scrubber.admin_routes()])
        try:
            await admin.start()
            self._admin = admin
        except AdminPathTooLong as e:  # the node serves S3 all the same
            log.warning("no admin socket: %s", e)
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.info = NodeInfo(node_id, f"http://{shown}:{port}", data_dir, admin_key, cleaned, s3.region)
        return self.info

    async def stop(self) -> None:
        """Stop accepting, drain requests in flight (up to the grace period), close."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        try:
            # The scrubber first: an admin request waiting on its pass then ends at
            # once instead of holding the admin server's shutdown.
            if self._scrubber is not None:
                await self._scrubber.aclose()
            if self._admin is not None:
                await self._admin.aclose()
            if self._ingest is not None:
                await self._ingest.aclose()
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            for backend in self._backends.values():
                await backend.aclose()
            if self._blobs is not None:
                self._blobs.close()
            if self._catalog is not None:
                await self._catalog.aclose()
            if self._registry is not None:
                self._registry.close()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


def make_backend(name: str, section: BackendSection, data_dir: Path, io_chunk_bytes: int) -> Backend:
    """The backend a `[backends.NAME]` table describes (the config loader checked its options)."""
    if section.type == "filesystem":
        root = section.path.resolve() if section.path is not None else data_dir / "store"
        return FilesystemBackend(name, root, io_chunk_bytes, min_free_bytes=section.min_free_bytes)
    if section.type == "s3":
        assert section.endpoint and section.bucket and section.access_key and section.secret_key
        return S3Backend(
            name, endpoint=section.endpoint, bucket=section.bucket, access_key=section.access_key,
            secret_key=section.secret_key, region=section.region, prefix=section.prefix,
            addressing_style=section.addressing_style, read_chunk=io_chunk_bytes,
            timeout=section.timeout_seconds, retry=RetryPolicy(attempts=section.attempts),
        )
    if section.type == "memory":
        return MemoryBackend(name)
    raise ValueError(f"unknown backend type {section.type!r}")  # pragma: no cover


def load_master_key(cfg: Config, data_dir: Path) -> MasterKey:
    """The key that wraps every blob's data key: from the config, or the key
    file (created, mode 0600, on first start)."""
    if cfg.encryption.key:
        return MasterKey.from_bytes(bytes.fromhex(cfg.encryption.key))
    path = Path(cfg.encryption.key_file) if cfg.encryption.key_file else data_dir / "master.key"
    return MasterKey.load_or_create(path)


# How long start-up waits for a remote backend to clear its staging area.
STAGING_CLEANUP_SECONDS = 15.0


async def _cleanup_staging(backend: Backend) -> int:
    """Drop staged bytes an earlier run left; a backend that is down now must
    not stop the node serving buckets on the others."""
    try:
        return await asyncio.wait_for(backend.cleanup_staging(), STAGING_CLEANUP_SECONDS)
    except Exception as e:
        log.warning("backend %s: could not clear staged leftovers at start (%s)", backend.name, e)
        return 0


async def _sweep_orphans(blobs: BlobStore) -> None:
    """Once per start, in the background: blobs a crash left without a catalog entry."""
    try:
        removed = await blobs.sweep_orphans()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("orphan blob sweep failed")
        return
    if removed:
        log.info("removed %d blobs no version refers to (left by an earlier crash)", removed)


# How often the change feed's old events are trimmed, and how many at most per transaction.
FEED_TRIM_SECONDS = 60.0
FEED_TRIM_BATCH = 10_000


async def _trim_feed(catalog: Catalog, section: FeedSection) -> None:
    """Keep the change feed within its retention (age and count), in small
    transactions that do not hold writes up."""
    while True:
        try:
            before_ms = time.time_ns() // 1_000_000 - int(section.retention_seconds * 1000)
            while await catalog.write(
                lambda c: c.trim_events(keep=section.max_events, before_ms=before_ms, limit=FEED_TRIM_BATCH)
            ) == FEED_TRIM_BATCH:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("trimming the change feed failed")
        await asyncio.sleep(FEED_TRIM_SECONDS)


def _node_id(store) -> str:
    node_id = store.get_meta("node_id")
    if node_id is None:
        node_id = secrets.token_hex(NODE_ID_HEX // 2)
        store.set_meta("node_id", node_id)
    return node_id
