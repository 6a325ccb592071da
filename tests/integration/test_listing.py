"""ListObjects (V1), ListObjectsV2 and ListObjectVersions against a real node, with boto3."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_plus

import botocore.handlers
import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.timeout(300)

# Keys that stress byte order (UTF-8, not UTF-16 or code-point-by-locale), XML
# escaping and URL encoding; `..` segments are plain key bytes in S3.
ODD_KEYS = [
    "a b/c d.txt", "a+b", "a%20b", "q?x=1&y=<2>", "hash#frag", "semi;colon", "quote'\"",
    "tab\there", "dots/../up", "../lead", "x/./y", "é/日本.txt", "\ufffd", "\U0001f600.bin",
    "z~tilde", "A-upper",
]


def utf8_sorted(keys) -> list[str]:
    return sorted(keys, key=str.encode)


def put_keys(s3, bucket: str, keys, workers: int = 8) -> None:
    def put(k: str) -> None:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, keys))


def error_of(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as ei:
        call()
    err = ei.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def raw_bodies(s3, op: str) -> list[bytes]:
    """Record the raw XML of every `op` response (before botocore parses it)."""
    bodies: list[bytes] = []
    s3.meta.events.register(f"before-parse.s3.{op}",
                            lambda response_dict, **kw: bodies.append(response_dict["body"]))
    return bodies


@pytest.fixture
def tree(s3, bucket) -> tuple[str, list[str]]:
    keys = ["asdf", "boo/bar", "boo/baz/xyzzy", "cquux/thud", "cquux/bla", "dir/", "dir/sub/a",
            "dir/sub/b", "e"] + [f"many/{i:03d}" for i in range(25)]
    put_keys(s3, bucket, keys)
    return bucket, keys


@pytest.fixture(scope="module")
def big_bucket(node) -> tuple[str, list[str]]:
    """A bucket with more than 1000 keys, shared by the max-keys tests."""
    s3 = node.client(max_pool_connections=16)
    name = f"big-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    keys = [f"k/{i:05d}" for i in range(1105)] + ["top"]
    put_keys(s3, name, keys, workers=12)
    return name, keys


# -- V1 -----------------------------------------------------------------------


def test_v1_lists_in_utf8_order_with_owner(s3, bucket):
    put_keys(s3, bucket, ODD_KEYS)
    r = s3.list_objects(Bucket=bucket)
    assert [o["Key"] for o in r["Contents"]] == utf8_sorted(ODD_KEYS)
    assert r["IsTruncated"] is False and r["MaxKeys"] == 1000
    assert all(o["Owner"]["ID"] for o in r["Contents"])
    assert all(o["Size"] == 1 and o["ETag"].startswith('"') for o in r["Contents"])


def test_v1_delimiter_and_markers(s3, tree):
    bucket, _ = tree
    r = s3.list_objects(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["asdf", "e"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["boo/", "cquux/", "dir/", "many/"]
    assert r["Delimiter"] == "/"
    # Paging by one: NextMarker is the last key or common prefix of the page.
    r = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert r["IsTruncated"] and r["NextMarker"] == "boo/"
    r = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2, Marker=r["NextMarker"])
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["cquux/", "dir/"]
    assert r["Marker"] == "boo/" and r["NextMarker"] == "dir/"
    # A marker inside a common prefix skips the rest of that prefix.
    r = s3.list_objects(Bucket=bucket, Delimiter="/", Marker="boo/bar")
    assert "boo/" not in [p["Prefix"] for p in r.get("CommonPrefixes", [])]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["cquux/", "dir/", "many/"]
    # Prefix plus delimiter: a key equal to the prefix is a key, deeper ones roll up.
    r = s3.list_objects(Bucket=bucket, Prefix="dir/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["dir/"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/sub/"]
    assert r["Prefix"] == "dir/"


@pytest.mark.parametrize("delimiter", ["", "/", "u"])
@pytest.mark.parametrize("page_size", [1, 2, 7])
def test_v1_paginator_walks_everything_once(s3, tree, delimiter, page_size):
    bucket, keys = tree
    full = s3.list_objects(Bucket=bucket, Delimiter=delimiter)
    want = ([o["Key"] for o in full.get("Contents", [])],
            [p["Prefix"] for p in full.get("CommonPrefixes", [])])
    got_keys, got_prefixes = [], []
    for page in s3.get_paginator("list_objects").paginate(
            Bucket=bucket, Delimiter=delimiter, PaginationConfig={"PageSize": page_size}):
        assert len(page.get("Contents", [])) + len(page.get("CommonPrefixes", [])) <= page_size
        got_keys += [o["Key"] for o in page.get("Contents", [])]
        got_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert (got_keys, got_prefixes) == want
    if not delimiter:
        assert got_keys == utf8_sorted(keys)


# -- V2 -----------------------------------------------------------------------


def test_v2_start_after_and_key_count(s3, tree):
    bucket, keys = tree
    r = s3.list_objects_v2(Bucket=bucket, StartAfter="cquux/bla")
    assert [o["Key"] for o in r["Contents"]] == [k for k in utf8_sorted(keys) if k > "cquux/bla"]
    assert r["StartAfter"] == "cquux/bla"
    assert r["KeyCount"] == len(r["Contents"])
    r = s3.list_objects_v2(Bucket=bucket, Prefix="many/", MaxKeys=5, StartAfter="many/010")
    assert [o["Key"] for o in r["Contents"]] == [f"many/{i:03d}" for i in range(11, 16)]
    assert r["IsTruncated"] and r["KeyCount"] == 5
    # Start-after beyond everything: empty, not truncated.
    r = s3.list_objects_v2(Bucket=bucket, StartAfter="zzz")
    assert r["KeyCount"] == 0 and "Contents" not in r and r["IsTruncated"] is False


def test_v2_continuation_tokens(s3, tree):
    bucket, keys = tree
    r1 = s3.list_objects_v2(Bucket=bucket, MaxKeys=3)
    assert r1["IsTruncated"] and "NextContinuationToken" in r1
    r2 = s3.list_objects_v2(Bucket=bucket, MaxKeys=3, ContinuationToken=r1["NextContinuationToken"],
                            StartAfter="zzz")  # start-after is ignored with a token
    assert r2["ContinuationToken"] == r1["NextContinuationToken"]
    assert [o["Key"] for o in r1["Contents"] + r2["Contents"]] == utf8_sorted(keys)[:6]


@pytest.mark.parametrize("delimiter", ["", "/"])
@pytest.mark.parametrize("page_size", [1, 3, 1000])
def test_v2_paginator_walks_everything_once(s3, tree, delimiter, page_size):
    bucket, keys = tree
    got_keys, got_prefixes, pages = [], [], 0
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Delimiter=delimiter, PaginationConfig={"PageSize": page_size}):
        pages += 1
        assert page["KeyCount"] == len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        got_keys += [o["Key"] for o in page.get("Contents", [])]
        got_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert len(got_keys) == len(set(got_keys)) and len(got_prefixes) == len(set(got_prefixes))
    if delimiter:
        assert got_keys == ["asdf", "e"] and got_prefixes == ["boo/", "cquux/", "dir/", "many/"]
    else:
        assert got_keys == utf8_sorted(keys) and got_prefixes == []
    assert pages == max(1, -(-(len(got_keys) + len(got_prefixes)) // page_size))


@pytest.mark.parametrize("token", ["garbage", "YQ==", "!!!", "a" * 5, "%ff"])
def test_v2_garbage_continuation_token_is_invalid_argument(s3, tree, token):
    bucket, _ = tree
    assert error_of(lambda: s3.list_objects_v2(Bucket=bucket, ContinuationToken=token)) == (
        "InvalidArgument", 400)


def test_v2_fetch_owner(s3, tree):
    bucket, _ = tree
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket, FetchOwner=False)["Contents"][0]
    owner = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]["Owner"]
    assert owner["ID"] == s3.list_buckets()["Owner"]["ID"]


# -- max-keys -----------------------------------------------------------------


@pytest.mark.parametrize("op", ["list_objects", "list_objects_v2", "list_object_versions"])
def test_max_keys_zero_is_empty_and_not_truncated(s3, tree, op):
    bucket, _ = tree
    r = getattr(s3, op)(Bucket=bucket, MaxKeys=0)
    assert r["MaxKeys"] == 0 and r["IsTruncated"] is False
    assert not r.get("Contents") and not r.get("Versions") and not r.get("CommonPrefixes")


@pytest.mark.parametrize("op,items", [("list_objects", "Contents"), ("list_objects_v2", "Contents"),
                                      ("list_object_versions", "Versions")])
def test_max_keys_one_thousand_and_cap(s3, big_bucket, op, items):
    bucket, keys = big_bucket
    call = getattr(s3, op)
    r = call(Bucket=bucket, MaxKeys=1)
    assert len(r[items]) == 1 and r["IsTruncated"] is True
    for asked in (1000, 1001, 5000):
        r = call(Bucket=bucket, MaxKeys=asked)
        assert len(r[items]) == 1000 and r["IsTruncated"] is True and r["MaxKeys"] == 1000
    r = call(Bucket=bucket)  # the default is 1000 too
    assert len(r[items]) == 1000 and r["IsTruncated"] is True


def test_default_paginators_cross_the_thousand(s3, big_bucket):
    bucket, keys = big_bucket
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    assert [len(p["Contents"]) for p in pages] == [1000, len(keys) - 1000]
    assert [o["Key"] for p in pages for o in p["Contents"]] == utf8_sorted(keys)
    v1 = [o["Key"] for p in s3.get_paginator("list_objects").paginate(Bucket=bucket) for o in p["Contents"]]
    assert v1 == utf8_sorted(keys)
    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["k/"]
    assert [o["Key"] for o in r["Contents"]] == ["top"] and r["IsTruncated"] is False


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "99999999999999999999999"])
@pytest.mark.parametrize("op", ["list_objects", "list_objects_v2", "list_object_versions"])
def test_bad_max_keys_is_invalid_argument(s3, bucket, op, value):
    client = s3
    # botocore validates MaxKeys as an integer; send the raw string on the wire instead.
    def inject(params, **kw):
        assert "max-keys=1" in params["url"]
        params["url"] = params["url"].replace("max-keys=1", f"max-keys={value}")
    event = {"list_objects": "ListObjects", "list_objects_v2": "ListObjectsV2",
             "list_object_versions": "ListObjectVersions"}[op]
    client.meta.events.register(f"before-call.s3.{event}", inject)
    try:
        code, status = error_of(lambda: getattr(client, op)(Bucket=bucket, MaxKeys=1))
    finally:
        client.meta.events.unregister(f"before-call.s3.{event}", inject)
    assert (code, status) == ("InvalidArgument", 400)


# -- encoding-type=url ---------------------------------------------------------


def test_encoding_type_url_round_trips_odd_keys(s3, bucket):
    put_keys(s3, bucket, ODD_KEYS)
    # botocore asks for url encoding by itself and decodes: keys come back intact.
    r = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in r["Contents"]] == utf8_sorted(ODD_KEYS)
    r = s3.list_objects(Bucket=bucket, Prefix="é/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["é/日本.txt"]
    # S3 encodes the V1 Prefix too, but botocore does not decode that one element.
    assert unquote_plus(r["Prefix"]) == "é/"
    r = s3.list_object_versions(Bucket=bucket)
    assert [v["Key"] for v in r["Versions"]] == utf8_sorted(ODD_KEYS)


def test_encoding_type_url_on_the_wire(s3, bucket):
    put_keys(s3, bucket, ["a b/c d", "é/x", "p+q", "lt<gt>&amp"])
    bodies = raw_bodies(s3, "ListObjectsV2")
    # Asked for explicitly, botocore leaves the values encoded.
    r = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Delimiter="/", Prefix="")
    assert r["EncodingType"] == "url"
    assert [o["Key"] for o in r["Contents"]] == ["lt%3Cgt%3E%26amp", "p%2Bq"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a%20b/", "%C3%A9/"]
    assert b"<Key>p%2Bq</Key>" in bodies[-1]
    r = s3.list_objects(Bucket=bucket, EncodingType="url", Prefix="a b/", Marker="a b/")
    assert r["Prefix"] == "a%20b/" and r["Marker"] == "a%20b/"
    assert [o["Key"] for o in r["Contents"]] == ["a%20b/c%20d"]


def test_without_encoding_type_keys_are_xml_escaped(s3, bucket):
    keys = ["lt<gt>&amp", "quote'\"", "é/日"]
    put_keys(s3, bucket, keys)
    bodies = raw_bodies(s3, "ListObjects")
    s3.meta.events.unregister("before-parameter-build.s3.ListObjects",
                              botocore.handlers.set_list_objects_encoding_type_url)
    r = s3.list_objects(Bucket=bucket)
    assert "EncodingType" not in r
    assert [o["Key"] for o in r["Contents"]] == utf8_sorted(keys)
    assert b"lt&lt;gt&gt;&amp;amp" in bodies[-1]
    assert "é/日".encode() in bodies[-1]


def test_invalid_encoding_type(s3, bucket):
    assert error_of(lambda: s3.list_objects_v2(Bucket=bucket, EncodingType="base64")) == (
        "InvalidArgument", 400)


# -- versions -----------------------------------------------------------------


@pytest.fixture
def versioned(s3, bucket):
    """a: 3 versions; b: a version then a delete marker; c/d, c/e: one each; f: deleted twice."""
    vids: dict[str, list[str]] = {}
    for key, n in (("a", 3), ("b", 1), ("c/d", 1), ("c/e", 1), ("f", 1)):
        for i in range(n):
            vids.setdefault(key, []).append(s3.put_object(Bucket=bucket, Key=key, Body=b"%d" % i)["VersionId"])
    for key in ("b", "f", "f"):
        vids[key].append(s3.delete_object(Bucket=bucket, Key=key)["VersionId"])
    return bucket, vids


def _entries(page) -> list[tuple[str, str, bool, bool]]:
    out = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in page.get("Versions", [])]
    out += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in page.get("DeleteMarkers", [])]
    # Newest first within a key; version ids sort by time.
    return sorted(out, key=lambda e: (e[0].encode(), [-ord(ch) for ch in e[1]]))


def test_versions_newest_first_with_delete_markers(s3, versioned):
    bucket, vids = versioned
    r = s3.list_object_versions(Bucket=bucket)
    want = []
    for key in ("a", "b", "c/d", "c/e", "f"):
        markers = {"b": 1, "f": 2}.get(key, 0)
        for i, vid in enumerate(reversed(vids[key])):
            want.append((key, vid, i == 0, i < markers))
    assert _entries(r) == want
    assert r["IsTruncated"] is False
    # ListObjects hides keys whose current version is a delete marker.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["a", "c/d", "c/e"]


def test_versions_markers_and_delimiter(s3, versioned):
    bucket, vids = versioned
    r = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    assert r["IsTruncated"] and r["NextKeyMarker"] == "a" and r["NextVersionIdMarker"] == vids["a"][1]
    r = s3.list_object_versions(Bucket=bucket, KeyMarker="a", VersionIdMarker=vids["a"][1], MaxKeys=2)
    assert [(e[0], e[1]) for e in _entries(r)] == [("a", vids["a"][0]), ("b", vids["b"][1])]
    assert r["KeyMarker"] == "a" and r["VersionIdMarker"] == vids["a"][1]
    r = s3.list_object_versions(Bucket=bucket, KeyMarker="a")  # after every version of "a"
    assert _entries(r)[0][:2] == ("b", vids["b"][1])
    r = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["c/"]
    assert {e[0] for e in _entries(r)} == {"a", "b", "f"}
    r = s3.list_object_versions(Bucket=bucket, Prefix="c/")
    assert [e[0] for e in _entries(r)] == ["c/d", "c/e"]


@pytest.mark.parametrize("page_size", [1, 2, 3, 5])
@pytest.mark.parametrize("delimiter", ["", "/"])
def test_versions_paginator_walks_everything_once(s3, versioned, page_size, delimiter):
    bucket, _ = versioned
    full = s3.list_object_versions(Bucket=bucket, Delimiter=delimiter)
    got, prefixes = [], []
    for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Delimiter=delimiter, PaginationConfig={"PageSize": page_size}):
        n = len(page.get("Versions", [])) + len(page.get("DeleteMarkers", [])) + len(page.get("CommonPrefixes", []))
        assert n <= page_size
        assert n == page_size or not page["IsTruncated"]
        got += _entries(page)
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert got == _entries(full)
    assert prefixes == [p["Prefix"] for p in full.get("CommonPrefixes", [])]


def test_bad_version_id_markers(s3, versioned):
    bucket, vids = versioned
    assert error_of(lambda: s3.list_object_versions(Bucket=bucket, VersionIdMarker=vids["a"][0])) == (
        "InvalidArgument", 400)
    assert error_of(lambda: s3.list_object_versions(Bucket=bucket, KeyMarker="a", VersionIdMarker="garbage")) == (
        "InvalidArgument", 400)
    # "null" names the null version, which never exists here: the listing goes on after the key.
    r = s3.list_object_versions(Bucket=bucket, KeyMarker="a", VersionIdMarker="null")
    assert _entries(r)[0][0] == "b"


# -- errors -------------------------------------------------------------------


@pytest.mark.parametrize("op", ["list_objects", "list_objects_v2", "list_object_versions"])
def test_no_such_bucket(s3, op):
    assert error_of(lambda: getattr(s3, op)(Bucket=f"missing-{uuid.uuid4().hex[:8]}")) == (
        "NoSuchBucket", 404)


def test_listing_sees_deletes_and_new_versions(s3, bucket):
    put_keys(s3, bucket, ["x", "y", "z"])
    s3.delete_object(Bucket=bucket, Key="y")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["x", "z"]
    s3.put_object(Bucket=bucket, Key="y", Body=b"back")
    r = s3.list_objects_v2(Bucket=bucket)
    assert [(o["Key"], o["Size"]) for o in r["Contents"]] == [("x", 1), ("y", 4), ("z", 1)]
    # Deleting the only versions of a key removes it from every listing.
    for v in s3.list_object_versions(Bucket=bucket, Prefix="x")["Versions"]:
        s3.delete_object(Bucket=bucket, Key="x", VersionId=v["VersionId"])
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["y", "z"]
    assert "x" not in {v["Key"] for v in s3.list_object_versions(Bucket=bucket).get("Versions", [])}


# -- the listing benchmark keeps working ---------------------------------------


def test_listing_bench_smoke(tmp_path):
    """bench/listing.py at a small size: it checks every listing's entry count itself."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "listing.json"
    proc = subprocess.run(
        [sys.executable, str(root / "bench" / "listing.py"), "--keys", "3000", "--runs", "1",
         "--json", str(out), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {(f["layer"], f["listing"]): f for f in result["figures"]}
    assert rows[("node", "flat")]["entries"] == result["keys"]["visible_keys"] == 2970
    assert rows[("catalog", "root delimiter")]["entries"] == 10
    assert rows[("node", "versions")]["entries"] == 3000 + 300 + 30
