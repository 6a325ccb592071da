"""`meshd scrub [--status]`: run a scrub pass on the running node (or show
the scrubber's status) over its admin socket (meshd/admin.py).

Exit codes: 0 nothing corrupt, 1 corrupt blobs found, 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from meshd.admin import AdminClient, AdminError, add_node_options, data_dir_of, human_size
from meshd.config import ConfigError

EXIT_CLEAN, EXIT_CORRUPT, EXIT_ERROR = 0, 1, 2
UNREACHABLE_PRINTED = 10


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scrub", help="re-read and verify every blob of the running node now")
    add_node_options(p)
    p.add_argument("--status", action="store_true", help="show the scrubber's state and last pass, run nothing")
    p.add_argument("--paced", action="store_true", help="read at [scrub] bytes_per_second (default: unpaced)")
    p.add_argument("--json", action="store_true", help="print the node's JSON answer")


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        client = AdminClient(data_dir_of(args))
        if args.status:
            data = client.request("GET", "/scrub")
            print(json.dumps(data, indent=2) if args.json else format_status(data), file=out)
            return EXIT_CLEAN
        data = client.request("POST", "/scrub" + ("?paced=1" if args.paced else ""))
    except (AdminError, ConfigError, OSError) as e:
        print(f"meshd: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(data, indent=2) if args.json else format_report(data), file=out)
    if data.get("corrupt"):
        return EXIT_CORRUPT
    if data.get("error"):
        print(f"meshd: error: the scrub pass stopped early: {data['error']}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_CLEAN


def format_report(r: dict[str, Any]) -> str:
    lines = [(f"checked {r['checked']} blobs / {human_size(r['bytes'])} ({r['bytes']} bytes) "
              f"in {r['seconds']:.2f} s")]
    lines.append(f"corrupt: {len(r['corrupt'])}")
    for c in r["corrupt"]:
        lines.append(f"  {c['content_id']} on {c['backend']}: {c['reason']}")
        for v in c["versions"]:
            lines.append(f"    used by {v['bucket']}/{v['key']} version {v['version_id']}")
        if not c["versions"]:
            lines.append("    used by no version (a multipart part)")
    lines.append(f"unreachable: {r['unreachable']} (tried again next pass)")
    for u in r["unreachable_blobs"][:UNREACHABLE_PRINTED]:
        lines.append(f"  {u['content_id']} on {u['backend']}: {u['reason']}")
    if r["unreachable"] > UNREACHABLE_PRINTED:
        lines.append(f"  ... and {r['unreachable'] - UNREACHABLE_PRINTED} more")
    lines.append(f"damaged in total: {r['damaged_total']} ({r['already_damaged']} found by earlier passes "
                 f"or reads; a PUT of the same bytes repairs a blob)")
    if r.get("skipped_ingested"):
        lines.append(f"skipped {r['skipped_ingested']} ingested files (ingestion checks those)")
    if r.get("error"):
        lines.append(f"stopped early: {r['error']}")
    return "\n".join(lines)


def format_status(s: dict[str, Any]) -> str:
    every = f"every {s['interval_seconds']:g} s" if s["interval_seconds"] else "only on demand (meshd scrub)"
    pace = f"{human_size(s['bytes_per_second'])}/s" if s["bytes_per_second"] else "unpaced"
    lines = [f"state: {s['state']}", f"background passes: {every}, {pace}"]
    for label, r in (("current pass", s["current"]), ("last pass", s["last"])):
        if r is None:
            continue
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
        ended = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["finished"]))
                 if r.get("finished") else "running")
        lines.append(f"{label}: {started} -> {ended}, checked {r['checked']} blobs / {human_size(r['bytes'])}, "
                     f"corrupt {len(r['corrupt'])}, unreachable {r['unreachable']}, "
                     f"damaged in total {r['damaged_total']}")
    if s["last"] is None and s["current"] is None:
        lines.append("no pass since the node started")
    return "\n".join(lines)
