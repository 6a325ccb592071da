"""Merge laws of the catalog (meshd/catalog/versions.py), property-tested: the
same records and tombstones, delivered in any order and any number of times,
give the same catalog, the same current version per key, and the same
listings; and that catalog is the one the laws describe."""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.catalog.store import SqliteCatalog
from meshd.hlc import VersionId
from meshd.model import BucketRecord, Tombstone, VersionRecord

NODES = ("00000000000000a1", "00000000000000b2", "00000000000000c3")
KEYS = ("k", "k/x", "k/y", "ké", "z")
BUCKETS = ("known", "unknown")  # records for a bucket the node does not know are kept
SHAS = ("11" * 32, "22" * 32, "33" * 32)


@dataclass(frozen=True)
class Universe:
    records: list[VersionRecord]  # every snapshot any node could send
    tombstones: list[Tombstone]


@st.composite
def universes(draw) -> Universe:
    ids = draw(st.lists(st.tuples(st.integers(1, 40), st.sampled_from(NODES)), min_size=1, max_size=14, unique=True))
    records: list[VersionRecord] = []
    tombstones: list[Tombstone] = []
    for hlc_s, node in ids:
        hlc = hlc_s << 16
        marker = draw(st.booleans()) and draw(st.booleans())
        ingested = not marker and draw(st.booleans()) and draw(st.booleans())
        sha = draw(st.sampled_from(SHAS))
        base = VersionRecord(
            bucket=draw(st.sampled_from(BUCKETS)), key=draw(st.sampled_from(KEYS)),
            version_id=str(VersionId(hlc, node)), hlc=hlc, origin=node, size=0 if marker else 3,
            etag='"e"', sha256=None if (marker or ingested) else sha, last_modified_ms=hlc_s,
            delete_marker=marker, tags=draw(st.dictionaries(st.sampled_from("ab"), st.sampled_from("xy"), max_size=1)),
        )
        # Snapshots of this version as nodes may hold it: hashed or not (an
        # ingested file), with its tags as set at some (HLC, node) stamp.
        tag_states = [(base.tags, "")] + [
            (tags, str(VersionId((hlc_s + t) << 16, n)))
            for t, n, tags in draw(st.lists(st.tuples(
                st.integers(1, 20), st.sampled_from(NODES),
                st.dictionaries(st.sampled_from("abc"), st.sampled_from("xyz"), max_size=2)),
                max_size=2, unique_by=lambda x: (x[0], x[1])))
        ]
        for hashed in ((False, True) if ingested else (False,)):
            for tags, stamp in tag_states:
                r = replace(base, tags=tags, tags_stamp=stamp)
                if hashed:
                    r = replace(r, sha256=sha, checksums={"sha256": base64.b64encode(bytes.fromhex(sha)).decode()})
                records.append(r)
        for when in draw(st.lists(st.integers(1, 60), max_size=2)):  # deleted, maybe at two nodes
            tombstones.append(Tombstone(base.bucket, base.key, base.version_id, when << 16))
    return Universe(records, tombstones)


def apply(cat: SqliteCatalog, items: list[VersionRecord | Tombstone]) -> None:
    for item in items:
        if isinstance(item, Tombstone):
            cat.merge_tombstone(item)
        else:
            cat.merge_version(item)


def state(cat: SqliteCatalog) -> dict:
    q = cat.conn.execute
    return {
        "versions": q("SELECT * FROM versions ORDER BY bucket, key, version_id").fetchall(),
        "current": q("SELECT * FROM current ORDER BY bucket, key").fetchall(),
        "tombstones": q("SELECT * FROM tombstones ORDER BY bucket, key, version_id").fetchall(),
        "refs": q("SELECT * FROM refs ORDER BY content_id").fetchall(),
        "objects": [(v.key, v.version_id) for v in cat.list_objects("known", "", "", None, 1000).versions],
        "by_prefix": cat.list_objects("known", "", "/", None, 1000).common_prefixes,
        "listed": [(lv.version.key, lv.version.version_id, lv.is_latest)
                   for lv in cat.list_versions("known", "", "", None, None, 1000).versions],
    }


