"""`meshd ingest status` and `meshd ingest rescan`: talk to the running node
over its admin socket (`<data_dir>/admin.sock`, see meshd/admin.py)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from meshd.admin import AdminClient, AdminError, add_node_options, data_dir_of, human_size
from meshd.config import ConfigError

SKIPPED_PRINTED = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    ingest = sub.add_parser("ingest", help="ingested directories of the running node")
    isub = ingest.add_subparsers(dest="ingest_command", required=True)
    for name, help in (("status", "files, hashing progress, skipped files and last scan of each entry"),
                       ("rescan", "scan now, wait for it and print what changed")):
        p = isub.add_parser(name, help=help)
        add_node_options(p)
        p.add_argument("--json", action="store_true", help="print the node's JSON answer")
        if name == "rescan":
            p.add_argument("--entry", type=int, help="only this [[ingest]] entry (0-based)")


def main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        client = AdminClient(data_dir_of(args))
        if args.ingest_command == "status":
            data = client.request("GET", "/ingest/status")
            print(json.dumps(data, indent=2) if args.json else format_status(data), file=out)
        else:
            query = f"?entry={args.entry}" if args.entry is not None else ""
            data = client.request("POST", "/ingest/rescan" + query)
            print(json.dumps(data, indent=2) if args.json else format_rescan(data), file=out)
    except (AdminError, ConfigError) as e:
        print(f"meshd: error: {e}", file=sys.stderr)
        return 1
    return 0


def format_status(data: dict[str, Any]) -> str:
    entries = data.get("entries", [])
    if not entries:
        return "no [[ingest]] entries configured"
    lines = []
    for e in entries:
        lines.append(f"[{e['entry']}] {e['path']} -> s3://{e['bucket']}/{e['prefix']}")
        lines.append(f"  files:   {e['files']} ({human_size(e['bytes'])})")
        pct = 100.0 * e["hashed_bytes"] / e["bytes"] if e["bytes"] else 100.0
        lines.append(f"  hashed:  {e['hashed_files']}/{e['files']} files, "
                     f"{human_size(e['hashed_bytes'])} ({pct:.1f}%)")
        last = e.get("last_scan")
        if e.get("scanning"):
            lines.append("  scan:    running")
        if last is None:
            lines.append("  last scan: none yet")
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started"]))
        lines.append(f"  last scan: {when}, {last['seconds']:.2f} s, +{last['added']} "
                     f"~{last['changed']} -{last['removed']}")
        if last.get("error"):
            lines.append(f"  last scan error: {last['error']}")
        lines.append(f"  skipped: {last['skipped_total']}")
        for s in last["skipped"][:SKIPPED_PRINTED]:
            lines.append(f"    {s['path']}: {s['reason']}")
        if last["skipped_total"] > SKIPPED_PRINTED:
            lines.append(f"    ... and {last['skipped_total'] - SKIPPED_PRINTED} more")
    return "\n".join(lines)


def format_rescan(data: dict[str, Any]) -> str:
    lines = []
    for s in data.get("scans", []):
        line = (f"[{s['entry']}] added {s['added']}, changed {s['changed']}, removed {s['removed']}, "
                f"skipped {s['skipped_total']}; {s['files']} files in {s['seconds']:.2f} s")
        if s.get("error"):
            line += f" (error: {s['error']})"
        lines.append(line)
    return "\n".join(lines) or "no [[ingest]] entries configured"
