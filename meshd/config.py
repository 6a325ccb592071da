"""The node's configuration: one typed, frozen record loaded from TOML and validated
once at start-up.

Every section is a frozen dataclass; the loader walks the dataclass fields, so an
unknown key or a value of the wrong type stops start-up with a `ConfigError` that
names the offending key (``s3.listen: expected HOST:PORT, got 'x'``).

Fields carry their limits and, where the command line may override them, their
flag in `field(metadata=...)`: the validator and `meshd run`'s flags are derived
from the fields, never copied by hand. config.example.toml at the repository root
documents every key (a unit test keeps it equal to these defaults).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from meshd.errors import InvalidBucketName
from meshd.names import validate_bucket_name


class ConfigError(Exception):
    """A configuration problem; the message is one line naming the key."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Listen":
        host, sep, port = text.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if bracketed:
            host = host[1:-1]
        ok = (
            sep and host and port.isascii() and port.isdigit() and len(port) <= 5
            and int(port) <= 65535 and not any(c.isspace() or c in "[]/" for c in host)
        )
        if not ok:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _limits(lo: float | None = None, hi: float | None = None, *, above: float | None = None) -> dict[str, Any]:
    """Field metadata: inclusive bounds `lo`..`hi`, or strictly greater than `above`."""
    return {"lo": lo, "hi": hi, "above": above}


def _cli(flag: str, metavar: str, help: str) -> dict[str, Any]:
    """Field metadata: `meshd run --FLAG VALUE` overrides this key."""
    return {"cli": (flag, metavar, help)}


@dataclass(frozen=True)
class NodeSection:
    # Human-readable node name, shown in logs and (later) to peers.
    name: str = "meshd"
    # Where the catalog, blobs and credentials live.
    data_dir: Path = field(default=Path("./meshd-data"), metadata=_cli("data", "DIR", "data directory"))


@dataclass(frozen=True)
class S3Section:
    listen: Listen = field(default=Listen("127.0.0.1", 9000), metadata=_cli("listen", "HOST:PORT", "S3 listen address"))
    region: str = "us-east-1"
    # Host names under which buckets are addressed virtual-host style:
    # with "s3.localhost", "photos.s3.localhost" names bucket "photos".
    virtual_host_domains: tuple[str, ...] = ("localhost", "s3.localhost")
    # Largest tolerated difference between a request's date and ours.
    max_clock_skew_seconds: int = 900
    # Limits that keep a misbehaving client from holding resources.
    max_header_bytes: int = field(default=16384, metadata=_limits(1024))
    max_xml_body_bytes: int = field(default=2 * 1024 * 1024, metadata=_limits(1))
    # Idle connections are closed after this many seconds.
    keepalive_timeout_seconds: float = 75.0
    # Seconds a client may take to send each chunk of a body before we give up.
    body_read_timeout_seconds: float = field(default=120.0, metadata=_limits(above=0))
    # Seconds SIGTERM waits for requests in flight before closing them.
    shutdown_grace_seconds: float = 10.0


@dataclass(frozen=True)
class StorageSection:
    # Bytes read from disk and handed to the hasher/writer per step.
    io_chunk_bytes: int = field(default=1024 * 1024, metadata=_limits(4096))
    # Largest single PUT (S3's limit is 5 GiB).
    max_object_bytes: int = field(default=5 * 1024**3, metadata=_limits(1))
    max_part_bytes: int = field(default=5 * 1024**3, metadata=_limits(1))
    min_part_bytes: int = 5 * 1024**2
    # Part numbers run from 1 to 10000 in S3.
    max_parts: int = field(default=10000, metadata=_limits(1, 10000))
    # Objects up to this size are kept in the catalog itself (one fsync per PUT
    # instead of three; see docs/storage.md).
    # 0 stores every object as a file.
    inline_max_bytes: int = field(default=16384, metadata=_limits(0, 1024 * 1024))
    # The backend new blobs go to: a [backends.NAME] table, or the built-in "local".
    default_backend: str = "local"


# The built-in backend used when [storage] default_backend is not set: a filesystem
# backend at <data_dir>/store (a [backends.local] table replaces it).
BUILTIN_BACKEND = "local"

