"""The composition root: builds every service of a node, starts them in order
and stops them in reverse. Nothing else constructs services.

    Config ─► Catalog (SQLite) ─┐
              Backend (files) ──┼─► ObjectService ─► S3 app (s3gateway) ─► HTTP site
    Registry ─► RegistryClient ─┘                      ▲ credentials
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from backends.base import Backend
from backends.filesystem import FilesystemBackend
from backends.memory import MemoryBackend
from backends.s3 import S3Backend
from meshd.catalog import Catalog
from meshd.config import BackendSection, Config
from meshd.hlc import NODE_ID_HEX, HybridClock
from meshd.objects import ObjectService
from registry.store import AccessKey, RegistryStore
from registry_client.credentials import EmbeddedRegistryClient, InitialCredentials
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
        self._backend: Backend | None = None
        self._background: list[asyncio.Task] = []
        self.info: NodeInfo | None = None

    async def start(self) -> NodeInfo:
        cfg = self.config
        data_dir = cfg.node.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._catalog = catalog = Catalog(data_dir / "catalog.db")
        node_id = await catalog.run(_node_id)
        name = cfg.storage.default_backend
        self._backend = backend = make_backend(name, cfg.backend(name), data_dir, cfg.storage.io_chunk_bytes)
        cleaned = await backend.cleanup_staging()
        if cleaned:
            log.info("removed %d unfinished uploads left by an earlier run", cleaned)
        self._registry = registry = await asyncio.to_thread(RegistryStore, data_dir / "registry.db")
        credentials = EmbeddedRegistryClient(registry)
        admin_key = await asyncio.to_thread(credentials.bootstrap, self._initial)
        storage = cfg.storage
        service = ObjectService(
            catalog, backend, HybridClock(), node_id,
            io_chunk_bytes=storage.io_chunk_bytes, max_object_bytes=storage.max_object_bytes,
            max_part_bytes=storage.max_part_bytes, min_part_bytes=storage.min_part_bytes,
            max_parts=storage.max_parts, inline_max_bytes=storage.inline_max_bytes,
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
        self._background.append(asyncio.create_task(_sweep_orphans(service), name="orphan-sweep"))
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
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            if self._backend is not None:
                await self._backend.aclose()
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
        return FilesystemBackend(name, root, io_chunk_bytes)
    if section.type == "s3":
        assert section.endpoint and section.bucket and section.access_key and section.secret_key
        return S3Backend(
            name, endpoint=section.endpoint, bucket=section.bucket, access_key=section.access_key,
            secret_key=section.secret_key, region=section.region, prefix=section.prefix,
            addressing_style=section.addressing_style, read_chunk=io_chunk_bytes,
        )
    if section.type == "memory":
        return MemoryBackend(name)
    raise ValueError(f"unknown backend type {section.type!r}")  # pragma: no cover


async def _sweep_orphans(service: ObjectService) -> None:
    """Once per start, in the background: blobs a crash left without a catalog entry."""
    try:
        removed = await service.sweep_orphan_blobs()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("orphan blob sweep failed")
        return
    if removed:
        log.info("removed %d blobs no version refers to (left by an earlier crash)", removed)


def _node_id(store) -> str:
    node_id = store.get_meta("node_id")
    if node_id is None:
        node_id = secrets.token_hex(NODE_ID_HEX // 2)
        store.set_meta("node_id", node_id)
    return node_id
