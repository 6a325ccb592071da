"""meshd/allocator.py: glibc keeps freed megabyte buffers for reuse."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from meshd import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_settings_are_accepted_by_glibc():
    assert allocator.keep_freed_buffers() is True
    assert allocator.keep_freed_buffers() is True  # idempotent: the CLI may call it again


def test_without_a_c_library_nothing_changes(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.keep_freed_buffers() is False