# Each backend type and the options it accepts (besides `type`); the first group
# is required.
_CODEC_OPTIONS = frozenset({"encrypt", "compress"})
BACKEND_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "filesystem": (frozenset(), frozenset({"path", "min_free_bytes"}) | _CODEC_OPTIONS),
    "s3": (
        frozenset({"endpoint", "bucket", "access_key", "secret_key"}),
        frozenset({"region", "prefix", "addressing_style", "timeout_seconds", "attempts"}) | _CODEC_OPTIONS,
    ),
    "memory": (frozenset(), _CODEC_OPTIONS),
}
ADDRESSING_STYLES = ("path", "virtual")
COMPRESSIONS = ("none", "zstd")
CIPHER_CHOICES = ("auto", "aes-256-gcm", "chacha20-poly1305")
# Types whose blobs are encrypted unless `encrypt = false` says otherwise.
ENCRYPTED_BY_DEFAULT = frozenset({"filesystem", "s3"})


@dataclass(frozen=True)
class BackendSection:
    """One `[backends.NAME]` table; which options apply depends on `type`."""

    type: str = ""
    # filesystem: blob directory (None: <data_dir>/store).
    path: Path | None = None
    # s3: the remote service and bucket.
    endpoint: str | None = None
    region: str = "us-east-1"
    bucket: str | None = None
    prefix: str = field(default="", metadata={"empty": True})
    access_key: str | None = None
    # Never shown in a repr, so never in a log line or traceback.
    secret_key: str | None = field(default=None, repr=False)
    addressing_style: str = "path"
    # s3: seconds to connect or to wait for the next bytes of an answer, and tries
    # per request (with jittered backoff) before the bucket answers 503 SlowDown.
    timeout_seconds: float = field(default=60.0, metadata=_limits(above=0))
    attempts: int = field(default=5, metadata=_limits(1, 20))
    # filesystem: refuse new blobs (507 InsufficientStorage) when fewer bytes than
    # this would stay free on the disk.
    min_free_bytes: int = 0
    # Encrypt blobs at rest (None: on for filesystem and s3, off for memory).
    encrypt: bool | None = None
    # "zstd": compress blobs, keeping compression only where it shrinks them.
    compress: str = "none"

    @property
    def encrypted(self) -> bool:
        return self.encrypt if self.encrypt is not None else self.type in ENCRYPTED_BY_DEFAULT


@dataclass(frozen=True)
class EncryptionSection:
    # File holding the node's 32-byte master key; created (mode 0600) on first
    # start. Empty: <data_dir>/master.key.
    key_file: str = field(default="", metadata={"empty": True})
    # Or the master key itself, 64 hex digits (then no key file is used).
    key: str = field(default="", repr=False, metadata={"empty": True})
    # Cipher of new blobs' segments: "aes-256-gcm", "chacha20-poly1305", or "auto"
    # (AES-256-GCM where the CPU has AES instructions). Blobs keep the one they were written with.
    cipher: str = "auto"


@dataclass(frozen=True)
class BucketSection:
    """One `[buckets.NAME]` table: where a bucket's new blobs are stored."""

    backend: str = ""


@dataclass(frozen=True)
class IngestSection:
    """One `[[ingest]]` entry: files below `path` served read-only as objects."""

    path: Path | None = None
    bucket: str = ""
    # Key prefix the files appear under ("raw/" makes a/b.txt the key raw/a/b.txt).
    prefix: str = field(default="", metadata={"empty": True})
    # Seconds between rescans of the tree; 0: only `meshd ingest rescan`.
    rescan_interval_seconds: float = 300.0
    # Pace of background SHA-256 hashing; 0: as fast as the disk allows.
    hash_bytes_per_second: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class ScrubSection:
    # Seconds between the starts of background scrub passes; 0: only `meshd scrub`.
    interval_seconds: float = 7 * 24 * 3600.0
    # Pace of background scrubbing (bytes read per second); 0: unpaced.
    bytes_per_second: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class FeedSection:
    # The change feed (every catalog change, in order) keeps events this many
    # seconds, and at most this many; a subscriber further behind resyncs.
    retention_seconds: float = field(default=7 * 24 * 3600.0, metadata=_limits(above=0))
    max_events: int = field(default=1_000_000, metadata=_limits(1000))


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    # Log one line per S3 request (method, path, status, time, request id).
    access_log: bool = False


