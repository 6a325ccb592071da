"""The SQLite catalog: buckets, versions and the current version, content
references and stored copies, multipart uploads and parts, tags, and the query
plans listings rely on. (Merges, tombstones and the change feed:
test_merge.py and test_feed.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshd.catalog import Catalog
from meshd.model import BucketRecord, PartRecord, UploadRecord, VersionRecord
from meshd.catalog.records import BlobRelease
from meshd.catalog.store import SqliteCatalog
from meshd.errors import BucketExists, BucketNotEmpty, BucketNotFound, UploadNotFound
from tests.support.records import vid, stamp, version

BACKEND = "local"


@pytest.fixture
def cat(tmp_path: Path):
    c = SqliteCatalog(tmp_path / "catalog.db")
    c.create_bucket(BucketRecord("bkt", "alice", 1000))
    yield c
    c.close()


def stored(cat: SqliteCatalog, sha: str, size: int = 5, backend: str = BACKEND) -> None:
    """A copy of the content on a backend, recorded as the blob store's commit records it."""
    cat.add_blob(sha, backend, size, "plain", size)


def refs(cat: SqliteCatalog) -> dict[str, int]:
    return dict(cat._conn.execute("SELECT content_id, count FROM refs").fetchall())


def marker(key: str, **kw) -> VersionRecord:
    return version(key, delete_marker=True, **kw)


def upload(upload_id: str = "up1", key: str = "big", bucket: str = "bkt") -> UploadRecord:
    return UploadRecord(upload_id, bucket, key, 99, "alice", content_type="text/plain",
                        user_meta={"m": "1"}, tags={"t": "2"}, checksum_algorithm="crc32",
                        backend=BACKEND)


HLC = 7 << 16  # when the tests' permanent deletes happen


def part(n: int, sha: str, upload_id: str = "up1", size: int = 10) -> PartRecord:
    return PartRecord(upload_id, n, size, f'"p{n}"', sha, 5, {"crc32": "AAAAAA=="})


# -- buckets --------------------------------------------------------------------


def test_create_existing_bucket_says_who_owns_it(cat):
    with pytest.raises(BucketExists) as mine:
        cat.create_bucket(BucketRecord("bkt", "alice", 2))
    assert mine.value.owned_by_caller is True
    with pytest.raises(BucketExists) as theirs:
        cat.create_bucket(BucketRecord("bkt", "bob", 2))
    assert theirs.value.owned_by_caller is False
    assert cat.get_bucket("bkt") == BucketRecord("bkt", "alice", 1000, None)


def test_list_and_get_buckets(cat):
    cat.create_bucket(BucketRecord("abc", "bob", 5))
    assert [b.name for b in cat.list_buckets()] == ["abc", "bkt"]
    with pytest.raises(BucketNotFound):
        cat.get_bucket("nope")


def test_bucket_cors(cat):
    cat.set_bucket_cors("bkt", b"<CORSConfiguration/>")
    assert cat.get_bucket("bkt").cors == b"<CORSConfiguration/>"
    cat.set_bucket_cors("bkt", None)
    assert cat.get_bucket("bkt").cors is None
    with pytest.raises(BucketNotFound):
        cat.set_bucket_cors("nope", b"x")


def test_delete_empty_and_missing_bucket(cat):
    cat.delete_bucket("bkt")
    with pytest.raises(BucketNotFound):
        cat.get_bucket("bkt")
    with pytest.raises(BucketNotFound):
        cat.delete_bucket("bkt")


def test_bucket_with_objects_is_not_empty(cat):
    v = version("k")
    cat.put_version(v)
    with pytest.raises(BucketNotEmpty):
        cat.delete_bucket("bkt")
    cat.delete_version("bkt", "k", v.version_id, HLC)
    cat.delete_bucket("bkt")


def test_bucket_with_only_delete_markers_is_not_empty(cat):
    """As in a versioned S3 bucket: markers are versions too."""
    m = marker("gone")
    cat.put_version(m)
    assert cat.list_objects("bkt", "", "", None, 10).versions == []
    with pytest.raises(BucketNotEmpty):
        cat.delete_bucket("bkt")
    cat.delete_version("bkt", "gone", m.version_id, HLC)
    cat.delete_bucket("bkt")


