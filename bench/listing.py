"""meshd listing benchmark: 100k keys in one bucket.

    python bench/listing.py                      # 100k keys, 5 runs per figure
    python bench/listing.py --keys 20000 --runs 2 --json /tmp/listing.json

Fills a fresh node's catalog with `--keys` keys in a realistic tree
(`proj-PP/run-RRR/sample-SSSS.dat`: 10 projects, 100 runs each), gives every
10th key a second version and every 100th key a delete marker on top, then
measures, as medians over `--runs` runs:

  catalog (SqliteCatalog called directly, no HTTP):
    * flat: paging through every key by 1000, no delimiter;
    * tree walk: every "directory" listed with delimiter "/", by 1000, which
      also reaches every key (what `rclone lsd`-style tools and s3fs do);
    * root delimiter: one delimiter listing at the bucket root, where all keys
      sit under 10 prefixes;
    * versions: paging through every version and delete marker by 1000;
  node (a real `meshd run`, raw SigV4 HTTP on one keep-alive connection, so the
  figure is the node's, not boto3's XML parsing):
    * the same four through ListObjectsV2 / ListObjectVersions;
  boto3:
    * the ListObjectsV2 paginator over every key (what a boto3 user waits for).

The catalog is filled through `SqliteCatalog.put_version` in transactions of
10,000 versions (the node's own PUT path would take minutes and measures PUT,
not listing). Delete markers hide 1% of the keys, so the listings skip them.
Prints a table and a JSON document: wall time (median and best), requests,
entries/s, and the CPU time of the process that served the listing (this one
for the catalog rows, the node for the others), which moves less than wall
time when other work shares the machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote, unquote_plus, urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/listing.py` from anywhere
    sys.path.insert(0, str(ROOT))

from meshd.model import VersionRecord  # noqa: E402
from meshd.catalog.store import SqliteCatalog  # noqa: E402
from meshd.hlc import VersionId  # noqa: E402
from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY, MeshdProcess  # noqa: E402

BUCKET = "listing"
ORIGIN = "0000000000000be1"
PROJECTS = 10
RUNS_PER_PROJECT = 100
PAGE = 1000
FILL_BATCH = 10_000


# -- filling ----------------------------------------------------------------------


def tree_keys(n: int) -> list[str]:
    per_run = max(1, -(-n // (PROJECTS * RUNS_PER_PROJECT)))
    keys = []
    for i in range(n):
        run, sample = divmod(i, per_run)
        project, run = divmod(run, RUNS_PER_PROJECT)
        keys.append(f"proj-{project:02d}/run-{run:03d}/sample-{sample:04d}.dat")
    return keys


def fill(catalog_path: Path, keys: list[str]) -> dict[str, int]:
    cat = SqliteCatalog(catalog_path)
    hlc = (int(time.time() * 1000) << 16)
    counts = {"keys": len(keys), "versions": 0, "delete_markers": 0}

    def record(key: str, i: int, *, dm: bool = False) -> VersionRecord:
        nonlocal hlc
        hlc += 1
        sha = None if dm else f"{i:064x}"
        return VersionRecord(
            bucket=BUCKET, key=key, version_id=str(VersionId(hlc, ORIGIN)), hlc=hlc, origin=ORIGIN,
            size=0 if dm else 4096, etag='"d41d8cd98f00b204e9800998ecf8427e"', sha256=sha,
            last_modified_ms=hlc >> 16, delete_marker=dm, content_type="application/octet-stream",
        )

    try:
        for start in range(0, len(keys), FILL_BATCH):
            with cat._tx():  # put_version joins the enclosing transaction
                for i in range(start, min(start + FILL_BATCH, len(keys))):
                    cat.put_version(record(keys[i], i))
                    counts["versions"] += 1
                    if i % 10 == 0:
                        cat.put_version(record(keys[i], i + len(keys)))
                        counts["versions"] += 1
                    if i % 100 == 50:
                        cat.put_version(record(keys[i], i, dm=True))
                        counts["delete_markers"] += 1
        cat._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        cat.close()
    counts["visible_keys"] = counts["keys"] - counts["delete_markers"]
    return counts


# -- the four listings, against the catalog ------------------------------------------


@dataclass
class Walk:
    entries: int  # keys + common prefixes (+ versions for version listings)
    requests: int


def catalog_flat(cat: SqliteCatalog) -> Walk:
    n = requests = 0
    after = None
    while True:
        page = cat.list_objects(BUCKET, "", "", after, PAGE)
        n += len(page.versions) + len(page.common_prefixes)
        requests += 1
        if not page.is_truncated:
            return Walk(n, requests)
        after = page.next_marker


def catalog_tree(cat: SqliteCatalog) -> Walk:
    n = requests = 0
    todo = [""]
    while todo:
        prefix = todo.pop()
        after = None
        while True:
            page = cat.list_objects(BUCKET, prefix, "/", after, PAGE)
            requests += 1
            n += len(page.versions) + len(page.common_prefixes)
            todo += page.common_prefixes
            if not page.is_truncated:
                break
            after = page.next_marker
    return Walk(n, requests)


def catalog_root(cat: SqliteCatalog) -> Walk:
    page = cat.list_objects(BUCKET, "", "/", None, PAGE)
    assert not page.is_truncated
    return Walk(len(page.versions) + len(page.common_prefixes), 1)


def catalog_versions(cat: SqliteCatalog) -> Walk:
    n = requests = 0
    km = vm = None
    while True:
        page = cat.list_versions(BUCKET, "", "", km, vm, PAGE)
        n += len(page.versions) + len(page.common_prefixes)
        requests += 1
        if not page.is_truncated:
            return Walk(n, requests)
        km, vm = page.next_key_marker, page.next_version_id_marker


# -- the same over HTTP ----------------------------------------------------------------


class RawS3:
    """Signed GETs on one keep-alive connection; bodies are scanned with regexes."""

    def __init__(self, endpoint: str) -> None:
        from botocore.auth import SigV4Auth
        from botocore.credentials import Credentials

        self.endpoint = endpoint
        u = urlsplit(endpoint)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        self.auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION)

    def get(self, query: dict[str, str]) -> bytes:
        from botocore.awsrequest import AWSRequest

        qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query.items()))
        url = f"{self.endpoint}/{BUCKET}?{qs}"
        req = AWSRequest("GET", url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        self.auth.add_auth(req)
        self.conn.request("GET", f"/{BUCKET}?{qs}", headers=dict(req.headers.items()))
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {body[:300]!r}")
        return body

    def close(self) -> None:
        self.conn.close()


def _count(body: bytes) -> int:
    return body.count(b"<Key>") + body.count(b"<CommonPrefixes>")


def _text(body: bytes, tag: str) -> str | None:
    m = re.search(rb"<%s>([^<]*)</%s>" % (tag.encode(), tag.encode()), body)
    return m.group(1).decode() if m else None


def _truncated(body: bytes) -> bool:
    return b"<IsTruncated>true</IsTruncated>" in body


def http_pages(s3: RawS3, prefix: str, delimiter: str, on_prefix: Callable[[str], None] | None = None) -> Walk:
    n = requests = 0
    token = None
    while True:
        # encoding-type=url as boto3 and the aws cli send it.
        q = {"list-type": "2", "max-keys": str(PAGE), "prefix": prefix, "encoding-type": "url"}
        if delimiter:
            q["delimiter"] = delimiter
        if token:
            q["continuation-token"] = token
        body = s3.get(q)
        requests += 1
        n += _count(body)
        if on_prefix is not None:
            for p in re.findall(rb"<CommonPrefixes><Prefix>([^<]*)</Prefix>", body):
                on_prefix(unquote_plus(p.decode()))
        if not _truncated(body):
            return Walk(n, requests)
        token = _text(body, "NextContinuationToken")


def http_flat(s3: RawS3) -> Walk:
    return http_pages(s3, "", "")


def http_tree(s3: RawS3) -> Walk:
    todo, total = [""], Walk(0, 0)
    while todo:
        w = http_pages(s3, todo.pop(), "/", todo.append)
        total = Walk(total.entries + w.entries, total.requests + w.requests)
    return total


def http_root(s3: RawS3) -> Walk:
    return http_pages(s3, "", "/")


def http_versions(s3: RawS3) -> Walk:
    n = requests = 0
    km = vm = None
    while True:
        q = {"versions": "", "max-keys": str(PAGE), "encoding-type": "url"}
        if km is not None:
            q["key-marker"] = km
            if vm:
                q["version-id-marker"] = vm
        body = s3.get(q)
        requests += 1
        n += _count(body)
        if not _truncated(body):
            return Walk(n, requests)
        km, vm = unquote_plus(_text(body, "NextKeyMarker") or ""), _text(body, "NextVersionIdMarker")


def boto3_flat(client) -> Walk:
    n = requests = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": PAGE}):
        n += page["KeyCount"]
        requests += 1
    return Walk(n, requests)


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Figure:
    layer: str
    name: str
    entries: int
    requests: int
    seconds: list[float]
    cpu_seconds: list[float]  # of the process serving the listing: steadier than wall time on a busy machine

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def row(self) -> dict:
        return {
            "layer": self.layer, "listing": self.name, "entries": self.entries,
            "requests": self.requests, "median_s": round(self.median, 4),
            "min_s": round(min(self.seconds), 4),
            "entries_per_s": round(self.entries / self.median) if self.median else None,
            "ms_per_request": round(1000 * self.median / self.requests, 2),
            "cpu_median_s": round(statistics.median(self.cpu_seconds), 4),
        }


def measure(layer: str, name: str, fn: Callable[[], Walk], runs: int, expect: int | None,
            cpu: Callable[[], float]) -> Figure:
    times, cpus, walk = [], [], None
    for _ in range(runs):
        c0, t0 = cpu(), time.perf_counter()
        walk = fn()
        times.append(time.perf_counter() - t0)
        cpus.append(cpu() - c0)
        if expect is not None and walk.entries != expect:
            raise RuntimeError(f"{layer} {name}: listed {walk.entries} entries, expected {expect}")
    assert walk is not None
    fig = Figure(layer, name, walk.entries, walk.requests, times, cpus)
    print(f"  {layer:8} {name:15} {fig.median * 1000:9.1f} ms", file=sys.stderr, flush=True)
    return fig


def _cpu_of(pid: int) -> Callable[[], float]:
    import psutil

    proc = psutil.Process(pid)

    def cpu() -> float:
        t = proc.cpu_times()
        return t.user + t.system

    return cpu


def print_table(figures: list[Figure]) -> None:
    head = (f"{'layer':8} {'listing':15} {'entries':>8} {'requests':>8} {'median ms':>10} "
            f"{'ms/request':>10} {'entries/s':>10} {'cpu ms':>8}")
    print(head)
    print("-" * len(head))
    for f in figures:
        r = f.row()
        print(f"{r['layer']:8} {r['listing']:15} {r['entries']:8d} {r['requests']:8d} "
              f"{r['median_s'] * 1000:10.1f} {r['ms_per_request']:10.2f} {r['entries_per_s']:10d} "
              f"{r['cpu_median_s'] * 1000:8.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--data-dir", type=Path, default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        data = Path(tmp) / "node"
        node = MeshdProcess(data).start()
        try:
            node.client().create_bucket(Bucket=BUCKET)
        finally:
            node.stop()

        keys = tree_keys(args.keys)
        t0 = time.perf_counter()
        counts = fill(data / "catalog.db", keys)
        fill_s = time.perf_counter() - t0
        print(f"filled {counts} in {fill_s:.1f} s", file=sys.stderr)
        visible = counts["visible_keys"]
        all_versions = counts["versions"] + counts["delete_markers"]
        # Every directory that holds a visible key is listed as a common prefix once.
        dirs = {k.rsplit("/", 1)[0] for i, k in enumerate(keys) if i % 100 != 50}
        tree_entries = visible + len(dirs) + len({d.split("/")[0] for d in dirs})

        figures: list[Figure] = []
        here = time.process_time
        cat = SqliteCatalog(data / "catalog.db")
        try:
            figures += [
                measure("catalog", "flat", lambda: catalog_flat(cat), args.runs, visible, here),
                measure("catalog", "tree walk", lambda: catalog_tree(cat), args.runs, tree_entries, here),
                measure("catalog", "root delimiter", lambda: catalog_root(cat), args.runs, PROJECTS, here),
                measure("catalog", "versions", lambda: catalog_versions(cat), args.runs, all_versions, here),
            ]
        finally:
            cat.close()

        node = MeshdProcess(data).start()
        node_cpu = _cpu_of(node.pid)
        try:
            s3 = RawS3(node.endpoint)
            try:
                figures += [
                    measure("node", "flat", lambda: http_flat(s3), args.runs, visible, node_cpu),
                    measure("node", "tree walk", lambda: http_tree(s3), args.runs, tree_entries, node_cpu),
                    measure("node", "root delimiter", lambda: http_root(s3), args.runs, PROJECTS, node_cpu),
                    measure("node", "versions", lambda: http_versions(s3), args.runs, all_versions, node_cpu),
                ]
            finally:
                s3.close()
            client = node.client()
            figures.append(measure("boto3", "flat", lambda: boto3_flat(client), max(1, args.runs // 2),
                                   visible, node_cpu))
        finally:
            node.stop()

    result = {
        "bench": "listing", "keys": counts, "page_size": PAGE, "runs": args.runs,
        "fill_seconds": round(fill_s, 2), "figures": [f.row() for f in figures],
    }
    print_table(figures)
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
