"""The benchmark's baseline: a plain static file server (aiohttp FileResponse).

    python bench/static_server.py --root DIR [--listen 127.0.0.1:0]

Serves `GET /<relative path>` from DIR with `web.FileResponse` (sendfile, every
open/stat off the loop), exactly as an aiohttp application would serve static
files, and nothing else: no auth, no catalog. The bench roots it at a directory
holding a link to the node's blob directory (so both servers send the very same
files from the page cache) and plain copies of the small objects, which the node
keeps inside its catalog.
Prints `endpoint: URL` and then `ready`, like `meshd run`, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

ROOT_KEY = web.AppKey("root", Path)


async def serve_file(request: web.Request) -> web.StreamResponse:
    rel = request.match_info["path"]
    if ".." in rel.split("/"):
        raise web.HTTPForbidden()
    return web.FileResponse(request.app[ROOT_KEY] / rel)


def make_app(root: Path) -> web.Application:
    app = web.Application()
    app[ROOT_KEY] = root
    app.router.add_get("/{path:.+}", serve_file)
    return app


async def run(root: Path, host: str, port: int) -> None:
    # Same server settings as the node's runner: no access log, default loop.
    runner = web.AppRunner(make_app(root), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"endpoint: http://{bound_host}:{bound_port}", flush=True)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="directory to serve")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    asyncio.run(run(args.root.resolve(), host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