@dataclass(frozen=True)
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    s3: S3Section = field(default_factory=S3Section)
    storage: StorageSection = field(default_factory=StorageSection)
    log: LogSection = field(default_factory=LogSection)
    encryption: EncryptionSection = field(default_factory=EncryptionSection)
    scrub: ScrubSection = field(default_factory=ScrubSection)
    feed: FeedSection = field(default_factory=FeedSection)
    backends: dict[str, BackendSection] = field(default_factory=dict)
    buckets: dict[str, BucketSection] = field(default_factory=dict)
    ingest: tuple[IngestSection, ...] = ()

    def bucket_backend(self, bucket: str) -> str:
        """The backend a bucket's new blobs go to."""
        section = self.buckets.get(bucket)
        return section.backend if section is not None else self.storage.default_backend

    def backend(self, name: str) -> BackendSection:
        """The named backend's section; "local" is built in unless a table replaces it."""
        if name in self.backends:
            return self.backends[name]
        if name == BUILTIN_BACKEND:
            return BackendSection(type="filesystem")
        raise KeyError(name)

    def with_overrides(self, overrides: Mapping[str, str]) -> "Config":
        """Apply ``{"s3.listen": "127.0.0.1:9001", ...}`` overrides (text, from the CLI)."""
        data = to_data(self)
        for dotted, text in overrides.items():
            section, _, key = dotted.partition(".")
            tp = _field_type(section, key)
            if tp is None or not isinstance(data[section], dict):
                raise ConfigError(f"{dotted}: unknown key")
            data[section][key] = _parse_text(tp, text, dotted)
        return _build(Config, data, "")


@dataclass(frozen=True)
class CliOverride:
    flag: str  # "listen" gives --listen
    key: str  # dotted config key, "s3.listen"
    metavar: str
    help: str


def cli_overrides() -> tuple[CliOverride, ...]:
    """The config keys `meshd run` accepts as flags, from the fields' metadata."""
    found = []
    for section, section_type in _hints(Config).items():
        if not dataclasses.is_dataclass(section_type):
            continue  # [backends.NAME] tables have no flags
        for f in dataclasses.fields(section_type):
            if "cli" in f.metadata:
                flag, metavar, help = f.metadata["cli"]
                found.append(CliOverride(flag, f"{section}.{f.name}", metavar, help))
    return tuple(found)


def load_config(path: Path | None) -> Config:
    """Load and validate a TOML config file; None gives the embedded defaults."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return _build(Config, data, "")


def to_data(obj: Any) -> Any:
    """A config (or section) as the TOML-shaped data that loads back into it."""
    if isinstance(obj, (Listen, Path)):
        return str(obj)
    if isinstance(obj, BackendSection):
        # Only the keys of its type (the others keep unused defaults), and TOML has no null.
        keys = {"type"}.union(*BACKEND_OPTIONS.get(obj.type, ()))
        return {k: to_data(getattr(obj, k)) for k in sorted(keys) if getattr(obj, k) is not None}
    if dataclasses.is_dataclass(obj):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [to_data(v) for v in obj]
    return obj


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_type(section: str, key: str) -> Any | None:
    section_type = _hints(Config).get(section)
    if not dataclasses.is_dataclass(section_type) or not key:
        return None
    return _hints(section_type).get(key)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{_join(where, key)}: unknown key")
    if cls is BackendSection:
        _check_backend_keys(data, where)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            dotted = _join(where, name)
            if f.metadata.get("empty") and data[name] == "":
                kwargs[name] = ""  # a key that may be empty (an S3 key prefix)
                continue
            kwargs[name] = _convert(hints[name], data[name], dotted)
            _check_limits(f, kwargs[name], dotted)
    config = cls(**kwargs)
    _validate(config, where)
    return config


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check one TOML value against the field's type; TOML's types are taken strictly."""
    if tp is Listen:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string HOST:PORT, got {value!r}")
        try:
            return Listen.parse(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        # `X | None`: TOML has no null, so a value present is always an X.
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value, where)
    if typing.get_origin(tp) is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {name: _convert(item, v, _join(where, name)) for name, v in value.items()}
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative integer, got {value!r}")
        return value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
        return value
    if typing.get_origin(tp) is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    raise ConfigError(f"{where}: unsupported option type")  # pragma: no cover