def fresh() -> SqliteCatalog:
    cat = SqliteCatalog(Path(":memory:"))
    cat.create_bucket(BucketRecord("known", "o", 1))
    return cat


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(universe=universes(), data=st.data())
def test_any_order_and_duplication_gives_the_same_catalog(universe: Universe, data) -> None:
    items: list[VersionRecord | Tombstone] = [*universe.records, *universe.tombstones]
    shuffled = data.draw(st.permutations(items))
    repeated = data.draw(st.lists(st.sampled_from(items), max_size=len(items)))
    at = data.draw(st.integers(0, len(shuffled)))
    delivered = shuffled[:at] + repeated + shuffled[at:]
    reference, other = fresh(), fresh()
    try:
        apply(reference, items)
        apply(other, delivered)
        assert state(other) == state(reference)
        check_laws(reference, universe)
    finally:
        reference.close()
        other.close()


def check_laws(cat: SqliteCatalog, universe: Universe) -> None:
    """The converged catalog is the one the merge laws describe."""
    buried: dict[tuple[str, str, str], int] = {}
    for t in universe.tombstones:
        ident = (t.bucket, t.key, t.version_id)
        buried[ident] = min(buried.get(ident, t.deleted_hlc), t.deleted_hlc)
    expected: dict[tuple[str, str, str], VersionRecord] = {}
    for r in universe.records:
        ident = (r.bucket, r.key, r.version_id)
        if ident in buried:
            continue
        seen = expected.get(ident)
        if seen is None:
            expected[ident] = r
            continue
        if r.sha256 is not None and seen.sha256 is None:
            seen = replace(seen, sha256=r.sha256, checksums=r.checksums)
        if r.tags_stamp > seen.tags_stamp:
            seen = replace(seen, tags=r.tags, tags_stamp=r.tags_stamp)
        expected[ident] = seen
    for (bucket, key, version_id), want in expected.items():
        assert cat.get_version(bucket, key, version_id) == want
    for (bucket, key, version_id), when in buried.items():
        assert cat.get_version(bucket, key, version_id) is None
        assert cat.get_tombstone(bucket, key, version_id) == Tombstone(bucket, key, version_id, when)
    keys = {(b, k) for b, k, _ in expected}
    for bucket, key in keys:
        newest = max(vid for b, k, vid in expected if (b, k) == (bucket, key))
        assert cat.get_version(bucket, key, None).version_id == newest
    refs: dict[str, int] = {}
    for v in expected.values():
        if v.sha256 is not None:
            refs[v.sha256] = refs.get(v.sha256, 0) + 1
    assert dict(cat.conn.execute("SELECT content_id, count FROM refs").fetchall()) == refs


def test_a_version_after_its_tombstone_never_comes_back() -> None:
    cat = fresh()
    try:
        v = VersionRecord("known", "k", str(VersionId(5 << 16, NODES[0])), 5 << 16, NODES[0], 3, '"e"',
                          SHAS[0], 5)
        assert cat.merge_tombstone(Tombstone("known", "k", v.version_id, 9 << 16)) == []
        assert not cat.merge_version(v)
        assert cat.get_version("known", "k", None) is None
        assert cat.list_objects("known", "", "", None, 10).versions == []
    finally:
        cat.close()


@pytest.mark.parametrize("first", ["base", "hashed"])
def test_an_ingested_digest_is_filled_in_once(first: str) -> None:
    base = VersionRecord("known", "f", str(VersionId(5 << 16, NODES[1])), 5 << 16, NODES[1], 3, '"e"', None, 5)
    hashed = replace(base, sha256=SHAS[1], checksums={"sha256": base64.b64encode(bytes.fromhex(SHAS[1])).decode()})
    cat = fresh()
    try:
        order = [base, hashed] if first == "base" else [hashed, base]
        assert cat.merge_version(order[0])
        assert cat.merge_version(order[1]) == (first == "base")
        assert cat.get_version("known", "f", None) == hashed
        assert cat.blob_refs(SHAS[1]) == 1
    finally:
        cat.close()
