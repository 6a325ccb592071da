"""s3gateway/sendfile.py on real loopback sockets, under asyncio's loop and
uvloop: every byte arrives, a slow reader is waited for (the socket fills up),
a client that goes away ends the send with an error, and a transport with
bytes still buffered is refused (the caller falls back to chunks)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
import uvloop

from s3gateway.sendfile import send_file

pytestmark = pytest.mark.timeout(60)

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop_name: str, coro_fn):
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


async def serve_once(handler) -> tuple[asyncio.AbstractServer, int]:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_every_byte_arrives_even_to_a_slow_reader(loop_name: str, tmp_path: Path) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)
    path = tmp_path / "blob"
    path.write_bytes(data)
    result: dict[str, int] = {}

    async def main() -> bytes:
        async def handler(writer: asyncio.StreamWriter) -> None:
            writer.write(b"HEAD")  # like response headers, written first
            await writer.drain()
            with open(path, "rb") as f:
                result["sent"] = await send_file(writer.transport, f, 100, len(data) - 100)

        server, port = await serve_once(handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = bytearray()
        while True:
            piece = await reader.read(65536)
            if not piece:
                break
            got.extend(piece)
            if len(got) < 1024 * 1024:
                await asyncio.sleep(0.001)  # slow at first: the server's socket fills up
        writer.close()
        server.close()
        return bytes(got)

    got = run(loop_name, main)
    assert got == b"HEAD" + data[100:]
    assert result["sent"] == len(data) - 100


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_file_that_ends_early_sends_what_it_has(loop_name: str, tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"x" * 1000)

    async def main() -> int:
        sent: list[int] = []

        async def handler(writer: asyncio.StreamWriter) -> None:
            with open(path, "rb") as f:
                sent.append(await send_file(writer.transport, f, 0, 5000))

        server, port = await serve_once(handler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b"x" * 1000
        writer.close()
        server.close()
        return sent[0]

    assert run(loop_name, main) == 1000


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_client_that_goes_away_ends_the_send(loop_name: str, tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(os.urandom(32 * 1024 * 1024))

    async def main() -> BaseException | None:
        outcome: list[BaseException | None] = []
        done = asyncio.Event()

        async def handler(writer: asyncio.StreamWriter) -> None:
            try:
                with open(path, "rb") as f:
                    await send_file(writer.transport, f, 0, path.stat().st_size)
                outcome.append(None)
            except Exception as e:
                outcome.append(e)
            done.set()

        def client() -> None:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.recv(1000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # a reset, with most of the file still unsent

        server, port = await serve_once(handler)
        await asyncio.to_thread(client)
        await asyncio.wait_for(done.wait(), 30)
        server.close()
        return outcome[0]

    error = run(loop_name, main)
    assert isinstance(error, (ConnectionError, OSError))


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_buffered_bytes_or_a_closing_transport_are_refused(loop_name: str, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")

    class Transport:
        def __init__(self, buffered: int, closing: bool) -> None:
            self.buffered, self.closing = buffered, closing

        def is_closing(self) -> bool:
            return self.closing

        def get_write_buffer_size(self) -> int:
            return self.buffered

        def get_extra_info(self, name: str):
            return socket.socket() if name == "socket" else None

    async def main() -> None:
        with open(path, "rb") as f:
            with pytest.raises(NotImplementedError):
                await send_file(Transport(10, False), f, 0, 3)  # type: ignore[arg-type]
            with pytest.raises(ConnectionResetError):
                await send_file(Transport(0, True), f, 0, 3)  # type: ignore[arg-type]

    run(loop_name, main)