def _parse_text(tp: Any, text: str, where: str) -> Any:
    """A command-line string as the TOML value `_convert` expects for this type."""
    try:
        if tp is int:
            return int(text)
        if tp is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None
    if tp is bool:
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"{where}: expected true or false, got {text!r}")
        return text.lower() == "true"
    if typing.get_origin(tp) is tuple:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _check_limits(f: dataclasses.Field, value: Any, where: str) -> None:
    lo, hi, above = (f.metadata.get(k) for k in ("lo", "hi", "above"))
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: must be at least {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: must be at most {hi}, got {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"{where}: must be greater than {above}, got {value!r}")


def _check_backend_keys(data: dict, where: str) -> None:
    """A backend table names a known type and only that type's options, all required ones included.

    Checked on the TOML data, not the built section: an option set to its default
    value must still be refused when it does not belong to the type."""
    kind = data.get("type")
    if kind is None:
        raise ConfigError(f"{_join(where, 'type')}: required, one of {', '.join(BACKEND_OPTIONS)}")
    if not isinstance(kind, str) or kind not in BACKEND_OPTIONS:
        raise ConfigError(
            f"{_join(where, 'type')}: expected one of {', '.join(BACKEND_OPTIONS)}, got {kind!r}")
    required, optional = BACKEND_OPTIONS[kind]
    for key in data:
        if key != "type" and key not in required | optional:
            raise ConfigError(f"{_join(where, key)}: not an option of type {kind!r}")
    for key in sorted(required):
        if key not in data:
            raise ConfigError(f"{_join(where, key)}: required for type {kind!r}")


_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


def _validate(config: Any, where: str) -> None:
    """Rules that span fields or look inside a value."""
    if isinstance(config, LogSection) and config.level not in LOG_LEVELS:
        raise ConfigError(
            f"{_join(where, 'level')}: expected one of {', '.join(LOG_LEVELS)}, got {config.level!r}")
    if isinstance(config, StorageSection) and config.min_part_bytes > config.max_part_bytes:
        raise ConfigError(f"{_join(where, 'min_part_bytes')}: larger than max_part_bytes")
    if isinstance(config, BackendSection) and config.type == "s3":
        _validate_s3_backend(config, where)
    if isinstance(config, BackendSection) and config.compress not in COMPRESSIONS:
        raise ConfigError(f"{_join(where, 'compress')}: expected one of "
                          f"{', '.join(COMPRESSIONS)}, got {config.compress!r}")
    if isinstance(config, EncryptionSection):
        _validate_encryption(config, where)
    if isinstance(config, BucketSection) and not config.backend:
        raise ConfigError(f"{_join(where, 'backend')}: required")
    if isinstance(config, IngestSection):
        for key in ("path", "bucket"):
            if not getattr(config, key):
                raise ConfigError(f"{_join(where, key)}: required")
    if isinstance(config, Config):
        _validate_references(config)
    if isinstance(config, S3Section):
        for i, domain in enumerate(config.virtual_host_domains):
            if not _HOSTNAME.fullmatch(domain):
                raise ConfigError(
                    f"{_join(where, 'virtual_host_domains')}[{i}]: expected a lower-case host name, got {domain!r}")


def _validate_references(config: Config) -> None:
    """Names that must point at something defined elsewhere in the file."""
    known = set(config.backends) | {BUILTIN_BACKEND}
    name = config.storage.default_backend
    if name not in known:
        raise ConfigError(f"storage.default_backend: no backend named {name!r}")
    for bucket, section in config.buckets.items():
        if section.backend not in known:
            raise ConfigError(f"buckets.{bucket}.backend: no backend named {section.backend!r}")
    for bucket in config.buckets:
        try:
            validate_bucket_name(bucket)
        except InvalidBucketName:
            raise ConfigError(f"buckets.{bucket}: not a valid bucket name") from None
    for i, entry in enumerate(config.ingest):
        try:
            validate_bucket_name(entry.bucket)
        except InvalidBucketName:
            raise ConfigError(f"ingest[{i}].bucket: {entry.bucket!r} is not a valid bucket name") from None


def _validate_encryption(config: EncryptionSection, where: str) -> None:
    if config.key and config.key_file:
        raise ConfigError(f"{_join(where, 'key')}: give either key or key_file, not both")
    if config.key and not re.fullmatch(r"[0-9a-fA-F]{64}", config.key):
        # Never echo the value: it is a secret.
        raise ConfigError(f"{_join(where, 'key')}: expected 64 hex digits (a 32-byte key)")
    if config.cipher not in CIPHER_CHOICES:
        raise ConfigError(f"{_join(where, 'cipher')}: expected one of {', '.join(CIPHER_CHOICES)}, "
                          f"got {config.cipher!r}")


def _validate_s3_backend(config: BackendSection, where: str) -> None:
    url = urlsplit(config.endpoint or "")
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ConfigError(f"{_join(where, 'endpoint')}: expected an http(s) URL, got {config.endpoint!r}")
    if config.addressing_style not in ADDRESSING_STYLES:
        raise ConfigError(f"{_join(where, 'addressing_style')}: expected one of "
                          f"{', '.join(ADDRESSING_STYLES)}, got {config.addressing_style!r}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
