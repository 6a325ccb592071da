"""meshd storage benchmark: the cost of at-rest encryption, zstd and a remote
S3 backend, each against plain filesystem storage measured in the same run.

    python bench/storage.py                 # full run (several minutes)
    python bench/storage.py --quick         # smoke run: small counts, a tiny big object
    python bench/storage.py --rounds 5 --json bench/results-storage.json

One node per storage configuration, run one after another on the same machine:

  fs-plain       filesystem backend, `encrypt = false` (the baseline; GET uses sendfile)
  fs-encrypted   filesystem backend, ChaCha20-Poly1305 (the default)
  fs-enc-zstd    filesystem backend, encrypted + `compress = "zstd"`
  s3-moto        s3 backend: a bucket on a `moto_server` process (encrypted, the default)
  s3-meshd       s3 backend: a bucket on a second meshd node (full runs only)

For each: 1 MiB PUT and GET MB/s at concurrency 8 (1 MiB is far above the
16 KiB inline limit, so every object is a blob on the backend), medians of
`--rounds` rounds, and each configuration's ratio to fs-plain. The bodies are
random, so zstd stores its frames raw: fs-enc-zstd shows the cost of the zstd
layer's framing, not a compression gain. Then, on fs-encrypted, one big
object (1 GiB by default) streamed in and out, generated on the fly and never
held, its SHA-256 checked on the way back, and the node's peak RSS (VmHWM).

Targets (reported, not asserted): encrypted 1 MiB GET >= 60% of plain GET;
encrypted 1 GiB PUT+GET with node peak RSS < 150 MiB.

The load generator, CPU accounting and data helpers are bench/run.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/storage.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.run import (
    BenchError,
    Client,
    Meter,
    MiB,
    Signer,
    abig_blocks,
    big_sha256,
    med,
    pool,
    publish,
    proc_status_kib,
    unique_bodies,
)
from tests.support.moto import MotoServer
from tests.support.moto import client as moto_client
from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY, MeshdProcess

BUCKET = "bench"
REMOTE_BUCKET = "meshd-bench-blobs"
BASELINE = "fs-plain"
BIG_ON = "fs-encrypted"
TARGET_GET_RATIO = 0.60
TARGET_PEAK_RSS_MIB = 150

FS_CONFIGS = {
    "fs-plain": '[backends.local]\ntype = "filesystem"\nencrypt = false\n',
    "fs-encrypted": '[backends.local]\ntype = "filesystem"\nencrypt = true\n',
    "fs-enc-zstd": '[backends.local]\ntype = "filesystem"\nencrypt = true\ncompress = "zstd"\n',
}
ALL_CONFIGS = (*FS_CONFIGS, "s3-moto", "s3-meshd")


def s3_config(endpoint: str) -> str:
    return f"""[storage]
default_backend = "remote"

[backends.remote]
type = "s3"
endpoint = "{endpoint}"
bucket = "{REMOTE_BUCKET}"
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"
"""


@dataclass(frozen=True)
class Plan:
    rounds: int
    concurrency: int
    objects: int  # 1 MiB objects per round
    get_passes: int  # GET passes over them per round
    big_bytes: int
    configs: tuple[str, ...]


class Remote:
    """The S3 service behind an s3-backend configuration: a moto_server or a meshd node."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.moto: MotoServer | None = None
        self.node: MeshdProcess | None = None
        if kind == "s3-moto":
            self.moto = MotoServer(work / "moto.log")
            moto_client(self.moto.endpoint).create_bucket(Bucket=REMOTE_BUCKET)
            self.endpoint = self.moto.endpoint
        else:
            self.node = MeshdProcess(work / "remote-data").start()
            self.node.client().create_bucket(Bucket=REMOTE_BUCKET)
            self.endpoint = self.node.endpoint

    @property
    def pid(self) -> int:
        return self.moto.proc.pid if self.moto is not None else self.node.pid  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.moto is not None:
            self.moto.stop()
        if self.node is not None:
            self.node.stop()


