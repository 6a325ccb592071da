"""meshd ingestion benchmark: scan rate and background hashing throughput.

    python bench/ingest.py                    # 10,000 files; 20 x 50 MiB; 3 runs
    python bench/ingest.py --quick            # smoke run: 1,000 files; 4 x 8 MiB; 1 run
    python bench/ingest.py --files 20000 --hash-files 10 --hash-mib 100 --json /tmp/ingest.json

Measures, through real `meshd run` processes with an `[[ingest]]` entry:

  scan (a tree of `--files` small files, 100 per directory):
    * start-to-listable: from launching the node until ListObjectsV2 shows
      every file (includes the interpreter's start-up, ~1 s);
    * ready-to-listable: from the node printing `ready` until all are listable;
    * the node's own first scan time (`meshd ingest status`), files/s;
    * `meshd ingest rescan` of the unchanged tree: wall time of the CLI
      (includes its start-up) and the scan time the node reports;
  hashing (`--hash-files` files of `--hash-mib` MiB, page cache warm):
    * `sha256sum` over the same files (one process, files in turn), MB/s;
    * the node's background hasher, unpaced (hash_bytes_per_second = 0):
      bytes hashed / time spent hashing as the node reports it, MB/s, and the
      end-to-end time from `ready` until `meshd ingest status` shows every file hashed;
    the ratio node / sha256sum is the figure of the target (>= 80%).
Figures are medians over `--runs` runs, each on a fresh data directory.
Prints a table and a JSON document (also written to `bench/results-ingest.json`).
MB/s are 10^6 bytes per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/ingest.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.run import MB, MiB, med, publish  # noqa: E402
from meshd.admin import AdminClient
from tests.support.process import MeshdProcess

BUCKET = "ingested"
TARGET_SCAN_SECONDS = 10.0
TARGET_HASH_RATIO = 0.80


def make_small_tree(root: Path, files: int) -> None:
    for i in range(files):
        d = root / f"dir{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:06d}.dat").write_bytes(b"x" * (i % 97))


def make_big_tree(root: Path, files: int, mib: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MiB)
    for i in range(files):
        with open(root / f"big{i:03d}.bin", "wb") as f:
            for j in range(mib):
                f.write(block[j % 251:] + block[:j % 251])  # distinct content per MiB


def warm(root: Path) -> None:
    for p in sorted(root.iterdir()):
        with open(p, "rb") as f:
            while f.read(8 * MiB):
                pass


def write_config(path: Path, tree: Path, hash_rate: int) -> None:
    path.write_text(
        f'[[ingest]]\npath = "{tree}"\nbucket = "{BUCKET}"\nprefix = ""\n'
        f"rescan_interval_seconds = 0\nhash_bytes_per_second = {hash_rate}\n"
    )


def node_status(data: Path) -> dict:
    """Status straight from the admin socket: polling through `meshd ingest
    status` would start an interpreter every time, on the cores being measured."""
    return AdminClient(data, timeout=60).request("GET", "/ingest/status")["entries"][0]


def meshd_cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "meshd", *args, "--json"], capture_output=True, check=True,
                         timeout=600)
    return json.loads(out.stdout)


def count_listed(s3) -> int:
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 1000}):
        n += page.get("KeyCount", 0)
    return n


def scan_run(work: Path, tree: Path, files: int, run: int) -> dict:
    data = work / f"scan-data-{run}"
    config = work / f"scan-{run}.toml"
    write_config(config, tree, 0)
    node = MeshdProcess(data, config=config)
    t0 = time.perf_counter()
    node.start()
    t_ready = time.perf_counter()
    try:
        s3 = node.client()
        while True:
            try:
                if count_listed(s3) >= files:
                    break
            except s3.exceptions.NoSuchBucket:
                pass
            time.sleep(0.05)
        t_listed = time.perf_counter()
        status = wait_status(data, lambda st: st["last_scan"] is not None)
        first_scan = status["last_scan"]["seconds"]
        t = time.perf_counter()
        rescan = meshd_cli("ingest", "rescan", "--data", str(data))["scans"][0]
        rescan_wall = time.perf_counter() - t
    finally:
        node.stop()
        shutil.rmtree(data, ignore_errors=True)
    return {
        "start_to_listable_s": round(t_listed - t0, 3),
        "ready_to_listable_s": round(t_listed - t_ready, 3),
        "node_first_scan_s": first_scan,
        "node_first_scan_files_s": round(files / first_scan) if first_scan else None,
        "rescan_cli_wall_s": round(rescan_wall, 3),
        "rescan_node_s": rescan["seconds"],
        "rescan_changes": rescan["added"] + rescan["changed"] + rescan["removed"],
    }


def wait_status(data: Path, done, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = node_status(data)
        if done(st):
            return st
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out; last status {st}")
        time.sleep(0.05)


def sha256sum_run(tree: Path) -> float:
    files = sorted(str(p) for p in tree.iterdir())
    t = time.perf_counter()
    subprocess.run(["sha256sum", *files], capture_output=True, check=True)
    return time.perf_counter() - t


def hash_run(work: Path, tree: Path, files: int, total_bytes: int, run: int) -> dict:
    data = work / f"hash-data-{run}"
    config = work / f"hash-{run}.toml"
    write_config(config, tree, 0)
    node = MeshdProcess(data, config=config)
    node.start()
    t_ready = time.perf_counter()
    try:
        st = wait_status(data, lambda st: st["files"] == files and st["hashed_files"] == files)
        t_done = time.perf_counter()
    finally:
        node.stop()
        shutil.rmtree(data, ignore_errors=True)
    hasher = st["hasher"]
    return {
        "node_hasher_mb_s": round(hasher["bytes"] / hasher["seconds"] / MB, 1),
        "node_end_to_end_s": round(t_done - t_ready, 3),
        "node_end_to_end_mb_s": round(total_bytes / (t_done - t_ready) / MB, 1),
        "hashed_bytes": hasher["bytes"],
    }


def table(res: dict) -> str:
    s, h = res["scan"], res["hashing"]
    rows = [
        ("scan: start -> all listable", f"{s['start_to_listable_s']} s"),
        ("scan: ready -> all listable", f"{s['ready_to_listable_s']} s"),
        ("scan: node's first scan", f"{s['node_first_scan_s']} s ({s['node_first_scan_files_s']} files/s)"),
        ("rescan: `meshd ingest rescan` wall", f"{s['rescan_cli_wall_s']} s"),
        ("rescan: node's scan", f"{s['rescan_node_s']} s"),
        ("hash: sha256sum", f"{h['sha256sum_mb_s']} MB/s"),
        ("hash: node background hasher", f"{h['node_hasher_mb_s']} MB/s"),
        ("hash: node ready -> all hashed", f"{h['node_end_to_end_s']} s ({h['node_end_to_end_mb_s']} MB/s)"),
        ("hash: node / sha256sum", f"{h['ratio']}"),
    ]
    lines = [f"meshd ingest bench: {res['plan']['files']} files; "
             f"{res['plan']['hash_files']} x {res['plan']['hash_mib']} MiB; medians of {res['plan']['runs']}"]
    lines += [f"  {name:38} {value}" for name, value in rows]
    for name, t in res["targets"].items():
        lines.append(f"  target {name}: {t['target']}: {'yes' if t['met'] else 'NO'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="meshd ingestion benchmark")
    p.add_argument("--quick", action="store_true", help="smoke run: 1,000 files, 4 x 8 MiB, 1 run")
    p.add_argument("--files", type=int, help="files in the scanned tree (default 10000)")
    p.add_argument("--hash-files", type=int, help="files to hash (default 20)")
    p.add_argument("--hash-mib", type=int, help="MiB per hashed file (default 50)")
    p.add_argument("--runs", type=int, help="runs per figure (default 3)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results-ingest.json")
    p.add_argument("--data-dir", type=Path, help="work directory (default: a temporary one, removed after)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    q = args.quick
    files = args.files or (1000 if q else 10_000)
    hash_files = args.hash_files or (4 if q else 20)
    hash_mib = args.hash_mib or (8 if q else 50)
    runs = args.runs or (1 if q else 3)
    work = Path(tempfile.mkdtemp(prefix="meshd-bench-ingest-", dir=args.data_dir))
    try:
        small, big = work / "small-tree", work / "big-tree"
        make_small_tree(small, files)
        make_big_tree(big, hash_files, hash_mib)
        total = hash_files * hash_mib * MiB
        scans = []
        for r in range(runs):
            scans.append(scan_run(work, small, files, r))
            print(f"scan run {r + 1}/{runs}: {scans[-1]}", file=sys.stderr, flush=True)
        warm(big)
        sums, hashes = [], []
        for r in range(runs):
            warm(big)
            sums.append(total / sha256sum_run(big) / MB)
            warm(big)
            hashes.append(hash_run(work, big, hash_files, total, r))
            print(f"hash run {r + 1}/{runs}: sha256sum {sums[-1]:.1f} MB/s, node {hashes[-1]}",
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    scan = {k: med([s[k] for s in scans], 3) for k in scans[0] if scans[0][k] is not None}
    hashing = {k: med([h[k] for h in hashes], 3) for k in hashes[0]}
    hashing["sha256sum_mb_s"] = med(sums)
    hashing["ratio"] = round(hashing["node_hasher_mb_s"] / hashing["sha256sum_mb_s"], 2)
    res = {
        "plan": {"files": files, "hash_files": hash_files, "hash_mib": hash_mib, "runs": runs, "quick": q},
        "scan": scan, "hashing": hashing,
        "targets": {
            "scan_10k_under_10s": {"target": f"start -> {files} files listable < {TARGET_SCAN_SECONDS} s",
                                   "met": scan["start_to_listable_s"] < TARGET_SCAN_SECONDS},
            "hash_vs_sha256sum": {"target": f"node hasher >= {TARGET_HASH_RATIO:.0%} of sha256sum",
                                  "met": hashing["ratio"] >= TARGET_HASH_RATIO},
        },
        "runs": {"scan": scans, "hash": hashes, "sha256sum_mb_s": [round(x, 1) for x in sums]},
        "meta": {"python": platform.python_version(), "cpus": os.cpu_count(),
                 "sha256sum": subprocess.run(["sha256sum", "--version"], capture_output=True,
                                             text=True).stdout.splitlines()[0],
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    publish(table(res), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
