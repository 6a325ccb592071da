"""The admin channel: a small JSON HTTP API on a unix socket in the data dir.

`<data_dir>/admin.sock` (mode 0600: only the node's own user can talk to it),
so `meshd ingest status` and friends reach the running node without keys or
ports. Services contribute their routes (`IngestService.admin_routes()`, later a
scrubber's `/scrub`); node.py builds the server with them and starts it last.

`AdminClient` is the CLI's side: plain blocking HTTP over the socket.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from meshd.config import load_config

SOCKET_NAME = "admin.sock"
# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH = 107


class AdminPathTooLong(ValueError):
    """The data directory's path is too long for a unix socket below it."""


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """A path to bind or connect to: the path itself, or, when it is longer than
    sun_path allows (deep test and bench directories), the same file reached
    through /proc/self/fd of its open directory."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # no directory: no node
    try:
        short = f"/proc/self/fd/{fd}/{path.name}"
        if not os.path.isdir(f"/proc/self/fd/{fd}") or len(short) > MAX_SOCKET_PATH:
            raise AdminPathTooLong(f"{path} is longer than a unix socket path may be")
        yield short
    finally:
        os.close(fd)


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


class AdminServer:
    def __init__(self, path: Path, routes: Iterable[web.RouteDef]) -> None:
        self.path = path
        self._app = web.Application()
        self._app.router.add_get("/", self._index)
        self._app.add_routes(list(routes))
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._remove_stale()
        # Bound and chmod-ed before listen(): nobody can connect while it is still 0755.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _addressable(self.path) as where:
                sock.bind(where)
            os.chmod(self.path, 0o600)
        except BaseException:
            sock.close()
            raise
        self._runner = web.AppRunner(self._app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    def _remove_stale(self) -> None:
        """A socket file left by a node that died; refuse to steal a live one."""
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _addressable(self.path) as where:
                probe.connect(where)
        except OSError:
            self.path.unlink(missing_ok=True)
            return
        finally:
            probe.close()
        raise OSError(f"another node is running with this data directory ({self.path} answers)")

    async def aclose(self) -> None:
        try:
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            self.path.unlink(missing_ok=True)

    async def _index(self, request: web.Request) -> web.Response:
        routes = sorted({f"{r.method} {r.resource.canonical}" for r in self._app.router.routes()
                         if r.resource is not None and r.method != "HEAD"})
        return web.json_response({"routes": routes})


def add_node_options(p: argparse.ArgumentParser) -> None:
    """How an admin command finds the running node: its data directory."""
    p.add_argument("--config", type=Path, help="the node's TOML config file (to find its data dir)")
    p.add_argument("--data", type=Path, help="the node's data directory (overrides the config)")


def data_dir_of(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return args.data
    return load_config(args.config).node.data_dir


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class AdminError(Exception):
    """The node could not be reached, or answered with an error."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with _addressable(self._path) as where:
                sock.connect(where)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class AdminClient:
    def __init__(self, data_dir: Path, timeout: float | None = None) -> None:
        self.path = socket_path(data_dir)
        self.timeout = timeout

    def request(self, method: str, path: str) -> dict[str, Any]:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            try:
                conn.request(method, path)
                resp = conn.getresponse()
                body = resp.read()
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                raise AdminError(f"no node is running with data directory {self.path.parent} "
                                 f"(nothing answers on {self.path})") from None
            except (OSError, AdminPathTooLong) as e:
                raise AdminError(f"cannot talk to the node on {self.path}: {getattr(e, 'strerror', None) or e}") from None
        finally:
            conn.close()
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            raise AdminError(f"the node answered {resp.status} with a body that is not JSON") from None
        if resp.status >= 400:
            raise AdminError(data.get("error") or f"the node answered {resp.status}")
        return data