async def measure(plan: Plan, name: str, node: MeshdProcess, remote: Remote | None) -> dict:
    pids = {"node": node.pid}
    if remote is not None:
        pids["remote"] = remote.pid
    meter = Meter(pids)
    s3 = Client(node.endpoint, Signer(ACCESS_KEY, SECRET_KEY, REGION), plan.concurrency)
    c = plan.concurrency
    try:
        await s3.create_bucket(BUCKET)
        rounds = []
        for r in range(plan.rounds):
            bodies = unique_bodies(f"{name}-r{r}", plan.objects, MiB)
            keys = [f"/{BUCKET}/r{r}/m{i:05d}" for i in range(plan.objects)]
            shas = [hashlib.sha256(b).hexdigest() for b in bodies]
            items = list(zip(keys, bodies))
            del bodies
            put = await meter.run(plan.objects, plan.objects * MiB,
                                  lambda: pool(items, lambda kb: s3.put(kb[0], kb[1], MiB), c))

            async def one(path: str) -> None:
                if await s3.get_len(path) != MiB:
                    raise BenchError(f"GET {path}: wrong length")

            gets = keys * plan.get_passes
            get = await meter.run(len(gets), len(gets) * MiB, lambda: pool(gets, one, c))
            for i in {0, plan.objects - 1}:  # content check, outside the timed loop
                if hashlib.sha256(await s3.get_bytes(keys[i])).hexdigest() != shas[i]:
                    raise BenchError(f"GET {keys[i]}: wrong bytes")
            rounds.append({"round": r, "put_1mib": put.as_dict(), "get_1mib": get.as_dict()})
            print(f"{name} round {r + 1}/{plan.rounds}: PUT {put.mb_s:.1f} MB/s, GET {get.mb_s:.1f} MB/s",
                  file=sys.stderr, flush=True)
        out = {
            "put_1mib_mb_s": med([x["put_1mib"]["mb_s"] for x in rounds]),
            "get_1mib_mb_s": med([x["get_1mib"]["mb_s"] for x in rounds]),
            "node_peak_rss_mib": round(proc_status_kib(node.pid, "VmHWM") / 1024, 1),
            "rounds": rounds,
        }
        if name == BIG_ON:
            out["big"] = await big(plan, node, s3, meter)
        return out
    finally:
        await s3.close()


async def big(plan: Plan, node: MeshdProcess, s3: Client, meter: Meter) -> dict:
    total = plan.big_bytes
    path = f"/{BUCKET}/big-object"
    want = await asyncio.to_thread(big_sha256, total)  # before the clock: the PUT only generates
    put = await meter.run(1, total, lambda: s3.put(path, abig_blocks(total), total))
    rss_after_put = proc_status_kib(node.pid, "VmHWM")
    got: dict[str, object] = {}

    async def fetch() -> None:
        got["n"], got["sha"] = await s3.get_sha256(path)

    get = await meter.run(1, total, fetch)
    ok = got["n"] == total and got["sha"] == want
    if not ok:
        raise BenchError(f"big object came back wrong: {got['n']} bytes, sha256 {got['sha']} != {want}")
    print(f"big ({total} bytes): PUT {put.mb_s:.1f} MB/s, GET {get.mb_s:.1f} MB/s, sha256 ok",
          file=sys.stderr, flush=True)
    return {"bytes": total, "sha256": want, "sha256_ok": ok, "put_mb_s": round(put.mb_s, 1),
            "get_mb_s": round(get.mb_s, 1), "put": put.as_dict(), "get": get.as_dict(),
            "node_peak_rss_mib_after_put": round(rss_after_put / 1024, 1),
            "node_peak_rss_mib": round(proc_status_kib(node.pid, "VmHWM") / 1024, 1)}


def run_config(plan: Plan, name: str, work: Path) -> dict:
    base = work / name
    base.mkdir()
    remote = Remote(name, base) if name.startswith("s3-") else None
    try:
        text = FS_CONFIGS[name] if remote is None else s3_config(remote.endpoint)
        config = base / "meshd.toml"
        config.write_text(text)
        node = MeshdProcess(base / "data", config=config)
        try:
            node.start()
            return asyncio.run(measure(plan, name, node, remote))
        except BaseException:
            if node.log_path is not None and node.log_path.exists():
                sys.stderr.write(node.stderr_text()[-4000:])
            raise
        finally:
            node.stop()
    finally:
        if remote is not None:
            remote.stop()
        shutil.rmtree(base, ignore_errors=True)  # the next configuration gets the disk space


def summarise(plan: Plan, configs: dict[str, dict], meta: dict) -> dict:
    base = configs[BASELINE]
    ratios = {}
    for name, res in configs.items():
        if name != BASELINE:
            ratios[name] = {"get_vs_plain": round(res["get_1mib_mb_s"] / base["get_1mib_mb_s"], 3),
                            "put_vs_plain": round(res["put_1mib_mb_s"] / base["put_1mib_mb_s"], 3)}
    bigres = configs[BIG_ON]["big"]
    enc_ratio = ratios[BIG_ON]["get_vs_plain"]
    return {
        "meta": meta,
        "baseline": BASELINE,
        "configs": configs,
        "ratios": ratios,
        "big": {k: v for k, v in bigres.items() if k not in ("put", "get")} | {"config": BIG_ON},
        "targets": {
            "encrypted_get_ratio": {"value": enc_ratio, "target": f">= {TARGET_GET_RATIO}",
                                    "met": enc_ratio >= TARGET_GET_RATIO},
            "big_peak_rss_mib": {"value": bigres["node_peak_rss_mib"],
                                 "target": f"< {TARGET_PEAK_RSS_MIB} (1 GiB encrypted object)",
                                 "met": bigres["node_peak_rss_mib"] < TARGET_PEAK_RSS_MIB
                                 and bigres["bytes"] >= 1024**3},
        },
    }


