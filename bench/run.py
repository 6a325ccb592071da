"""meshd single-node benchmark: starts a node (and a static file server as the
baseline), drives both over loopback, prints a table and JSON.

    python bench/run.py                 # full run (a few minutes)
    python bench/run.py --quick         # smoke run: small counts, tiny big object
    python bench/run.py --rounds 5 --size-gib 1 --json bench/results.json

Measures, each round at the same concurrency (default 8):
  * PUT and GET MB/s of 1 MiB objects, and GET MB/s of the very same blob files
    from a plain aiohttp FileResponse server (bench/static_server.py), the
    baseline of the GET ratio;
  * 4 KiB PUT and GET ops/s (and PUT+GET: all ops over all their time);
then once: one big object (1 GiB by default) streamed in and out, generated on
the fly and never held in memory, its SHA-256 checked on the way back; and the
node's peak RSS (VmHWM). Figures are medians over rounds; the GET ratio is the
median of per-round ratios, each against the baseline measured in that round.
MB/s are 10^6 bytes per second.

The load generator is one asyncio process with an aiohttp connection pool and
its own small SigV4 signer (UNSIGNED-PAYLOAD): boto3 costs milliseconds of CPU
per request, which on a 2-core machine would measure the client, not the node.
The client's and the servers' CPU use per phase are recorded, so a saturated
client shows up in the results.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/run.py` from anywhere
    sys.path.insert(0, str(ROOT))

from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY, MeshdProcess  # noqa: E402

MiB = 1024 * 1024
MB = 1_000_000
BUCKET = "bench"
TARGET_PEAK_RSS_MIB = 150
TARGET_GET_RATIO = 0.70
TARGET_SMALL_OPS = 1000


# -- SigV4 (header auth, UNSIGNED-PAYLOAD) ------------------------------------


class Signer:
    """Just enough SigV4 for path-style requests with simple keys and no query."""

    def __init__(self, access_key: str, secret_key: str, region: str) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self._date = ""
        self._key = b""

    def _signing_key(self, date: str) -> bytes:
        if date != self._date:
            k = hmac.new(f"AWS4{self.secret_key}".encode(), date.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._date, self._key = date, k
        return self._key

    def headers(self, method: str, host: str, path: str) -> dict[str, str]:
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = amz_date[:8]
        scope = f"{date}/{self.region}/s3/aws4_request"
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = (f"{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"
                     f"x-amz-date:{amz_date}\n\n{signed}\nUNSIGNED-PAYLOAD")
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        sig = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        return {
            "Host": host, "x-amz-date": amz_date, "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                             f"SignedHeaders={signed}, Signature={sig}",
        }


# -- HTTP client ----------------------------------------------------------------


class BenchError(RuntimeError):
    pass


class Client:
    """One keep-alive connection pool to one server; every request is signed
    (the static server ignores the headers), so both servers get the same
    client work per request."""

    def __init__(self, endpoint: str, signer: Signer, concurrency: int) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.host = self.endpoint.split("://", 1)[1]
        self.signer = signer
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, force_close=False),
            skip_auto_headers=("Accept-Encoding", "User-Agent"), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        )

    async def close(self) -> None:
        await self.session.close()

    def _url(self, path: str) -> str:
        return self.endpoint + path

    async def put(self, path: str, data, length: int) -> None:
        headers = self.signer.headers("PUT", self.host, path)
        headers["Content-Length"] = str(length)
        async with self.session.put(self._url(path), data=data, headers=headers) as r:
            body = await r.read()
            if r.status != 200:
                raise BenchError(f"PUT {path}: {r.status} {body[:300]!r}")

    async def get_len(self, path: str) -> int:
        """GET and drain the body without keeping it; returns its length."""
        async with self.session.get(self._url(path), headers=self.signer.headers("GET", self.host, path)) as r:
            if r.status != 200:
                raise BenchError(f"GET {self.endpoint}{path}: {r.status} {(await r.read())[:300]!r}")
            n = 0
            while chunk := await r.content.readany():
                n += len(chunk)
            return n

    async def get_bytes(self, path: str) -> bytes:
        async with self.session.get(self._url(path), headers=self.signer.headers("GET", self.host, path)) as r:
            body = await r.read()
            if r.status != 200:
                raise BenchError(f"GET {self.endpoint}{path}: {r.status} {body[:300]!r}")
            return body

    async def get_sha256(self, path: str) -> tuple[int, str]:
        """Stream a (big) body through SHA-256 without holding it."""
        h = hashlib.sha256()
        n = 0
        async with self.session.get(self._url(path), headers=self.signer.headers("GET", self.host, path)) as r:
            if r.status != 200:
                raise BenchError(f"GET {path}: {r.status} {(await r.read())[:300]!r}")
            async for chunk in r.content.iter_chunked(MiB):
                h.update(chunk)
                n += len(chunk)
        return n, h.hexdigest()

    async def create_bucket(self, bucket: str) -> None:
        path = f"/{bucket}"
        async with self.session.put(self._url(path), headers=self.signer.headers("PUT", self.host, path)) as r:
            body = await r.read()
            if r.status != 200:
                raise BenchError(f"CreateBucket: {r.status} {body[:300]!r}")


# -- measuring ------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"{field} not in /proc/{pid}/status")


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """One timed phase: wall time, and the CPU each process used meanwhile."""

    ops: int
    nbytes: int
    seconds: float
    cpu_pct: dict[str, float]
    server_cpu_ms_per_op: float  # CPU the server under test spent per request

    @property
    def mb_s(self) -> float:
        return self.nbytes / MB / self.seconds

    @property
    def ops_s(self) -> float:
        return self.ops / self.seconds

    def as_dict(self) -> dict:
        return {"ops": self.ops, "bytes": self.nbytes, "seconds": round(self.seconds, 4),
                "mb_s": round(self.mb_s, 1), "ops_s": round(self.ops_s, 1), "cpu_pct": self.cpu_pct,
                "server_cpu_ms_per_op": self.server_cpu_ms_per_op}


class Meter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    async def run(self, ops: int, nbytes: int, work: Callable[[], Awaitable[None]], server: str = "node") -> Phase:
        cpu0 = {name: proc_cpu_seconds(pid) for name, pid in self.pids.items()}
        client0 = time.process_time()
        busy0 = machine_busy_seconds()
        t0 = time.perf_counter()
        await work()
        seconds = time.perf_counter() - t0
        used = {name: proc_cpu_seconds(pid) - cpu0[name] for name, pid in self.pids.items()}
        used["client"] = time.process_time() - client0
        # Whatever else ran on the machine meanwhile: on a shared machine this
        # says how much to trust the phase.
        used["others"] = max(0.0, machine_busy_seconds() - busy0 - sum(used.values()))
        return Phase(ops, nbytes, seconds, {k: round(v / seconds * 100) for k, v in used.items()},
                     round(used[server] / ops * 1000, 3))


async def pool(items: Sequence, fn: Callable[[object], Awaitable[None]], concurrency: int) -> None:
    """Run fn over items with `concurrency` workers, each taking the next item."""
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())


# -- data -----------------------------------------------------------------------


def unique_bodies(tag: str, count: int, size: int) -> list[bytes]:
    """`count` distinct bodies of `size` bytes: a random base with a unique head,
    so every object is a blob of its own."""
    base = os.urandom(size)
    out = []
    for i in range(count):
        head = f"{tag}:{i}:".encode()[:size]
        out.append(head + base[len(head):])
    return out


def blob_rel_path(sha256: str) -> str:
    """Where the filesystem backend keeps a blob, relative to <data>/store/blobs."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def big_blocks(total: int, block: int = MiB, seed: int = 1) -> Iterator[bytes]:
    """A deterministic pseudo-random stream of `total` bytes, one block at a
    time; each block starts with its index so a reordering shows in the digest."""
    import random

    base = random.Random(seed).randbytes(block)
    for i, off in enumerate(range(0, total, block)):
        yield (i.to_bytes(8, "big") + base[8:])[: min(block, total - off)]


