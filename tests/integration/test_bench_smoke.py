"""Smoke run of bench/run.py, so the benchmark script does not rot.

Runs `python bench/run.py --quick` with tiny counts (a real node and a real
static file server, real traffic) and checks that the JSON it writes carries
every figure, the baseline, the ratios and the targets. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

FIGURES = (
    "put_1mib_mb_s", "get_1mib_mb_s", "static_get_1mib_mb_s", "get_ratio",
    "small_put_ops_s", "small_get_ops_s", "small_put_get_ops_s", "static_small_get_ops_s",
    "big_put_mb_s", "big_get_mb_s",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--rounds", "1", "--objects", "8",
         "--small-ops", "32", "--size-gib", str(3 / 1024), "--json", str(out), "--data-dir", str(tmp)],
        capture_output=True, text=True, timeout=100, cwd=tmp,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_every_figure_is_a_positive_number(quick_run: tuple[dict, str]) -> None:
    res, _ = quick_run
    for name in FIGURES:
        assert isinstance(res[name], (int, float)) and res[name] > 0, name


def test_big_object_came_back_intact_and_rss_was_read(quick_run: tuple[dict, str]) -> None:
    res, _ = quick_run
    assert res["big_bytes"] == 3 * 1024 * 1024
    assert res["big_sha256_ok"] is True
    assert len(res["big"]["sha256"]) == 64
    rss = res["node_rss_mib"]
    assert 0 < rss["start"] <= rss["after_rounds_peak"] <= rss["after_big_put_peak"] <= rss["peak"]


def test_rounds_carry_the_baseline_and_ratio(quick_run: tuple[dict, str]) -> None:
    res, _ = quick_run
    assert res["meta"]["plan"]["rounds"] == len(res["rounds"]) == 1
    r = res["rounds"][0]
    assert r["get_ratio"] == pytest.approx(r["get_1mib"]["mb_s"] / r["static_get_1mib"]["mb_s"], rel=0.01)
    assert r["get_1mib"]["ops"] == r["static_get_1mib"]["ops"] == 8
    assert set(r["get_1mib"]["cpu_pct"]) == {"node", "static", "client", "others"}


def test_targets_are_reported_not_asserted(quick_run: tuple[dict, str]) -> None:
    res, stdout = quick_run
    assert set(res["targets"]) == {"peak_rss_mib", "get_ratio", "small_put_get_ops_s"}
    for t in res["targets"].values():
        assert isinstance(t["met"], bool) and t["target"] and "value" in t
    # A 3 MiB "big" object cannot show the 1 GiB RSS target as met.
    assert res["targets"]["peak_rss_mib"]["met"] is False
    assert "1 MiB GET (MB/s)" in stdout and "node peak RSS (MiB)" in stdout
    machine = res["meta"]["machine"]
    assert machine["fsync_ms_p50_before"] > 0 and machine["loadavg_before"] >= 0


def test_work_directory_is_removed(quick_run: tuple[dict, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    res, _ = quick_run
    base = tmp_path_factory.getbasetemp()
    assert not list(base.glob("bench*/meshd-bench-*")), "the bench left its data behind"