def test_bucket_with_open_upload_is_not_empty(cat):
    u = upload()
    cat.create_upload(u)
    with pytest.raises(BucketNotEmpty):
        cat.delete_bucket("bkt")
    cat.finish_upload(u, None)  # abort
    cat.delete_bucket("bkt")


def test_writes_into_a_missing_bucket(cat):
    with pytest.raises(BucketNotFound):
        cat.put_version(version("k", bucket="nope"))
    with pytest.raises(BucketNotFound):
        cat.create_upload(upload(bucket="nope"))
    for listing in (lambda: cat.list_objects("nope", "", "", None, 10),
                    lambda: cat.list_versions("nope", "", "", None, None, 10),
                    lambda: cat.list_uploads("nope", "", "", None, None, 10)):
        with pytest.raises(BucketNotFound):
            listing()
    assert refs(cat) == {}  # the failed put left no reference behind


# -- versions and the current version --------------------------------------------


def test_version_round_trips_every_field(cat):
    v = version("dir/é.txt", content_type="text/csv",
                headers={"Cache-Control": "no-cache", "Content-Encoding": "gzip"},
                user_meta={"project": "x", "ünï": "ç"}, checksums={"crc32c": "AAAAAA=="},
                tags={"a": "b"}, parts_count=3)
    cat.put_version(v)
    assert cat.get_version("bkt", "dir/é.txt", v.version_id) == v
    assert cat.get_version("bkt", "dir/é.txt", None) == v


def test_newest_version_is_current_even_when_written_out_of_order(cat):
    older, newer = vid(), vid()
    cat.put_version(version("k", "11" * 32, version_id=newer))
    cat.put_version(version("k", "22" * 32, version_id=older))  # e.g. arriving late from a peer
    assert cat.get_version("bkt", "k", None).version_id == newer
    [listed] = cat.list_objects("bkt", "", "", None, 10).versions
    assert listed.version_id == newer
    latest = {lv.version.version_id: lv.is_latest for lv in cat.list_versions("bkt", "", "", None, None, 10).versions}
    assert latest == {newer: True, older: False}


def test_delete_marker_hides_key_and_version_delete_restores_it(cat):
    v1 = version("k")
    cat.put_version(v1)
    m = marker("k")
    cat.put_version(m)
    assert cat.get_version("bkt", "k", None) == m
    assert cat.list_objects("bkt", "", "", None, 10).versions == []
    # Removing the marker makes the previous version current again.
    removed, released = cat.delete_version("bkt", "k", m.version_id, HLC)
    assert removed == m and released == []
    assert [v.version_id for v in cat.list_objects("bkt", "", "", None, 10).versions] == [v1.version_id]


def test_deleting_newest_version_falls_back_then_key_disappears(cat):
    v1, v2 = version("k", "01" * 32), version("k", "02" * 32)
    cat.put_version(v1)
    cat.put_version(v2)
    cat.delete_version("bkt", "k", v2.version_id, HLC)
    assert cat.get_version("bkt", "k", None) == v1
    assert [lv.is_latest for lv in cat.list_versions("bkt", "", "", None, None, 10).versions] == [True]
    cat.delete_version("bkt", "k", v1.version_id, HLC)
    assert cat.get_version("bkt", "k", None) is None
    assert cat.list_versions("bkt", "", "", None, None, 10).versions == []
    assert cat._conn.execute("SELECT count(*) FROM current").fetchone()[0] == 0


def test_deleting_an_old_version_keeps_current(cat):
    v1, v2 = version("k", "01" * 32), version("k", "02" * 32)
    cat.put_version(v1)
    cat.put_version(v2)
    cat.delete_version("bkt", "k", v1.version_id, HLC)
    assert cat.get_version("bkt", "k", None) == v2


def test_unknown_versions(cat):
    assert cat.get_version("bkt", "k", None) is None
    assert cat.get_version("bkt", "k", vid()) is None
    assert cat.delete_version("bkt", "k", vid(), HLC) == (None, [])


def test_keys_are_exact_bytes(cat):
    """Keys differing only by normalisation or case are different keys."""
    nfc, nfd = "\u00e9", "e\u0301"
    for k in (nfc, nfd, "A", "a"):
        cat.put_version(version(k))
    assert [v.key for v in cat.list_objects("bkt", "", "", None, 10).versions] == ["A", "a", nfd, nfc]
    assert cat.get_version("bkt", nfd, None).key == nfd