def big_sha256(total: int) -> str:
    h = hashlib.sha256()
    for b in big_blocks(total):
        h.update(b)
    return h.hexdigest()


async def abig_blocks(total: int) -> AsyncIterator[bytes]:
    for b in big_blocks(total):
        yield b


def fsync_probe_ms(directory: Path, count: int = 50) -> float:
    """Median latency of a 4 KiB write + fsync in `directory`: on a shared
    machine, the disk's state explains much of the small-PUT figure."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"\0" * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return round(statistics.median(times) * 1000, 3)


# -- processes ------------------------------------------------------------------


class StaticServer:
    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    def start(self, timeout: float = 30.0) -> "StaticServer":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "static_server.py"), "--root", str(self.root)],
            stdout=subprocess.PIPE, stderr=self._log, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            m = re.search(r"endpoint:\s+(\S+)", line)
            if m:
                self.endpoint = m.group(1)
            if line.strip() == "ready":
                return self
        self.stop()
        raise BenchError(f"static server did not start: {self.log_path.read_text(errors='replace')}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if getattr(self, "_log", None) is not None:
            self._log.close()


# -- the benchmark --------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    rounds: int
    concurrency: int
    objects: int  # 1 MiB objects per round
    object_bytes: int
    get_passes: int  # GET passes over those objects per round, per server
    small_ops: int  # 4 KiB objects per round (each PUT once, GET once)
    small_bytes: int
    big_bytes: int


class Bench:
    def __init__(self, plan: Plan, node: MeshdProcess, static: StaticServer) -> None:
        self.plan = plan
        self.node = node
        self.static = static
        signer = Signer(ACCESS_KEY, SECRET_KEY, REGION)
        self.s3 = Client(node.endpoint, signer, plan.concurrency)
        self.files = Client(static.endpoint, signer, plan.concurrency)
        self.meter = Meter({"node": node.pid, "static": static.pid})
        self.blobs = node.data_dir / "store" / "blobs"
        self.small_files = static.root / "small"

    async def close(self) -> None:
        await self.s3.close()
        await self.files.close()

    async def round(self, r: int) -> dict:
        p = self.plan
        c = p.concurrency
        bodies = unique_bodies(f"r{r}-m", p.objects, p.object_bytes)
        keys = [f"/{BUCKET}/r{r}/m{i:05d}" for i in range(p.objects)]
        shas = [hashlib.sha256(b).hexdigest() for b in bodies]
        items = list(zip(keys, bodies))
        del bodies
        put = await self.meter.run(p.objects, p.objects * p.object_bytes,
                                   lambda: pool(items, lambda kb: self.s3.put(kb[0], kb[1], len(kb[1])), c))
        items.clear()  # the bodies are not needed for the GETs
        files = [f"/blobs/{blob_rel_path(s)}" for s in shas]
        missing = [f for f in files if not (self.static.root / f[1:]).is_file()]
        if missing:
            raise BenchError(f"blob files not where the static server looks: {self.blobs}{missing[0]}")

        async def get_all(client: Client, paths: list[str]) -> None:
            async def one(path: str) -> None:
                n = await client.get_len(path)
                if n != p.object_bytes:
                    raise BenchError(f"GET {path}: {n} bytes, expected {p.object_bytes}")
            await pool(paths * p.get_passes, one, c)

        n_get = p.objects * p.get_passes
        # Alternate which server goes first, so neither always gets the warmer cache.
        get = static = None
        for which in (("node", "static") if r % 2 == 0 else ("static", "node")):
            if which == "node":
                get = await self.meter.run(n_get, n_get * p.object_bytes, lambda: get_all(self.s3, keys))
            else:
                static = await self.meter.run(n_get, n_get * p.object_bytes, lambda: get_all(self.files, files),
                                              server="static")
        assert get is not None and static is not None
        # Content check outside the timed loops (hashing would load the client).
        for i in {0, p.objects - 1}:
            for client, path in ((self.s3, keys[i]), (self.files, files[i])):
                if hashlib.sha256(await client.get_bytes(path)).hexdigest() != shas[i]:
                    raise BenchError(f"GET {path}: wrong bytes")

        small = unique_bodies(f"r{r}-s", p.small_ops, p.small_bytes)
        skeys = [f"/{BUCKET}/r{r}/s{i:05d}" for i in range(p.small_ops)]
        small_put = await self.meter.run(p.small_ops, p.small_ops * p.small_bytes,
                                         lambda: pool(list(zip(skeys, small)), lambda kb: self.s3.put(kb[0], kb[1], len(kb[1])), c))
        expected = dict(zip(skeys, small))

        async def get_small(path: str) -> None:
            if await self.s3.get_bytes(path) != expected[path]:
                raise BenchError(f"GET {path}: wrong bytes")

        small_get = await self.meter.run(p.small_ops, p.small_ops * p.small_bytes, lambda: pool(skeys, get_small, c))
        sfiles = []
        for body in small:  # untimed: the baseline's copy of the small objects
            name = hashlib.sha256(body).hexdigest()
            (self.small_files / name).write_bytes(body)
            sfiles.append(f"/small/{name}")

        async def get_small_static(path: str) -> None:
            if len(await self.files.get_bytes(path)) != p.small_bytes:
                raise BenchError(f"GET {path}: wrong length")

        small_static = await self.meter.run(p.small_ops, p.small_ops * p.small_bytes,
                                            lambda: pool(sfiles, get_small_static, c), server="static")
        small_ops_s = 2 * p.small_ops / (small_put.seconds + small_get.seconds)
        return {
            "round": r,
            "put_1mib": put.as_dict(), "get_1mib": get.as_dict(), "static_get_1mib": static.as_dict(),
            "get_ratio": round(get.mb_s / static.mb_s, 3),
            "small_put": small_put.as_dict(), "small_get": small_get.as_dict(),
            "static_small_get": small_static.as_dict(), "small_put_get_ops_s": round(small_ops_s, 1),
        }

    async def big(self) -> dict:
        total = self.plan.big_bytes
        path = f"/{BUCKET}/big-object"
        want = await asyncio.to_thread(big_sha256, total)  # before the clock: the PUT only generates
        put = await self.meter.run(1, total, lambda: self.s3.put(path, abig_blocks(total), total))
        rss_after_put = proc_status_kib(self.node.pid, "VmHWM")
        got: dict[str, object] = {}

        async def fetch() -> None:
            got["n"], got["sha"] = await self.s3.get_sha256(path)

        get = await self.meter.run(1, total, fetch)
        if got["n"] != total or got["sha"] != want:
            raise BenchError(f"big object came back wrong: {got['n']} bytes, sha256 {got['sha']} != {want}")
        return {"bytes": total, "sha256": want, "sha256_ok": True, "put": put.as_dict(), "get": get.as_dict(),
                "node_vmhwm_after_put_kib": rss_after_put}


def med(values: list[float], nd: int = 1) -> float:
    return round(statistics.median(values), nd)


def summarise(plan: Plan, rounds: list[dict], big: dict, rss: dict[str, int], meta: dict) -> dict:
    def col(name: str, field: str) -> list[float]:
        return [r[name][field] for r in rounds]

    peak_mib = round(rss["peak_kib"] / 1024, 1)
    result = {
        "meta": meta,
        "put_1mib_mb_s": med(col("put_1mib", "mb_s")),
        "get_1mib_mb_s": med(col("get_1mib", "mb_s")),
        "static_get_1mib_mb_s": med(col("static_get_1mib", "mb_s")),
        "get_ratio": med([r["get_ratio"] for r in rounds], 3),
        "small_put_ops_s": med(col("small_put", "ops_s")),
        "small_get_ops_s": med(col("small_get", "ops_s")),
        "small_put_get_ops_s": med([r["small_put_get_ops_s"] for r in rounds]),
        "static_small_get_ops_s": med(col("static_small_get", "ops_s")),
        "big_put_mb_s": big["put"]["mb_s"],
        "big_get_mb_s": big["get"]["mb_s"],
        "big_bytes": big["bytes"],
        "big_sha256_ok": big["sha256_ok"],
        "node_rss_mib": {
            "start": round(rss["start_kib"] / 1024, 1),
            "after_rounds_peak": round(rss["after_rounds_kib"] / 1024, 1),
            "after_big_put_peak": round(big["node_vmhwm_after_put_kib"] / 1024, 1),
            "peak": peak_mib,
            "current": round(rss["current_kib"] / 1024, 1),
        },
        "rounds": rounds,
        "big": big,
    }
    result["targets"] = {
        "peak_rss_mib": {"value": peak_mib, "target": f"< {TARGET_PEAK_RSS_MIB} (1 GiB object)",
                         "met": peak_mib < TARGET_PEAK_RSS_MIB and big["bytes"] >= 1024**3},
        "get_ratio": {"value": result["get_ratio"], "target": f">= {TARGET_GET_RATIO}",
                      "met": result["get_ratio"] >= TARGET_GET_RATIO},
        "small_put_get_ops_s": {"value": result["small_put_get_ops_s"], "target": f">= {TARGET_SMALL_OPS}",
                                "met": result["small_put_get_ops_s"] >= TARGET_SMALL_OPS},
    }
    return result


def table(res: dict) -> str:
    p = res["meta"]["plan"]
    rows = [
        ("1 MiB PUT (MB/s)", res["put_1mib_mb_s"], "", "", ""),
        ("1 MiB GET (MB/s)", res["get_1mib_mb_s"], res["static_get_1mib_mb_s"], f"{res['get_ratio']:.2f}",
         _target(res, "get_ratio")),
        ("4 KiB PUT (ops/s)", res["small_put_ops_s"], "", "", ""),
        ("4 KiB GET (ops/s)", res["small_get_ops_s"], res["static_small_get_ops_s"],
         f"{res['small_get_ops_s'] / res['static_small_get_ops_s']:.2f}", ""),
        ("4 KiB PUT+GET (ops/s)", res["small_put_get_ops_s"], "", "", _target(res, "small_put_get_ops_s")),
        (f"{_size(res['big_bytes'])} PUT (MB/s)", res["big_put_mb_s"], "", "", ""),
        (f"{_size(res['big_bytes'])} GET+sha256 (MB/s)", res["big_get_mb_s"], "", "",
         "sha256 ok" if res["big_sha256_ok"] else "SHA256 BAD"),
        ("node peak RSS (MiB)", res["node_rss_mib"]["peak"], "", "", _target(res, "peak_rss_mib")),
    ]
    head = ("metric", "meshd", "static", "ratio", "target")
    widths = [max(len(str(r[i])) for r in (*rows, head)) for i in range(5)]
    lines = [
        f"meshd bench: {p['rounds']} round(s), concurrency {p['concurrency']}, "
        f"{p['objects']} x 1 MiB x {p['get_passes']} GET pass(es), {p['small_ops']} x 4 KiB; medians",
        "  ".join(h.ljust(w) for h, w in zip(head, widths)),
        "  ".join("-" * w for w in widths),
    ]
    for r in rows:
        lines.append("  ".join(str(v).rjust(w) if i in (1, 2, 3) else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))
    m = res["meta"]["machine"]
    lines.append(f"machine: load average {m['loadavg_before']:.1f} before, {m['loadavg_after']:.1f} after; "
                 f"4 KiB fsync p50 {m['fsync_ms_p50_before']} ms before the run")
    rss = res["node_rss_mib"]
    lines.append(f"node RSS (MiB): start {rss['start']}, peak after rounds {rss['after_rounds_peak']}, "
                 f"after big PUT {rss['after_big_put_peak']}, final peak {rss['peak']}")
    lines.append("CPU per phase, medians (100% = one core; 'others' = the rest of the machine):")
    lines.append(f"  {'phase':18} {'server':>7} {'client':>7} {'others':>7} {'server ms/op':>12}")
    for name, server in PHASES:
        phases = [r[name] for r in res["rounds"]]
        lines.append(f"  {name:18} {med([x['cpu_pct'][server] for x in phases], 0):>6.0f}% "
                     f"{med([x['cpu_pct']['client'] for x in phases], 0):>6.0f}% "
                     f"{med([x['cpu_pct']['others'] for x in phases], 0):>6.0f}% "
                     f"{med([x['server_cpu_ms_per_op'] for x in phases], 3):>12}")
    return "\n".join(lines)


PHASES = (("put_1mib", "node"), ("get_1mib", "node"), ("static_get_1mib", "static"),
          ("small_put", "node"), ("small_get", "node"), ("static_small_get", "static"))


def _target(res: dict, name: str) -> str:
    t = res["targets"][name]
    return f"{t['target']}: {'yes' if t['met'] else 'NO'}"


def _size(n: int) -> str:
    return f"{n / 1024**3:g} GiB" if n >= 1024**3 else f"{n / MiB:g} MiB"


async def run_bench(plan: Plan, node: MeshdProcess, static: StaticServer) -> tuple[list[dict], dict, dict]:
    bench = Bench(plan, node, static)
    try:
        await bench.s3.create_bucket(BUCKET)
        rss = {"start_kib": proc_status_kib(node.pid, "VmHWM")}
        rounds = []
        for r in range(plan.rounds):
            rounds.append(await bench.round(r))
            print(f"round {r + 1}/{plan.rounds}: PUT {rounds[-1]['put_1mib']['mb_s']} MB/s, "
                  f"GET {rounds[-1]['get_1mib']['mb_s']} MB/s vs static {rounds[-1]['static_get_1mib']['mb_s']} "
                  f"(ratio {rounds[-1]['get_ratio']}), 4 KiB PUT+GET {rounds[-1]['small_put_get_ops_s']} ops/s",
                  file=sys.stderr, flush=True)
        rss["after_rounds_kib"] = proc_status_kib(node.pid, "VmHWM")
        big = await bench.big()
        print(f"big: PUT {big['put']['mb_s']} MB/s, GET {big['get']['mb_s']} MB/s, sha256 ok",
              file=sys.stderr, flush=True)
        rss["peak_kib"] = proc_status_kib(node.pid, "VmHWM")
        rss["current_kib"] = proc_status_kib(node.pid, "VmRSS")
        return rounds, big, rss
    finally:
        await bench.close()


def build_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        rounds=args.rounds or (2 if quick else 3),
        concurrency=args.concurrency,
        objects=args.objects or (16 if quick else 128),
        object_bytes=MiB,
        get_passes=1 if quick else 4,
        small_ops=args.small_ops or (64 if quick else 1000),
        small_bytes=4096,
        big_bytes=int((args.size_gib if args.size_gib is not None else (1 / 128 if quick else 1)) * 1024**3),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="meshd single-node benchmark")
    p.add_argument("--quick", action="store_true", help="small counts and a tiny big object (smoke run)")
    p.add_argument("--rounds", type=int, help="rounds of the 1 MiB and 4 KiB phases (default 3; quick 2)")
    p.add_argument("--size-gib", type=float, help="size of the big streamed object in GiB (default 1)")
    p.add_argument("--objects", type=int, help="1 MiB objects per round (default 128)")
    p.add_argument("--small-ops", type=int, help="4 KiB objects per round (default 1000)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json", help="where to write the JSON")
    p.add_argument("--data-dir", type=Path, help="work directory (default: a temporary one, removed after)")
    args = p.parse_args(argv)
    for name in ("rounds", "objects", "small_ops"):
        v = getattr(args, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.concurrency < 1 or (args.size_gib is not None and args.size_gib <= 0):
        p.error("--concurrency and --size-gib must be positive")
    return args


def publish(table_text: str, res: dict, path: Path) -> None:
    """Every bench ends the same way: the table, then the JSON, printed and written."""
    print(table_text)
    text = json.dumps(res, indent=2)
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = build_plan(args)
    work = Path(tempfile.mkdtemp(prefix="meshd-bench-", dir=args.data_dir))
    # Blobs stored plain, as the static server serves them: this bench compares
    # the S3 path with a static file server. bench/storage.py measures encryption.
    config = work / "meshd.toml"
    config.write_text('[backends.local]\ntype = "filesystem"\nencrypt = false\n')
    node = MeshdProcess(work / "data", config=config)
    # The static server's root: the node's blob files (the very same files the
    # node sends for 1 MiB objects) and, beside them, plain files the bench
    # writes for the small objects, which the node keeps inside its catalog.
    static_root = work / "static"
    (static_root / "small").mkdir(parents=True)
    (static_root / "blobs").symlink_to(work / "data" / "store" / "blobs")
    static = StaticServer(static_root, work / "static.stderr.log")
    machine = {"loadavg_before": os.getloadavg()[0], "fsync_ms_p50_before": fsync_probe_ms(work)}
    try:
        node.start()
        static.start()
        rounds, big, rss = asyncio.run(run_bench(plan, node, static))
    except BaseException:
        if node.log_path is not None and node.log_path.exists():
            sys.stderr.write(node.stderr_text()[-4000:])
        raise
    finally:
        static.stop()
        node.stop()
        shutil.rmtree(work, ignore_errors=True)
    machine.update(loadavg_after=os.getloadavg()[0])
    meta = {
        "plan": plan.__dict__, "machine": machine, "quick": args.quick, "python": platform.python_version(),
        "aiohttp": aiohttp.__version__, "cpus": os.cpu_count(), "cpu_note":
        "cpu_pct: CPU time / wall time of each process during the phase (100 = one core); "
        "others: the rest of the machine",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    res = summarise(plan, rounds, big, rss, meta)
    publish(table(res), res, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