def table(res: dict) -> str:
    p = res["meta"]["plan"]
    head = ("config", "PUT MB/s", "GET MB/s", "PUT ratio", "GET ratio", "peak RSS MiB")
    rows = []
    for name, c in res["configs"].items():
        r = res["ratios"].get(name, {"put_vs_plain": 1.0, "get_vs_plain": 1.0})
        rows.append((name, c["put_1mib_mb_s"], c["get_1mib_mb_s"], f"{r['put_vs_plain']:.2f}",
                     f"{r['get_vs_plain']:.2f}", c["node_peak_rss_mib"]))
    widths = [max(len(str(row[i])) for row in (*rows, head)) for i in range(len(head))]
    lines = [
        f"meshd storage bench: {p['rounds']} round(s), concurrency {p['concurrency']}, "
        f"{p['objects']} x 1 MiB x {p['get_passes']} GET pass(es); medians; ratios against {res['baseline']}",
        "  ".join(h.ljust(w) for h, w in zip(head, widths)),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append("  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths))))
    b = res["big"]
    size = f"{b['bytes'] / 1024**3:g} GiB" if b["bytes"] >= 1024**3 else f"{b['bytes'] / MiB:g} MiB"
    lines.append(f"{size} on {b['config']}: PUT {b['put_mb_s']} MB/s, GET+sha256 {b['get_mb_s']} MB/s, "
                 f"sha256 {'ok' if b['sha256_ok'] else 'BAD'}, node peak RSS {b['node_peak_rss_mib']} MiB")
    for name, t in res["targets"].items():
        lines.append(f"target {name}: {t['value']} (want {t['target']}): {'yes' if t['met'] else 'NO'}")
    return "\n".join(lines)


def build_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    configs = tuple(args.configs.split(",")) if args.configs else (
        ALL_CONFIGS[:-1] if quick else ALL_CONFIGS)
    for name in (BASELINE, BIG_ON):
        if name not in configs:
            configs = (name, *configs)
    unknown = set(configs) - set(ALL_CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configuration(s): {', '.join(sorted(unknown))}; known: {', '.join(ALL_CONFIGS)}")
    return Plan(
        rounds=args.rounds or (1 if quick else 3),
        concurrency=args.concurrency,
        objects=args.objects or (8 if quick else 64),
        get_passes=1 if quick else 4,
        big_bytes=int((args.size_gib if args.size_gib is not None else (1 / 128 if quick else 1)) * 1024**3),
        configs=tuple(sorted(set(configs), key=ALL_CONFIGS.index)),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="meshd storage benchmark: encryption, zstd, s3 backend")
    p.add_argument("--quick", action="store_true", help="small counts, a tiny big object, no s3-meshd (smoke run)")
    p.add_argument("--rounds", type=int, help="rounds per configuration (default 3; quick 1)")
    p.add_argument("--objects", type=int, help="1 MiB objects per round (default 64; quick 8)")
    p.add_argument("--size-gib", type=float, help="size of the big encrypted object in GiB (default 1)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--configs", help=f"comma-separated subset of {','.join(ALL_CONFIGS)} "
                                     f"({BASELINE} and {BIG_ON} are always run)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results-storage.json",
                   help="where to write the JSON")
    p.add_argument("--data-dir", type=Path, help="work directory (default: a temporary one, removed after)")
    args = p.parse_args(argv)
    for name in ("rounds", "objects", "concurrency"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name} must be at least 1")
    if args.size_gib is not None and args.size_gib <= 0:
        p.error("--size-gib must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = build_plan(args)
    work = Path(tempfile.mkdtemp(prefix="meshd-storage-bench-", dir=args.data_dir))
    started = time.time()
    try:
        configs = {name: run_config(plan, name, work) for name in plan.configs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {
        "plan": plan.__dict__ | {"configs": list(plan.configs)}, "quick": args.quick,
        "python": platform.python_version(), "aiohttp": aiohttp.__version__, "cpus": os.cpu_count(),
        "loadavg_after": os.getloadavg()[0], "seconds": round(time.time() - started, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "MB/s are 10^6 bytes/s; ratios are each configuration's median over the baseline's median",
    }
    res = summarise(plan, configs, meta)
    publish(table(res), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