# -- blobs ------------------------------------------------------------------------


def test_identical_content_shares_one_blob(cat):
    sha = "ab" * 32
    a, b = version("a", sha, size=7), version("b", sha, size=7)
    cat.put_version(a)
    stored(cat, sha, 7)
    cat.put_version(b)
    assert cat.blob_refs(sha) == 2
    assert cat.delete_version("bkt", "a", a.version_id, HLC) == (a, [])
    assert cat.blob_refs(sha) == 1 and cat.get_blob(sha, BACKEND) is not None
    assert cat.delete_version("bkt", "b", b.version_id, HLC) == (b, [BlobRelease(sha, BACKEND, 7)])
    assert cat.blob_refs(sha) == 0 and cat.copies(sha) == []


def test_the_last_reference_releases_every_copy_but_inline_and_ingested_bytes(cat):
    sha = "cd" * 32
    v = version("a", sha, size=3)
    cat.put_version(v)
    for backend in ("local", "remote", "inline", "ingest"):
        stored(cat, sha, 3, backend)
    cat._conn.execute("INSERT INTO inline_blobs(content_id, data) VALUES(?, ?)", (sha, b"abc"))
    assert sorted(c.backend for c in cat.copies(sha)) == ["ingest", "inline", "local", "remote"]
    assert [c.data for c in cat.copies(sha) if c.backend == "inline"] == [b"abc"]
    _, released = cat.delete_version("bkt", "a", v.version_id, HLC)
    # Inline bytes go with the catalog transaction; ingested files are never deleted.
    assert sorted(released, key=lambda r: r.backend) == [BlobRelease(sha, "local", 3), BlobRelease(sha, "remote", 3)]
    assert cat.copies(sha) == [] and cat.get_inline(sha) is None
    assert cat._conn.execute("SELECT count(*) FROM inline_blobs").fetchone()[0] == 0


def test_a_reference_does_not_need_a_copy(cat):
    """A version merged from a peer refers to content this node may not hold."""
    sha = "ef" * 32
    v = version("a", sha)
    cat.merge_version(v)
    assert cat.blob_refs(sha) == 1 and cat.copies(sha) == []
    assert cat.delete_version("bkt", "a", v.version_id, HLC) == (v, [])
    assert refs(cat) == {}


def test_delete_markers_reference_no_blob(cat):
    cat.put_version(marker("k"))
    assert cat._conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 0


# -- multipart ----------------------------------------------------------------------


def test_upload_round_trip_and_lookup_checks_key(cat):
    u = upload()
    cat.create_upload(u)
    assert cat.get_upload("bkt", "big", "up1") == u
    with pytest.raises(UploadNotFound):
        cat.get_upload("bkt", "other-key", "up1")
    with pytest.raises(UploadNotFound):
        cat.get_upload("bkt", "big", "nope")


def test_replacing_a_part_releases_the_old_blob(cat):
    cat.create_upload(upload())
    assert cat.put_part(part(1, "01" * 32, size=10)) == []
    stored(cat, "01" * 32, 10)
    assert cat.blob_refs("01" * 32) == 1
    assert cat.put_part(part(1, "02" * 32, size=20)) == [BlobRelease("01" * 32, BACKEND, 10)]
    assert refs(cat) == {"02" * 32: 1}
    [p] = cat.list_parts("up1").parts
    assert (p.part_number, p.size, p.sha256) == (1, 20, "02" * 32)


def test_reuploading_identical_part_keeps_its_blob(cat):
    cat.create_upload(upload())
    cat.put_part(part(1, "01" * 32))
    stored(cat, "01" * 32, 10)
    assert cat.put_part(part(1, "01" * 32)) == []
    assert cat.blob_refs("01" * 32) == 1 and cat.get_blob("01" * 32, BACKEND) is not None


def test_part_sharing_content_with_a_version_is_not_released(cat):
    sha = "0f" * 32
    cat.put_version(version("k", sha, size=10))
    cat.create_upload(upload())
    stored(cat, sha, 10)
    cat.put_part(part(1, sha))
    assert cat.blob_refs(sha) == 2
    assert cat.finish_upload(upload(), None) == []
    assert cat.blob_refs(sha) == 1


def test_put_part_into_missing_upload(cat):
    with pytest.raises(UploadNotFound):
        cat.put_part(part(1, "01" * 32, upload_id="nope"))
    assert refs(cat) == {}


