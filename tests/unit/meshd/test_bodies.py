"""meshd/bodies.py: a FileRegion with `expect` (ingested files) is
refused when the file's size or mtime is no longer the recorded one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.base import FileRegion
from meshd.errors import StorageUnavailable
from meshd.bodies import check_unchanged, open_region, read_region


def region_of(path: Path, offset: int = 0, length: int | None = None, *, checked: bool = True) -> FileRegion:
    st = path.stat()
    size = st.st_size if length is None else length
    return FileRegion(path, offset, size, expect=(st.st_size, st.st_mtime_ns) if checked else None)


async def test_unchanged_file_is_read(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    assert await read_region(region_of(p)) == b"0123456789"
    assert await read_region(region_of(p, 3, 4)) == b"3456"


async def test_changed_file_is_refused_before_any_byte(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    region = region_of(p)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same bytes, new mtime
    with pytest.raises(StorageUnavailable, match="changed on disk"):
        await read_region(region)
    with pytest.raises(StorageUnavailable):
        open_region(region)
    p.write_bytes(b"longer than before")
    with pytest.raises(StorageUnavailable):
        await read_region(region)


def test_a_change_after_opening_is_seen_on_the_descriptor(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    region = region_of(p)
    with open_region(region) as f:
        check_unchanged(f.fileno(), region)
        with open(p, "ab") as w:  # appended while "being sent"
            w.write(b"d")
        with pytest.raises(StorageUnavailable):
            check_unchanged(f.fileno(), region)


async def test_regions_without_expect_are_not_checked(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    p.write_bytes(b"node's own blob")
    region = region_of(p, checked=False)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    assert await read_region(region) == b"node's own blob"
