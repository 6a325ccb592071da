"""Scrub passes while clients keep writing and deleting versions: blobs appear,
are shared by several versions, lose their last reference and are deleted, all
during the pass. None of that may be reported (or marked) as corruption."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.process import MeshdProcess

pytestmark = pytest.mark.timeout(180)

BUCKET = "churn"
PASSES = 6


def test_scrub_during_writes_and_deletes_finds_nothing(tmp_path: Path):
    # Paced passes (about half a second each) leave room for blobs to come and go mid-pass.
    config = tmp_path / "scrub.toml"
    config.write_text("[scrub]\ninterval_seconds = 0\nbytes_per_second = 4194304\n")
    node = MeshdProcess(tmp_path / "data", config=config).start()
    try:
        s3 = node.client()
        s3.create_bucket(Bucket=BUCKET)
        # Stable objects give each pass work to do; the churned contents are
        # each put and deleted again, so their blobs come and go during a pass.
        stable = [os.urandom(256 * 1024) for _ in range(8)]
        for i, body in enumerate(stable):
            s3.put_object(Bucket=BUCKET, Key=f"stable/{i}", Body=body)
        churned = {w: [os.urandom(20_000 + 4096 * i) for i in range(3)] + [os.urandom(100)] for w in range(3)}
        contents = stable + [c for cs in churned.values() for c in cs]
        stop = threading.Event()
        errors: list[BaseException] = []

        def churn(worker: int) -> None:
            client = node.client()
            n = 0
            previous: tuple[str, str] | None = None
            try:
                while not stop.is_set():
                    key = f"w{worker}/k{n % 5}"
                    body = churned[worker][n % len(churned[worker])]
                    vid = client.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"]
                    # The previous version deleted for good once the next is in: each
                    # blob lives about one round, then loses its last reference and is removed.
                    if previous is not None:
                        client.delete_object(Bucket=BUCKET, Key=previous[0], VersionId=previous[1])
                    previous = (key, vid)
                    n += 1
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        workers = [threading.Thread(target=churn, args=(i,)) for i in range(3)]
        for w in workers:
            w.start()
        reports = []
        try:
            for _ in range(PASSES):
                r = subprocess.run([sys.executable, "-m", "meshd", "scrub", "--json", "--paced",
                                    "--data", str(node.data_dir)], capture_output=True, text=True, timeout=60, check=False)
                assert r.returncode == 0, r.stdout + r.stderr
                reports.append(json.loads(r.stdout))
        finally:
            stop.set()
            for w in workers:
                w.join()
        assert not errors, errors
        assert all(rep["corrupt"] == [] and rep["damaged_total"] == 0 for rep in reports)
        assert sum(rep["checked"] for rep in reports) > 0

        # Every version left reads back intact, and a quiet pass is clean too.
        for v in s3.list_object_versions(Bucket=BUCKET).get("Versions", []):
            body = s3.get_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            assert hashlib.sha256(body).hexdigest() in {hashlib.sha256(c).hexdigest() for c in contents}
        final = subprocess.run([sys.executable, "-m", "meshd", "scrub", "--json", "--data", str(node.data_dir)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert final.returncode == 0 and json.loads(final.stdout)["vanished"] == 0
    finally:
        node.stop()
