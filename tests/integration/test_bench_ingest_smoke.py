"""Smoke run of bench/ingest.py, so the ingestion benchmark does not rot.

Runs it with tiny counts (real nodes, the real `meshd ingest` CLI and
`sha256sum`) and checks that the JSON carries every figure and target. No
timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


def test_quick_ingest_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest.py"), "--quick", "--files", "300", "--hash-files", "2",
         "--hash-mib", "2", "--json", str(out), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=170, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["plan"]["files"] == 300
    for name in ("start_to_listable_s", "ready_to_listable_s", "node_first_scan_s", "rescan_cli_wall_s",
                 "rescan_node_s"):
        assert res["scan"][name] >= 0, name
    assert res["scan"]["rescan_changes"] == 0  # nothing changed between the scans
    assert res["hashing"]["hashed_bytes"] == 2 * 2 * 1024 * 1024
    assert res["hashing"]["sha256sum_mb_s"] > 0 and res["hashing"]["node_hasher_mb_s"] > 0
    assert set(res["targets"]) == {"scan_10k_under_10s", "hash_vs_sha256sum"}
    assert "node / sha256sum" in proc.stdout
    # The work directory is removed afterwards.
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
