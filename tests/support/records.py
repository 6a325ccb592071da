"""Version records for catalog tests: ids from a counter, so each new one is newer."""

from __future__ import annotations

import itertools

from meshd.hlc import VersionId
from meshd.model import VersionRecord

ORIGIN = "00000000000000b2"

_clock = itertools.count(1)


def vid(origin: str = ORIGIN) -> str:
    """A fresh version id, newer than every one handed out before."""
    return str(VersionId(next(_clock) << 16, origin))


def stamp(t: int, node: str = ORIGIN) -> str:
    """A tags stamp at logical time `t` (seconds of HLC, as it were) from `node`."""
    return str(VersionId(t << 16, node))


def version(key: str, sha: str | None = "aa" * 32, *, version_id: str | None = None, size: int = 5,
            bucket: str = "bkt", delete_marker: bool = False, **kw) -> VersionRecord:
    version_id = version_id or vid()
    return VersionRecord(
        bucket=bucket, key=key, version_id=version_id, hlc=int(version_id[:16], 16), origin=version_id[16:],
        size=0 if delete_marker else size, etag='"etag"', sha256=None if delete_marker else sha,
        last_modified_ms=1234, delete_marker=delete_marker, **kw,
    )
