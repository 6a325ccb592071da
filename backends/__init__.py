"""Storage behind one async interface (see `backends.base.Backend`)."""

from backends.base import (
    Backend,
    BackendError,
    BackendFull,
    BlobRef,
    FileRegion,
    StagedBlob,
)

__all__ = ["Backend", "BackendError", "BackendFull", "BlobRef", "FileRegion", "StagedBlob"]
