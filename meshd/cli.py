"""The `meshd` command: `meshd run [--config FILE] [--listen HOST:PORT] [--data DIR]`,
and `meshd ingest status|rescan` and `meshd scrub [--status]`, which talk to a running node
(meshd/ingest_cli.py, meshd/scrub_cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Coroutine

from backends.encryption import MasterKeyError
from meshd import ingest_cli, scrub_cli
from meshd.allocator import keep_freed_buffers
from meshd.config import ConfigError, cli_overrides, load_config
from meshd.node import Node, NodeInfo
from registry_client.credentials import InitialCredentials

# CLI flags that override a config key (flag -> dotted key), derived from the config's fields.
OVERRIDES = {o.flag: o.key for o in cli_overrides()}


def _version() -> str:
    try:
        return version("meshd")
    except PackageNotFoundError:  # running from a source tree
        return "0.0.0+src"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshd", description="A peer-to-peer S3 data proxy mesh node.")
    p.add_argument("--version", action="version", version=f"meshd {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a node in the foreground")
    run.add_argument("--config", type=Path, help="TOML config file (default: embedded defaults)")
    for o in cli_overrides():
        run.add_argument(f"--{o.flag}", metavar=o.metavar, help=f"{o.help} (overrides {o.key})")
    ingest_cli.add_parser(sub)
    scrub_cli.add_parser(sub)
    return p


def banner(info: NodeInfo) -> str:
    k = info.admin_key
    return "\n".join((
        f"meshd {_version()} node {info.node_id}",
        f"  endpoint:   {info.endpoint}",
        f"  data:       {info.data_dir}",
        f"  access key: {k.access_key}",
        f"  secret key: {k.secret_key}",
        "try:",
        f"  export AWS_ACCESS_KEY_ID={k.access_key} AWS_SECRET_ACCESS_KEY='{k.secret_key}' "
        f"AWS_DEFAULT_REGION={info.region}",
        f"  aws --endpoint-url {info.endpoint} s3 mb s3://demo",
        f"  aws --endpoint-url {info.endpoint} s3 cp README.md s3://demo/",
        f"  aws --endpoint-url {info.endpoint} s3 ls s3://demo/",
        "ready",
    ))


async def _run(node: Node) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Inside the try: a start that fails half-way (port in use) still closes
        # what it opened (catalog thread, databases) before the process exits.
        info = await node.start()
        print(banner(info), flush=True)
        await stop.wait()
        logging.getLogger("meshd").info("shutting down")
    finally:
        await node.stop()


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the node on uvloop where it is installed (markedly less CPU per
    request than asyncio's own loop), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "ingest":
        return ingest_cli.main(args)
    if args.command == "scrub":
        return scrub_cli.main(args)
    try:
        config = load_config(args.config)
        overrides = {key: getattr(args, flag) for flag, key in OVERRIDES.items() if getattr(args, flag)}
        config = config.with_overrides(overrides) if overrides else config
        initial = InitialCredentials.from_env()
    except (ConfigError, ValueError) as e:
        print(f"meshd: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log.level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    keep_freed_buffers()
    try:
        run_loop(_run(Node(config, initial)))
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"meshd: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except (MasterKeyError, ConfigError) as e:
        print(f"meshd: error: {e}", file=sys.stderr)
        return 1
    return 0
