"""Waiting for a condition, never for a fixed time: poll `predicate` until it
gives something truthy (returned) or `timeout` seconds pass (AssertionError
naming `what`). The interval only bounds how late the wait notices; the test
does not depend on it."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, *, what: str = "condition",
               interval: float = 0.01) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], T | Awaitable[T]], timeout: float = 30.0, *,
                           what: str = "condition", interval: float = 0.005) -> T:
    """The same on an event loop: the loop keeps running between polls. `predicate`
    may be a coroutine function (wrap blocking checks in asyncio.to_thread)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
