"""The node's configuration: one typed, frozen record loaded from TOML and validated
once at start-up.

Every section is a frozen dataclass; the loader walks the dataclass fields, so an
unknown key or a value of the wrong type stops start-up with a `ConfigError` that
names the offending key (``s3.listen: expected HOST:PORT, got 'x'``).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem; the message is one line naming the key."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Listen":
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class NodeSection:
    # Human-readable node name, shown in logs and (later) to peers.
    name: str = "meshd"
    # Where the catalog, blobs and credentials live.
    data_dir: Path = Path("./meshd-data")


@dataclass(frozen=True)
class S3Section:
    listen: Listen = Listen("127.0.0.1", 9000)
    region: str = "us-east-1"
    # Host names under which buckets are addressed virtual-host style:
    # with "s3.localhost", "photos.s3.localhost" names bucket "photos".
    virtual_host_domains: tuple[str, ...] = ("localhost", "s3.localhost")
    # Largest tolerated difference between a request's date and ours.
    max_clock_skew_seconds: int = 900
    # Limits that keep a misbehaving client from holding resources.
    max_header_bytes: int = 16384
    max_xml_body_bytes: int = 2 * 1024 * 1024
    # Idle connections are closed after this many seconds.
    keepalive_timeout_seconds: float = 75.0
    # Seconds a client may take to send each chunk of a body before we give up.
    body_read_timeout_seconds: float = 120.0
    # Seconds SIGTERM waits for requests in flight before closing them.
    shutdown_grace_seconds: float = 10.0


@dataclass(frozen=True)
class StorageSection:
    # Bytes read from disk and handed to the hasher/writer per step.
    io_chunk_bytes: int = 1024 * 1024
    # Largest single PUT (S3's limit is 5 GiB).
    max_object_bytes: int = 5 * 1024**3
    max_part_bytes: int = 5 * 1024**3
    min_part_bytes: int = 5 * 1024**2
    max_parts: int = 10000


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    # Log one line per S3 request (method, path, status, bytes, ms).
    access_log: bool = False


@dataclass(frozen=True)
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    s3: S3Section = field(default_factory=S3Section)
    storage: StorageSection = field(default_factory=StorageSection)
    log: LogSection = field(default_factory=LogSection)

    def with_overrides(self, overrides: dict[str, str]) -> "Config":
        """Apply ``{"s3.listen": "127.0.0.1:9001", ...}`` overrides (from the CLI)."""
        raw = dataclasses.asdict(self)
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            raw[section][key] = value
        return _build(Config, _stringify(raw), "")


LOG_LEVELS = ("debug", "info", "warning", "error")


def load_config(path: Path | None) -> Config:
    """Load and validate a TOML config file; None gives the embedded defaults."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return _build(Config, data, "")


def _stringify(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn asdict() output back into TOML-like values the loader accepts."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict) and set(v) == {"host", "port"}:
            out[k] = str(Listen(**v))
        elif isinstance(v, dict):
            out[k] = _stringify(v)
        elif isinstance(v, Path):
            out[k] = str(v)
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = v
    return out


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{_join(where, key)}: unknown key")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], _join(where, f.name))
    try:
        config = cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    _validate(config, where)
    return config


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Listen:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string HOST:PORT")
        try:
            return Listen.parse(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path string")
        return Path(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: unsupported option type")  # pragma: no cover
    raise ConfigError(f"{where}: unsupported option type")  # pragma: no cover


def _validate(config: Any, where: str) -> None:
    if isinstance(config, LogSection) and config.level not in LOG_LEVELS:
        raise ConfigError(f"{_join(where, 'level')}: expected one of {', '.join(LOG_LEVELS)}")
    if isinstance(config, StorageSection):
        if config.io_chunk_bytes < 4096:
            raise ConfigError(f"{_join(where, 'io_chunk_bytes')}: must be at least 4096")
        if config.min_part_bytes > config.max_part_bytes:
            raise ConfigError(f"{_join(where, 'min_part_bytes')}: larger than max_part_bytes")
    if isinstance(config, S3Section) and config.max_header_bytes < 1024:
        raise ConfigError(f"{_join(where, 'max_header_bytes')}: must be at least 1024")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
