"""Model-based tests of the catalog's listings against a brute-force model of S3.

The model keeps every version of every key in a dict and computes listings the
slow, obvious way: sort the keys by their UTF-8 bytes, roll keys up into common
prefixes, drop what lies at or before the markers, cut at the limit. The catalog
must agree on every page, and paging with the markers it returns must walk the
whole listing exactly once for every page size.
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshd.model import BucketRecord, VersionRecord
from meshd.catalog.store import SqliteCatalog
from meshd.hlc import VersionId

pytestmark = pytest.mark.timeout(600)

# Pieces that stress byte order and delimiters: ASCII below and above "/",
# two- three- and four-byte UTF-8 (U+FFFD sorts before U+1F600 in UTF-8 but
# after it in UTF-16), and strings that are multi-character delimiters.
PIECES = ["a", "b", "/", "-", "~", " ", "é", "日", "\ufffd", "\U0001f600", "ab", "//"]
DELIMITERS = ["", "/", "-", "//", "ab", "é", "日", "\U0001f600", "a"]
ORIGIN = "00000000000000a1"

keys_st = st.lists(st.sampled_from(PIECES), min_size=1, max_size=5).map("".join)


@dataclass
class Model:
    """key -> [(version_id, is_delete_marker)], oldest first."""

    versions: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def current(self, key: str) -> tuple[str, bool] | None:
        vs = self.versions.get(key)
        return max(vs) if vs else None

    def sorted_keys(self) -> list[str]:
        return sorted((k for k, vs in self.versions.items() if vs), key=str.encode)


def common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter or not key.startswith(prefix):
        return None
    i = key.find(delimiter, len(prefix))
    return key[: i + len(delimiter)] if i >= 0 else None


def model_object_entries(m: Model, prefix: str, delimiter: str) -> list[tuple[str, str]]:
    """The whole listing: ("key", key) or ("cp", prefix), in order, no markers."""
    out: list[tuple[str, str]] = []
    for k in m.sorted_keys():
        cur = m.current(k)
        if not k.startswith(prefix) or cur is None or cur[1]:
            continue
        cp = common_prefix(k, prefix, delimiter)
        entry = ("cp", cp) if cp is not None else ("key", k)
        if not out or out[-1] != entry:
            out.append(entry)
    return out


def model_list_objects(m: Model, prefix: str, delimiter: str, after: str | None, limit: int):
    entries = model_object_entries(m, prefix, delimiter)
    if after is not None:
        entries = [e for e in entries if e[1].encode() > after.encode()]
    if limit == 0:
        return [], False, None
    page = entries[:limit]
    truncated = len(entries) > limit
    return page, truncated, page[-1][1] if truncated else None


def model_version_entries(m: Model, prefix: str, delimiter: str) -> list[tuple]:
    """("v", key, version_id, is_delete_marker, is_latest) or ("cp", prefix)."""
    out: list[tuple] = []
    for k in m.sorted_keys():
        if not k.startswith(prefix):
            continue
        cp = common_prefix(k, prefix, delimiter)
        if cp is not None:
            if not out or out[-1] != ("cp", cp):
                out.append(("cp", cp))
            continue
        latest = m.current(k)
        for vid, dm in sorted(m.versions[k], reverse=True):
            out.append(("v", k, vid, dm, (vid, dm) == latest))
    return out


def model_list_versions(m: Model, prefix: str, delimiter: str, key_marker: str | None,
                        vid_marker: str | None, limit: int):
    entries = model_version_entries(m, prefix, delimiter)
    if key_marker is not None:
        km = key_marker.encode()

        def keep(e: tuple) -> bool:
            name = e[1].encode()
            if name > km:
                return True
            # The rest of the marker's own versions, older than the version marker.
            return e[0] == "v" and name == km and vid_marker is not None and e[2] < vid_marker

        entries = [e for e in entries if keep(e)]
    if limit == 0:
        return [], False
    return entries[:limit], len(entries) > limit


# -- driving the catalog ------------------------------------------------------


class Harness:
    """A catalog in a temporary file, a bucket per example, and the model beside it."""

    def __init__(self, catalog: SqliteCatalog, bucket: str) -> None:
        self.c = catalog
        self.bucket = bucket
        self.model = Model()
        self.clock = itertools.count(1)

    def _vid(self) -> str:
        return str(VersionId(next(self.clock) << 16, ORIGIN))

    def put(self, key: str, delete_marker: bool = False) -> None:
        vid = self._vid()
        self.c.put_version(VersionRecord(
            bucket=self.bucket, key=key, version_id=vid, hlc=int(vid[:16], 16), origin=ORIGIN,
            size=0 if delete_marker else len(key), etag='"e"',
            sha256=None, last_modified_ms=1, delete_marker=delete_marker,
        ))
        self.model.versions.setdefault(key, []).append((vid, delete_marker))

    def delete_version(self, key: str, index: int) -> None:
        vs = self.model.versions.get(key)
        if not vs:
            return
        vid, _ = vs.pop(index % len(vs))
        removed, _ = self.c.delete_version(self.bucket, key, vid, 1 << 16)
        assert removed is not None and removed.version_id == vid

    def apply(self, ops: list[tuple]) -> None:
        for op in ops:
            if op[0] == "put":
                self.put(op[1])
            elif op[0] == "delete":
                self.put(op[1], delete_marker=True)
            else:
                self.delete_version(op[1], op[2])

    def list_objects(self, prefix: str, delimiter: str, after: str | None, limit: int):
        page = self.c.list_objects(self.bucket, prefix, delimiter, after, limit)
        # Keys and prefixes come back as two lists; interleave them in key order
        # (a key never equals a common prefix, so the order is total).
        entries = [("key", v.key) for v in page.versions] + [("cp", p) for p in page.common_prefixes]
        merged = sorted(entries, key=lambda e: e[1].encode())
        for v in page.versions:
            cur = self.model.current(v.key)
            assert cur is not None and v.version_id == cur[0] and not v.delete_marker
        return merged, page.is_truncated, page.next_marker

    def list_versions(self, prefix: str, delimiter: str, key_marker: str | None,
                      vid_marker: str | None, limit: int):
        page = self.c.list_versions(self.bucket, prefix, delimiter, key_marker, vid_marker, limit)
        versions = [("v", lv.version.key, lv.version.version_id, lv.version.delete_marker, lv.is_latest)
                    for lv in page.versions]
        # Versions of one key keep their order (newest first); merge prefixes in by name.
        merged = sorted(versions + [("cp", p) for p in page.common_prefixes],
                        key=lambda e: (e[1].encode(), "" if e[0] == "cp" else _desc(e[2])))
        assert [e for e in merged if e[0] == "v"] == versions, "versions out of order"
        return merged, page


def _desc(vid: str) -> str:
    return "".join(chr(0x10FFFF - ord(ch)) for ch in vid)


_counter = itertools.count()


@pytest.fixture(scope="module")
def catalog():
    with tempfile.TemporaryDirectory() as d:
        c = SqliteCatalog(Path(d) / "catalog.db")
        # Durability is not under test here; fsync per write would only be slow.
        c._conn.execute("PRAGMA synchronous=OFF")
        yield c
        c.close()


def new_harness(catalog: SqliteCatalog) -> Harness:
    name = f"b{next(_counter)}"
    catalog.create_bucket(BucketRecord(name, "owner", 0))
    return Harness(catalog, name)


@st.composite
def scenario(draw):
    # A pool of keys, each put at least once, then more puts, delete markers and
    # version deletes on them, so listings have many entries, versions and hidden keys.
    pool = draw(st.lists(keys_st, min_size=3, max_size=20, unique=True))
    kinds = st.sampled_from(["put", "put", "delete", "vdel"])
    ops = [("put", k, 0) for k in pool]
    ops += draw(st.lists(st.tuples(kinds, st.sampled_from(pool), st.integers(0, 10)),
                         min_size=5, max_size=40))
    ops = draw(st.permutations(ops))
    # Prefixes and markers: mostly none or beginnings of real keys, sometimes free strings.
    near = st.sampled_from(pool).flatmap(lambda k: st.integers(0, len(k)).map(lambda i: k[:i]))
    prefix = draw(st.sampled_from(["", "", "near", "free"]).flatmap(
        lambda c: {"": st.just(""), "near": near, "free": keys_st}[c]))
    delimiter = draw(st.sampled_from(DELIMITERS))
    marker = draw(st.one_of(st.none(), near, keys_st, st.sampled_from(pool).map(lambda k: k + "/")))
    return ops, prefix, delimiter, marker


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(0, 12))
def test_list_objects_matches_model(catalog, case, limit):
    ops, prefix, delimiter, after = case
    h = new_harness(catalog)
    h.apply(ops)
    got = h.list_objects(prefix, delimiter, after, limit)
    assert got == model_list_objects(h.model, prefix, delimiter, after, limit)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(0, 12), st.data())
def test_list_versions_matches_model(catalog, case, limit, data):
    ops, prefix, delimiter, key_marker = case
    h = new_harness(catalog)
    h.apply(ops)
    vid_marker = None
    if key_marker is not None:
        existing = [vid for vid, _ in h.model.versions.get(key_marker, [])]
        vid_marker = data.draw(st.one_of(st.none(), st.sampled_from(existing)) if existing else st.none())
    entries, page = h.list_versions(prefix, delimiter, key_marker, vid_marker, limit)
    want, truncated = model_list_versions(h.model, prefix, delimiter, key_marker, vid_marker, limit)
    assert entries == want
    assert page.is_truncated == truncated
    if truncated:
        last = want[-1]
        assert page.next_key_marker == last[1]
        assert page.next_version_id_marker == (last[2] if last[0] == "v" else None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_paging_objects_walks_everything_once(catalog, case):
    """V1 NextMarker / V2 continuation: for every page size, the pages add up."""
    ops, prefix, delimiter, _ = case
    h = new_harness(catalog)
    h.apply(ops)
    full = model_object_entries(h.model, prefix, delimiter)
    for size in range(1, len(full) + 2):
        seen: list = []
        marker = None
        while True:
            entries, truncated, next_marker = h.list_objects(prefix, delimiter, marker, size)
            assert len(entries) <= size
            seen += entries
            if not truncated:
                assert next_marker is None
                break
            assert len(entries) == size, "a truncated page must be full"
            assert next_marker == entries[-1][1]
            marker = next_marker
        assert seen == full, f"page size {size}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_paging_versions_walks_everything_once(catalog, case):
    ops, prefix, delimiter, _ = case
    h = new_harness(catalog)
    h.apply(ops)
    full = model_version_entries(h.model, prefix, delimiter)
    for size in range(1, len(full) + 2):
        seen: list = []
        km = vm = None
        while True:
            entries, page = h.list_versions(prefix, delimiter, km, vm, size)
            assert len(entries) <= size
            seen += entries
            if not page.is_truncated:
                assert page.next_key_marker is None and page.next_version_id_marker is None
                break
            assert len(entries) == size, "a truncated page must be full"
            km, vm = page.next_key_marker, page.next_version_id_marker
        assert seen == full, f"page size {size}"


def test_utf8_order_differs_from_utf16():
    """A fixed case the random ones may miss: U+FFFD < U+1F600 in UTF-8 bytes."""
    with tempfile.TemporaryDirectory() as d:
        c = SqliteCatalog(Path(d) / "c.db")
        try:
            h = new_harness(c)
            for k in ["\U0001f600", "\ufffd", "z", "é", "日"]:
                h.put(k)
            got, _, _ = h.list_objects("", "", None, 10)
            assert [e[1] for e in got] == ["z", "é", "日", "\ufffd", "\U0001f600"]
        finally:
            c.close()


def test_sqlite_compares_blobs_bytewise():
    # The catalog relies on memcmp order of BLOB keys; pin it.
    conn = sqlite3.connect(":memory:")
    rows = conn.execute(
        "SELECT k FROM (SELECT ? AS k UNION ALL SELECT ? UNION ALL SELECT ?) ORDER BY k",
        ("\U0001f600".encode(), "\ufffd".encode(), b"a"),
    ).fetchall()
    assert [r[0] for r in rows] == [b"a", "\ufffd".encode(), "\U0001f600".encode()]


# -- multipart uploads (ListMultipartUploads shares the walk) ------------------


def model_upload_entries(uploads: list[tuple[str, str]], prefix: str, delimiter: str) -> list[tuple]:
    out: list[tuple] = []
    for key, uid in sorted(uploads, key=lambda u: (u[0].encode(), u[1])):
        if not key.startswith(prefix):
            continue
        cp = common_prefix(key, prefix, delimiter)
        entry = ("cp", cp) if cp is not None else ("u", key, uid)
        if not out or out[-1] != entry:
            out.append(entry)
    return out


def model_list_uploads(uploads, prefix, delimiter, key_marker, uid_marker, limit):
    entries = model_upload_entries(uploads, prefix, delimiter)
    if key_marker is not None:
        km = key_marker.encode()
        entries = [e for e in entries if e[1].encode() > km
                   or (e[0] == "u" and e[1].encode() == km and uid_marker is not None and e[2] > uid_marker)]
    if limit == 0:
        return [], False
    return entries[:limit], len(entries) > limit


def make_uploads(h: Harness, keys: list[str]) -> list[tuple[str, str]]:
    from meshd.model import UploadRecord

    made = []
    for i, key in enumerate(keys):
        uid = f"{h.bucket}-{i:04d}"
        h.c.create_upload(UploadRecord(uid, h.bucket, key, 0, "owner"))
        made.append((key, uid))
    return made


def listed_uploads(h: Harness, prefix, delimiter, km, um, limit):
    page = h.c.list_uploads(h.bucket, prefix, delimiter, km, um, limit)
    entries = sorted([("u", u.key, u.upload_id) for u in page.uploads] + [("cp", p) for p in page.common_prefixes],
                     key=lambda e: (e[1].encode(), e[2] if e[0] == "u" else ""))
    return entries, page


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(0, 8), st.data())
def test_list_uploads_matches_model_and_pages(catalog, case, limit, data):
    ops, prefix, delimiter, key_marker = case
    h = new_harness(catalog)
    # Several uploads per key, so the upload id marker matters.
    uploads = make_uploads(h, [op[1] for op in ops])
    uid_marker = None
    if key_marker is not None:
        ids = [uid for k, uid in uploads if k == key_marker]
        uid_marker = data.draw(st.one_of(st.none(), st.sampled_from(ids)) if ids else st.none())
    entries, page = listed_uploads(h, prefix, delimiter, key_marker, uid_marker, limit)
    want, truncated = model_list_uploads(uploads, prefix, delimiter, key_marker, uid_marker, limit)
    assert (entries, page.is_truncated) == (want, truncated)
    full = model_upload_entries(uploads, prefix, delimiter)
    for size in range(1, len(full) + 2):
        seen: list = []
        km = um = None
        while True:
            entries, page = listed_uploads(h, prefix, delimiter, km, um, size)
            seen += entries
            if not page.is_truncated:
                break
            assert len(entries) == size
            km, um = page.next_key_marker, page.next_upload_id_marker
        assert seen == full, f"page size {size}"


# -- listing XML: the fast renderer must write exactly what the generic one does --------

_names = st.sampled_from(["Key", "Prefix", "Contents", "Owner", "ID", "Size", "CommonPrefixes"])
_texts = st.one_of(st.none(), st.text(st.characters(codec="utf-8"), max_size=12))
_plain = st.recursive(
    _texts,
    lambda inner: st.one_of(st.dictionaries(_names, inner, max_size=4),
                            st.lists(st.one_of(_texts, st.dictionaries(_names, inner, max_size=3)), max_size=3)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _plain, max_size=5))
def test_render_matches_xmltodict(body):
    """Our XML writer gives the bytes of xmltodict's (the reference), with the
    characters XML cannot carry raw written as character references."""
    import xmltodict

    from s3gateway.xml import _NEEDS_CHAR_REF, S3_NS, render

    reference = xmltodict.unparse({"ListBucketResult": {"@xmlns": S3_NS, **body}}, full_document=True)
    reference = _NEEDS_CHAR_REF.sub(lambda m: f"&#x{ord(m.group()):X};", reference)
    assert render("ListBucketResult", body) == reference.encode()


@pytest.mark.parametrize("root, body, namespace", [
    ("AccessControlPolicy", {"Owner": {"ID": "a&b"}, "AccessControlList": {"Grant": {
        "Grantee": {"@xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance", "@xsi:type": 'Canonical"<User',
                    "ID": "x"}, "Permission": "FULL_CONTROL"}}}, True),
    ("LocationConstraint", {"#text": "eu-west-1"}, True),
    ("Error", {"Code": "NoSuchKey", "Key": "a<b>&c", "Empty": None, "Flag": True}, False),
])
def test_render_attributes_and_text_match_xmltodict(root, body, namespace):
    import xmltodict

    from s3gateway.xml import S3_NS, render

    content = {"@xmlns": S3_NS, **body} if namespace else body
    assert render(root, body, namespace=namespace) == xmltodict.unparse({root: content}, full_document=True).encode()