def test_list_parts_pages(cat):
    cat.create_upload(upload())
    for n in (3, 1, 2, 10):
        cat.put_part(part(n, f"{n:02d}" * 32))
    page = cat.list_parts("up1", after=0, limit=2)
    assert [p.part_number for p in page.parts] == [1, 2]
    assert page.is_truncated and page.next_part_number_marker == 2
    page = cat.list_parts("up1", after=2, limit=2)
    assert [p.part_number for p in page.parts] == [3, 10]
    assert not page.is_truncated and page.next_part_number_marker is None
    assert page.parts[0].checksums == {"crc32": "AAAAAA=="}


def test_complete_upload_commits_version_and_releases_parts(cat):
    u = upload()
    cat.create_upload(u)
    cat.put_part(part(1, "01" * 32, size=10))
    cat.put_part(part(2, "02" * 32, size=4))
    stored(cat, "01" * 32, 10)
    stored(cat, "02" * 32, 4)
    assembled = version("big", "ff" * 32, size=14, parts_count=2)
    released = cat.finish_upload(u, assembled)
    assert sorted(released, key=lambda r: r.content_id) == [
        BlobRelease("01" * 32, BACKEND, 10), BlobRelease("02" * 32, BACKEND, 4)]
    assert cat.get_version("bkt", "big", None) == assembled
    assert refs(cat) == {"ff" * 32: 1}
    assert cat.list_parts("up1").parts == []
    with pytest.raises(UploadNotFound):
        cat.get_upload("bkt", "big", "up1")
    with pytest.raises(UploadNotFound):
        cat.finish_upload(u, assembled)  # a second complete finds nothing
    assert len(cat.list_versions("bkt", "", "", None, None, 10).versions) == 1


def test_failed_complete_rolls_back_everything(cat):
    u = upload()
    cat.create_upload(u)
    cat.put_part(part(1, "01" * 32))
    # The version names a missing bucket: the whole transaction must roll back.
    with pytest.raises(BucketNotFound):
        cat.finish_upload(u, version("big", "ff" * 32, bucket="nope"))
    assert cat.get_upload("bkt", "big", "up1") == u
    assert [p.part_number for p in cat.list_parts("up1").parts] == [1]
    assert refs(cat) == {"01" * 32: 1}


def test_list_uploads_orders_by_key_then_id(cat):
    for uid, key in (("u3", "b"), ("u1", "b"), ("u2", "a/x"), ("u4", "a/y")):
        cat.create_upload(upload(uid, key))
    page = cat.list_uploads("bkt", "", "", None, None, 10)
    assert [(u.key, u.upload_id) for u in page.uploads] == [("a/x", "u2"), ("a/y", "u4"), ("b", "u1"), ("b", "u3")]
    page = cat.list_uploads("bkt", "", "/", None, None, 10)
    assert page.common_prefixes == ["a/"] and [u.upload_id for u in page.uploads] == ["u1", "u3"]
    page = cat.list_uploads("bkt", "", "", "b", "u1", 10)
    assert [u.upload_id for u in page.uploads] == ["u3"]
    page = cat.list_uploads("bkt", "", "/", None, None, 1)
    assert page.common_prefixes == ["a/"] and page.is_truncated and page.next_key_marker == "a/"
    page = cat.list_uploads("bkt", "", "/", "a/", None, 1)  # not "a/" again
    assert page.common_prefixes == [] and [u.upload_id for u in page.uploads] == ["u1"]
    assert page.next_upload_id_marker == "u1"


# -- tags, node metadata, durability ------------------------------------------------


def test_tags_set_and_clear(cat):
    v = version("k")
    cat.put_version(v)
    assert cat.set_tags("bkt", "k", v.version_id, {"project": "p1", "ü": "ß"}, stamp(1))
    assert cat.get_version("bkt", "k", v.version_id).tags == {"project": "p1", "ü": "ß"}
    assert cat.set_tags("bkt", "k", v.version_id, {}, stamp(2))
    assert cat.get_version("bkt", "k", v.version_id).tags == {}
    assert cat.get_version("bkt", "k", v.version_id).tags_stamp == stamp(2)


