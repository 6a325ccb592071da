"""meshd/ingest.py against a real catalog and real trees: sync of new, changed
and removed files, hashing, checked reads, the read-only rule, the admin socket.

The S3 edge and processes are covered by tests/integration/test_ingest.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from meshd.admin import AdminClient, AdminError, AdminServer, socket_path
from meshd.catalog import Catalog
from meshd.config import ConfigError, IngestSection
from meshd.errors import IngestedReadOnly, StorageUnavailable
from meshd.hlc import HybridClock
from meshd.ingest import IngestService, content_type_of, ingest_etag
from meshd.sources import Wanted
from tests.support.wait import async_wait_until

pytestmark = pytest.mark.timeout(60)

NODE = "00112233aabbccdd"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
async def setup(tmp_path: Path):
    root = tmp_path / "data"
    write(root / "a.txt", b"alpha")
    write(root / "sub" / "b.csv", b"1,2\n")
    write(root / "empty", b"")
    catalog = Catalog(tmp_path / "catalog.db")
    section = IngestSection(path=root, bucket="survey", prefix="raw/", rescan_interval_seconds=0,
                            hash_bytes_per_second=0)
    service = IngestService(catalog, (section,), HybridClock(), NODE, owner="admin")
    yield root, catalog, service
    await service.aclose()
    await catalog.aclose()


async def current(catalog: Catalog, bucket: str = "survey") -> dict[str, object]:
    page = await catalog.read(lambda c: c.list_objects(bucket, "", "", None, 10_000))
    return {v.key: v for v in page.versions}


async def settle(service: IngestService) -> None:
    """Start, and let the start-up scan finish: scans of an entry queue on its
    lock in order, so after two rescans the background one is done too."""
    await service.start()
    await service.rescan()
    await service.rescan()


async def wait_hashed(service: IngestService, n: int) -> None:
    async def hashed() -> bool:
        [st] = await service.status()
        return st["hashed_files"] >= n

    await async_wait_until(hashed, 10, what=f"{n} files hashed")


async def test_first_scan_creates_the_bucket_and_versions(setup) -> None:
    root, catalog, service = setup
    await service.start()
    await service.rescan()  # after the start-up scan, or in its place
    [report] = await service.rescan()
    assert (report.added, report.changed, report.removed) == (0, 0, 0)
    objs = await current(catalog)
    assert set(objs) == {"raw/a.txt", "raw/sub/b.csv", "raw/empty"}
    v = objs["raw/a.txt"]
    st = (root / "a.txt").stat()
    assert v.size == 5 and v.origin == NODE and service.holds(v)
    assert v.etag == ingest_etag(st.st_size, st.st_mtime_ns, st.st_ino)
    assert v.etag.endswith('-1"') and len(v.etag) == 36
    assert v.last_modified_ms == st.st_mtime_ns // 1_000_000
    assert objs["raw/sub/b.csv"].content_type == "text/csv"
    bucket = await catalog.read(lambda c: c.get_bucket("survey"))
    assert bucket.owner == "admin"


async def test_rescan_sees_added_changed_and_removed_files(setup) -> None:
    root, catalog, service = setup
    await settle(service)
    before = await current(catalog)
    write(root / "new.bin", b"new")
    (root / "a.txt").write_bytes(b"alpha, longer now")
    (root / "sub" / "b.csv").unlink()
    [report] = await service.rescan()
    assert (report.added, report.changed, report.removed) == (1, 1, 1)
    after = await current(catalog)
    assert set(after) == {"raw/a.txt", "raw/new.bin", "raw/empty"}
    assert after["raw/a.txt"].size == 17
    assert after["raw/a.txt"].version_id > before["raw/a.txt"].version_id
    assert after["raw/empty"].version_id == before["raw/empty"].version_id  # unchanged: kept
    # Replaced, not stacked: one version per key, and no delete markers.
    versions = await catalog.read(lambda c: c.list_versions("survey", "", "", None, None, 1000))
    assert sorted(lv.version.key for lv in versions.versions) == ["raw/a.txt", "raw/empty", "raw/new.bin"]


async def test_periodic_rescans_pick_up_new_files(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write(root / "first", b"1")
    catalog = Catalog(tmp_path / "c.db")
    section = IngestSection(path=root, bucket="periodic", prefix="", rescan_interval_seconds=0.05,
                            hash_bytes_per_second=0)
    service = IngestService(catalog, (section,), HybridClock(), NODE)
    try:
        await service.start()
        write(root / "second", b"2")

        async def both_listed() -> bool:
            return set(await current(catalog, "periodic")) == {"first", "second"}

        await async_wait_until(both_listed, 10, what="a periodic rescan to list the new file")
    finally:
        await service.aclose()
        await catalog.aclose()


async def test_files_changing_during_the_scan_end_up_as_they_are_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for i in range(3000):
        write(root / f"d{i % 30:02d}" / f"f{i:04d}", b"x" * (i % 50))
    catalog = Catalog(tmp_path / "c.db")
    section = IngestSection(path=root, bucket="moving", prefix="", rescan_interval_seconds=0,
                            hash_bytes_per_second=0)
    service = IngestService(catalog, (section,), HybridClock(), NODE)

    def meddle() -> None:
        for i in range(0, 3000, 7):
            p = root / f"d{i % 30:02d}" / f"f{i:04d}"
            if i % 3 == 0:
                p.unlink()
            elif i % 3 == 1:
                p.write_bytes(b"changed" * (i % 5 + 1))
            else:
                write(root / f"d{i % 30:02d}" / f"new{i:04d}", b"new")

    try:
        await service.start()
        scan = asyncio.create_task(service.rescan())
        await asyncio.to_thread(meddle)
        await scan
        await service.rescan()  # whatever the first scan saw mid-way, this one sees the end state
        on_disk = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        listed = await current(catalog, "moving")
        assert {k: v.size for k, v in listed.items()} == {k: len(d) for k, d in on_disk.items()}
        for key in list(on_disk)[::97]:
            body = await service.open_object(Wanted(listed[key], None, []))
            assert b"".join([c async for c in body.chunks]) == on_disk[key]
    finally:
        await service.aclose()
        await catalog.aclose()


async def test_a_missing_root_changes_nothing(setup) -> None:
    root, catalog, service = setup
    await service.start()
    await service.rescan()
    moved = root.with_name("moved")
    root.rename(moved)
    [report] = await service.rescan()
    assert report.error and "data" in report.error
    assert len(await current(catalog)) == 3


async def test_hashes_fill_in_and_match_hashlib(setup) -> None:
    root, catalog, service = setup
    write(root / "big.bin", os.urandom(5 * 1024 * 1024 + 3))
    await service.start()
    await wait_hashed(service, 4)
    objs = await current(catalog)
    for key, v in objs.items():
        data = (root / key.removeprefix("raw/")).read_bytes()
        assert v.sha256 == hashlib.sha256(data).hexdigest()
        assert base64.b64decode(v.checksums["sha256"]) == hashlib.sha256(data).digest()
        # The file is now a copy of that content on this node, and only that.
        [copy] = await catalog.read(lambda c, v=v: c.copies(v.sha256))
        assert (copy.backend, copy.role, copy.size) == ("ingest", "ingested", v.size)
    [st] = await service.status()
    assert st["hashed_bytes"] == st["bytes"] == sum(v.size for v in objs.values())


async def test_reads_serve_the_file_and_refuse_a_changed_one(setup) -> None:
    root, catalog, service = setup
    await service.start()
    await service.rescan()
    v = (await current(catalog))["raw/a.txt"]
    assert service.holds(v)
    body = await service.open_object(Wanted(v, None, []))
    assert b"".join([c async for c in body.chunks]) == b"alpha"
    assert body.local_file is not None and body.local_file.expect == (5, (root / "a.txt").stat().st_mtime_ns)
    (root / "a.txt").write_bytes(b"ALPHA, changed")
    with pytest.raises(StorageUnavailable):
        await service.open_object(Wanted(v, None, []))
    # The refused read scheduled a refresh of that one file.
    async def refreshed():
        now = (await current(catalog))["raw/a.txt"]
        return now if now.size == 14 else None

    now = await async_wait_until(refreshed, 10, what="the changed file refreshed")
    assert now.version_id > v.version_id
    body = await service.open_object(Wanted(now, None, []))
    assert b"".join([c async for c in body.chunks]) == b"ALPHA, changed"


async def test_writes_inside_the_prefix_are_refused(setup) -> None:
    _, _, service = setup
    with pytest.raises(IngestedReadOnly, match="read-only"):
        service.check_writable("survey", "raw/anything")
    service.check_writable("survey", "other/key")
    service.check_writable("otherbucket", "raw/x")


async def test_overlapping_entries_are_refused(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    try:
        a = IngestSection(path=tmp_path, bucket="b", prefix="x/")
        b = IngestSection(path=tmp_path, bucket="b", prefix="x/y/")
        with pytest.raises(ConfigError, match="overlap"):
            IngestService(catalog, (a, b), HybridClock(), NODE)
    finally:
        await catalog.aclose()


@pytest.mark.parametrize("where", ["inside", "same", "around"])
async def test_a_root_and_the_data_dir_must_be_apart(tmp_path: Path, where: str) -> None:
    catalog = Catalog(tmp_path / "c.db")
    try:
        data = tmp_path / "srv" / "meshd-data"
        root = {"inside": tmp_path / "srv", "same": data, "around": data / "sub"}[where]
        section = IngestSection(path=root, bucket="b")
        with pytest.raises(ConfigError, match="data directory"):
            IngestService(catalog, (section,), HybridClock(), NODE, data_dir=data)
        IngestService(catalog, (IngestSection(path=tmp_path / "other", bucket="b"),), HybridClock(), NODE,
                      data_dir=data)
    finally:
        await catalog.aclose()


async def test_an_entry_removed_from_the_config_takes_its_versions(setup, tmp_path: Path) -> None:
    root, catalog, service = setup
    await service.start()
    await service.rescan()
    await service.aclose()
    other = IngestSection(path=root, bucket="survey", prefix="elsewhere/", rescan_interval_seconds=0)
    again = IngestService(catalog, (other,), HybridClock(), NODE)
    try:
        await again.start()
        await again.rescan()
        assert set(await current(catalog)) == {"elsewhere/a.txt", "elsewhere/sub/b.csv", "elsewhere/empty"}
    finally:
        await again.aclose()


async def test_with_no_entries_left_the_ingested_versions_go(setup) -> None:
    _, catalog, service = setup
    await settle(service)
    await service.aclose()
    none = IngestService(catalog, (), HybridClock(), NODE)
    try:
        await none.start()
        assert await current(catalog) == {}
    finally:
        await none.aclose()


async def test_skipped_files_and_scans_are_events(setup) -> None:
    root, catalog, service = setup
    os.mkfifo(root / "pipe")
    await service.start()
    await service.rescan()
    await service.rescan()
    events = await catalog.read(lambda c: c.events_after(0))
    kinds = [e.kind for e in events]
    assert kinds.count("ingest.skipped") == 1  # reported once, not at every scan
    assert kinds.count("ingest.scan") >= 2
    skipped = next(e for e in events if e.kind == "ingest.skipped")
    assert skipped.detail["path"] == "pipe" and "fifo" in skipped.detail["reason"]


async def test_admin_socket_status_and_rescan(setup, tmp_path: Path) -> None:
    root, catalog, service = setup
    await settle(service)
    server = AdminServer(socket_path(tmp_path), service.admin_routes())
    await server.start()
    try:
        assert (socket_path(tmp_path).stat().st_mode & 0o777) == 0o600
        client = AdminClient(tmp_path, timeout=30)
        write(root / "later.txt", b"later")
        got = await asyncio.to_thread(client.request, "POST", "/ingest/rescan")
        assert got["scans"][0]["added"] == 1
        status = await asyncio.to_thread(client.request, "GET", "/ingest/status")
        assert status["entries"][0]["files"] == 4
        with pytest.raises(AdminError, match="no ingest entry"):
            await asyncio.to_thread(client.request, "POST", "/ingest/rescan?entry=7")
    finally:
        await server.aclose()
    assert not socket_path(tmp_path).exists()
    with pytest.raises(AdminError, match="no node is running"):
        AdminClient(tmp_path).request("GET", "/ingest/status")


async def test_admin_socket_below_a_path_too_long_for_sun_path(setup, tmp_path: Path) -> None:
    _, _, service = setup
    await settle(service)
    deep = tmp_path.joinpath(*["d" * 30] * 4)
    deep.mkdir(parents=True)
    assert len(str(socket_path(deep))) > 108
    server = AdminServer(socket_path(deep), service.admin_routes())
    await server.start()
    try:
        got = await asyncio.to_thread(AdminClient(deep, timeout=30).request, "GET", "/ingest/status")
        assert got["entries"][0]["bucket"] == "survey"
        assert (socket_path(deep).stat().st_mode & 0o777) == 0o600
    finally:
        await server.aclose()
    with pytest.raises(AdminError, match="no node is running"):
        AdminClient(deep).request("GET", "/ingest/status")
    with pytest.raises(AdminError, match="no node is running"):
        AdminClient(deep / "missing").request("GET", "/ingest/status")


def test_content_types() -> None:
    assert content_type_of("x/y.json") == "application/json"
    assert content_type_of("x/y.unknownext") == "binary/octet-stream"
    assert content_type_of("noext") == "binary/octet-stream"


async def test_service_does_not_touch_the_files(setup) -> None:
    root, catalog, service = setup
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    await service.start()
    await wait_hashed(service, 3)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    assert before == after
    shutil.rmtree(root)  # still ours to delete: nothing held open
