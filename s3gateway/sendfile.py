"""Zero-copy sending of a file's bytes to a client's socket.

asyncio's own loop has `loop.sendfile`; uvloop (the node's loop where it is
installed) does not. Both are served the same way here: the kernel's
sendfile(2) runs in a thread of its own, waiting for the socket to take more
with poll(2), so neither a slow client nor a file that is not in the page
cache ever blocks the event loop. The transport's own buffer must be empty
first (the response headers are on the wire), else the bytes would overtake
them: then, and where there is no socket, the caller falls back to writing
chunks (NotImplementedError).
"""

from __future__ import annotations

import asyncio
import os
import select
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

# Threads only wait in sendfile/poll: many cost little, and a few slow clients
# must not starve the default executor the rest of the node uses.
MAX_SENDERS = 64
# A client that takes nothing for this long is given up on.
STALL_SECONDS = 120.0

_senders: ThreadPoolExecutor | None = None


async def send_file(transport: asyncio.Transport, f: BinaryIO, offset: int, count: int) -> int:
    """Send `count` bytes of `f` from `offset` on the transport's socket; the
    bytes sent (fewer only if the file ends first)."""
    if transport.is_closing():
        raise ConnectionResetError("client went away")
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_write_buffer_size():
        raise NotImplementedError("the socket is not free for sendfile")
    global _senders
    if _senders is None:
        _senders = ThreadPoolExecutor(max_workers=MAX_SENDERS, thread_name_prefix="sendfile")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_senders, _send_blocking, sock.fileno(), f.fileno(), offset, count)


def _send_blocking(sock_fd: int, file_fd: int, offset: int, count: int) -> int:
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    sent = 0
    while sent < count:
        try:
            n = os.sendfile(sock_fd, file_fd, offset + sent, count - sent)
        except BlockingIOError:  # the socket's buffer is full: wait for the client
            events = poller.poll(STALL_SECONDS * 1000)
            if not events:
                raise TimeoutError("the client took no bytes for too long") from None
            if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
                raise ConnectionResetError("client went away") from None
            continue
        if n == 0:  # the file ends here
            break
        sent += n
    return sent