def test_tags_last_writer_wins(cat):
    v = version("k")
    cat.put_version(v)
    assert cat.set_tags("bkt", "k", v.version_id, {"new": "1"}, stamp(5))
    assert not cat.set_tags("bkt", "k", v.version_id, {"late": "1"}, stamp(4))  # older: ignored
    assert not cat.set_tags("bkt", "k", v.version_id, {"same": "1"}, stamp(5))
    assert cat.set_tags("bkt", "k", v.version_id, {"other": "1"}, stamp(5, "00000000000000ff"))  # tie: node id
    assert cat.get_version("bkt", "k", v.version_id).tags == {"other": "1"}
    assert not cat.set_tags("bkt", "k", vid(), {"x": "1"}, stamp(9))  # no such version


def test_tags_are_per_version(cat):
    v1, v2 = version("k"), version("k")
    cat.put_version(v1)
    cat.put_version(v2)
    cat.set_tags("bkt", "k", v1.version_id, {"old": "1"}, stamp(1))
    assert cat.get_version("bkt", "k", v1.version_id).tags == {"old": "1"}
    assert cat.get_version("bkt", "k", None).tags == {}


def test_node_meta(cat):
    assert cat.get_meta("node_id") is None
    cat.set_meta("node_id", "abc")
    cat.set_meta("node_id", "def")
    assert cat.get_meta("node_id") == "def"


def test_everything_survives_reopening(tmp_path):
    path = tmp_path / "c.db"
    c = SqliteCatalog(path)
    c.create_bucket(BucketRecord("b", "o", 1))
    v = version("k", bucket="b")
    c.put_version(v)
    c.create_upload(upload(bucket="b"))
    c.close()
    c = SqliteCatalog(path)
    try:
        assert c.get_version("b", "k", None) == v
        assert c.get_upload("b", "big", "up1").user_meta == {"m": "1"}
        assert c.blob_refs(v.sha256) == 1
    finally:
        c.close()


async def test_threaded_catalog_runs_store_calls(tmp_path):
    catalog = Catalog(tmp_path / "c.db")
    try:
        await catalog.run(lambda s: s.create_bucket(BucketRecord("b", "o", 1)))
        v = version("k", bucket="b")
        await asyncio.gather(*(catalog.run(lambda s, i=i: s.put_version(version(f"k{i}", bucket="b")))
                               for i in range(20)), catalog.run(lambda s: s.put_version(v)))
        page = await catalog.run(lambda s: s.list_objects("b", "", "", None, 100))
        assert len(page.versions) == 21
        with pytest.raises(BucketNotFound):
            await catalog.run(lambda s: s.get_bucket("nope"))
    finally:
        await catalog.aclose()


# -- query plans: listings must seek on primary keys, never scan or sort ---------------


def _plan(cat: SqliteCatalog, sql: str, params: tuple) -> list[str]:
    return [r[3] for r in cat._conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


def _capture_sql(cat: SqliteCatalog, fn) -> list[tuple[str, tuple]]:
    """Run `fn` and record every SELECT the store sends to SQLite."""
    seen: list[tuple[str, tuple]] = []
    conn = cat._conn

    class Spy:
        def __getattr__(self, name):
            return getattr(conn, name)

        def execute(self, sql, params=()):
            if sql.lstrip().upper().startswith("SELECT"):
                seen.append((sql, tuple(params)))
            return conn.execute(sql, params)

    cat._conn = Spy()
    try:
        fn()
    finally:
        cat._conn = conn
    return seen


def test_listing_queries_use_primary_keys(cat):
    for k in ("a/1", "a/2", "b", "c/d/e"):
        cat.put_version(version(k))
        cat.put_version(version(k))
    cat.create_upload(upload("u1", "a/1"))
    calls = [
        lambda: cat.list_objects("bkt", "", "/", None, 2),
        lambda: cat.list_objects("bkt", "a/", "", "a/1", 1000),
        lambda: cat.list_versions("bkt", "", "/", "b", None, 3),
        lambda: cat.list_versions("bkt", "", "", "a/1", vid(), 3),
        lambda: cat.list_uploads("bkt", "", "/", "a/1", "u0", 3),
    ]
    for call in calls:
        queries = _capture_sql(cat, call)
        assert queries
        for sql, params in queries:
            plan = _plan(cat, sql, params)
            assert all("TEMP B-TREE" not in step for step in plan), (sql, plan)
            assert all(not step.startswith("SCAN") for step in plan), (sql, plan)
