"""meshd/config.py: the example file, strict loading, errors that name the key, overrides."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path

import pytest

from meshd import cli
from meshd.config import (
    BackendSection,
    BucketSection,
    Config,
    ConfigError,
    IngestSection,
    Listen,
    S3Section,
    cli_overrides,
    load_config,
    to_data,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "config.example.toml"


def dotted_fields() -> dict[str, dataclasses.Field]:
    """Every leaf key of Config as "section.key" -> field ([backends.NAME] tables aside:
    the example documents them in a commented-out block, see the backend tests below)."""
    out = {}
    for section, section_type in typing.get_type_hints(Config).items():
        if not dataclasses.is_dataclass(section_type):
            continue
        for f in dataclasses.fields(section_type):
            out[f"{section}.{f.name}"] = f
    return out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message  # start-up prints one line
    return message


# --- config.example.toml -------------------------------------------------------------


def test_example_loads_to_exactly_the_defaults():
    assert load_config(EXAMPLE) == Config()


def test_example_names_every_field_and_nothing_else():
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    in_file = {f"{section}.{key}" for section, table in data.items() for key in table}
    assert in_file == set(dotted_fields())


def test_example_documents_every_key_with_a_comment():
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    keys = 0
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_0-9]+ = ", line):
            keys += 1
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"
    assert keys == len(dotted_fields())


def test_example_values_are_the_defaults_one_by_one():
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    defaults = to_data(Config())
    for dotted in dotted_fields():
        section, key = dotted.split(".")
        # Paths may be spelled differently ("./x" and "x") yet be equal.
        if key == "data_dir":
            assert Path(data[section][key]) == Path(defaults[section][key])
        else:
            assert data[section][key] == defaults[section][key], dotted


# --- loading ---------------------------------------------------------------------------


def test_no_file_gives_defaults():
    assert load_config(None) == Config()


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_values_are_read(tmp_path):
    config = load_config(write(tmp_path, """
[node]
name = "site-a"
data_dir = "/srv/meshd"
[s3]
listen = "[::1]:9100"
virtual_host_domains = ["s3.example.org"]
keepalive_timeout_seconds = 5
[storage]
max_parts = 100
[log]
level = "debug"
access_log = true
"""))
    assert config.node == dataclasses.replace(config.node, name="site-a", data_dir=Path("/srv/meshd"))
    assert config.s3.listen == Listen("::1", 9100)
    assert str(config.s3.listen) == "[::1]:9100"
    assert config.s3.virtual_host_domains == ("s3.example.org",)
    assert config.s3.keepalive_timeout_seconds == 5.0
    assert isinstance(config.s3.keepalive_timeout_seconds, float)
    assert config.storage.max_parts == 100
    assert config.log.level == "debug" and config.log.access_log is True
    # Everything left out keeps its default.
    assert config.s3.region == S3Section().region


def test_round_trip_through_to_data(tmp_path):
    config = Config().with_overrides({"s3.listen": "0.0.0.0:0", "node.data_dir": "d"})
    assert Config().with_overrides({}) == Config()
    from meshd.config import _build  # the loader's entry point for parsed TOML

    assert _build(Config, to_data(config), "") == config


@pytest.mark.parametrize("text, key", [
    ("bogus = 1", "bogus"),
    ("[nodes]\nname = 'x'", "nodes"),
    ("[node]\nnmae = 'x'", "node.nmae"),
    ("[s3]\nlisten_address = '1.2.3.4:5'", "s3.listen_address"),
    ("[storage]\nmax_part = 5", "storage.max_part"),
    ("[log]\nlevel = 'info'\nformat = 'json'", "log.format"),
    ("[s3.listen]\nhost = 'x'", "s3.listen"),
    ("[log.extra]\ndeep = 1", "log.extra"),
])
def test_unknown_key_at_any_depth_is_named(tmp_path, text, key):
    message = load_error(tmp_path, text)
    assert message.startswith(f"{key}:"), message


@pytest.mark.parametrize("text, key", [
    # string for an int, bool for an int, negative, float for an int
    ("[s3]\nmax_clock_skew_seconds = '900'", "s3.max_clock_skew_seconds"),
    ("[s3]\nmax_clock_skew_seconds = true", "s3.max_clock_skew_seconds"),
    ("[s3]\nmax_clock_skew_seconds = -1", "s3.max_clock_skew_seconds"),
    ("[storage]\nmax_parts = 1.5", "storage.max_parts"),
    ("[storage]\nio_chunk_bytes = '1048576'", "storage.io_chunk_bytes"),
    # limits
    ("[storage]\nio_chunk_bytes = 1024", "storage.io_chunk_bytes"),
    ("[storage]\nmax_parts = 0", "storage.max_parts"),
    ("[storage]\nmax_parts = 10001", "storage.max_parts"),
    ("[storage]\nmin_part_bytes = 10\nmax_part_bytes = 5", "storage.min_part_bytes"),
    ("[s3]\nmax_header_bytes = 100", "s3.max_header_bytes"),
    ("[s3]\nbody_read_timeout_seconds = 0", "s3.body_read_timeout_seconds"),
    # floats: wrong types and non-finite values
    ("[s3]\nkeepalive_timeout_seconds = '75'", "s3.keepalive_timeout_seconds"),
    ("[s3]\nkeepalive_timeout_seconds = false", "s3.keepalive_timeout_seconds"),
    ("[s3]\nkeepalive_timeout_seconds = -0.5", "s3.keepalive_timeout_seconds"),
    ("[s3]\nkeepalive_timeout_seconds = nan", "s3.keepalive_timeout_seconds"),
    ("[s3]\nshutdown_grace_seconds = inf", "s3.shutdown_grace_seconds"),
    # bools
    ("[log]\naccess_log = 'yes'", "log.access_log"),
    ("[log]\naccess_log = 1", "log.access_log"),
    # strings
    ("[node]\nname = 5", "node.name"),
    ("[node]\nname = ''", "node.name"),
    ("[s3]\nregion = ['us-east-1']", "s3.region"),
    ("[node]\ndata_dir = 7", "node.data_dir"),
    ("[node]\ndata_dir = ''", "node.data_dir"),
    # HOST:PORT
    ("[s3]\nlisten = 9000", "s3.listen"),
    ("[s3]\nlisten = 'localhost'", "s3.listen"),
    ("[s3]\nlisten = ':9000'", "s3.listen"),
    ("[s3]\nlisten = 'localhost:'", "s3.listen"),
    ("[s3]\nlisten = 'localhost:http'", "s3.listen"),
    ("[s3]\nlisten = 'localhost:65536'", "s3.listen"),
    ("[s3]\nlisten = 'localhost:-1'", "s3.listen"),
    ("[s3]\nlisten = 'localhost:９０００'", "s3.listen"),
    ("[s3]\nlisten = 'localhost:²'", "s3.listen"),
    ("[s3]\nlisten = '[]:9000'", "s3.listen"),
    ("[s3]\nlisten = 'my host:9000'", "s3.listen"),
    # lists
    ("[s3]\nvirtual_host_domains = 'localhost'", "s3.virtual_host_domains"),
    ("[s3]\nvirtual_host_domains = ['localhost', 3]", "s3.virtual_host_domains[1]"),
    ("[s3]\nvirtual_host_domains = ['']", "s3.virtual_host_domains"),
    ("[s3]\nvirtual_host_domains = ['S3.Example.org']", "s3.virtual_host_domains[0]"),
    ("[s3]\nvirtual_host_domains = ['localhost:9000']", "s3.virtual_host_domains[0]"),
    # log level
    ("[log]\nlevel = 'verbose'", "log.level"),
    ("[log]\nlevel = 'INFO'", "log.level"),
    ("[log]\nlevel = 3", "log.level"),
    # a section that is not a table
    ("s3 = 'fast'", "s3"),
    ("node = []", "node"),
])
def test_bad_value_is_named(tmp_path, text, key):
    message = load_error(tmp_path, text)
    assert message.startswith(f"{key}:") or message.startswith(f"{key}["), message


def test_bad_value_message_shows_the_value(tmp_path):
    message = load_error(tmp_path, "[s3]\nlisten = 'nonsense'")
    assert message == "s3.listen: expected HOST:PORT, got 'nonsense'"


@pytest.mark.parametrize("text", [
    "[s3\nlisten = 'x'",
    "[s3]\nlisten = ",
    "[s3]\nlisten = '1'\nlisten = '2'",
    "key without value",
])
def test_invalid_toml(tmp_path, text):
    path = write(tmp_path, text)
    message = load_error(tmp_path, text)
    assert message.startswith(f"{path}: invalid TOML")


def test_file_not_utf8(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[node]\nname = '\xff'\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9000", Listen("127.0.0.1", 9000)),
    ("localhost:0", Listen("localhost", 0)),
    ("[::1]:443", Listen("::1", 443)),
    ("0.0.0.0:65535", Listen("0.0.0.0", 65535)),
])
def test_listen_parse(text, expected):
    assert Listen.parse(text) == expected
    assert str(Listen.parse(text)) == text


# --- overrides (command line) ----------------------------------------------------------


def test_with_overrides_listen_and_data_dir(tmp_path):
    base = load_config(write(tmp_path, "[s3]\nregion = 'eu-1'\n[log]\nlevel = 'debug'"))
    config = base.with_overrides({"s3.listen": "127.0.0.1:9001", "node.data_dir": str(tmp_path / "d")})
    assert config.s3.listen == Listen("127.0.0.1", 9001)
    assert config.node.data_dir == tmp_path / "d"
    # Other keys keep what the file said.
    assert config.s3.region == "eu-1" and config.log.level == "debug"
    assert config == dataclasses.replace(
        base,
        s3=dataclasses.replace(base.s3, listen=Listen("127.0.0.1", 9001)),
        node=dataclasses.replace(base.node, data_dir=tmp_path / "d"),
    )


def test_with_overrides_parses_text_for_every_type():
    config = Config().with_overrides({
        "storage.max_parts": "20",
        "s3.keepalive_timeout_seconds": "2.5",
        "log.access_log": "true",
        "s3.virtual_host_domains": "a.example, b.example",
    })
    assert config.storage.max_parts == 20
    assert config.s3.keepalive_timeout_seconds == 2.5
    assert config.log.access_log is True
    assert config.s3.virtual_host_domains == ("a.example", "b.example")


@pytest.mark.parametrize("overrides, key", [
    ({"s3.listen": "nowhere"}, "s3.listen"),
    ({"s3.listen": "host:99999"}, "s3.listen"),
    ({"node.data_dir": ""}, "node.data_dir"),
    ({"storage.max_parts": "many"}, "storage.max_parts"),
    ({"storage.max_parts": "-3"}, "storage.max_parts"),
    ({"log.access_log": "maybe"}, "log.access_log"),
    ({"log.level": "loud"}, "log.level"),
    ({"s3.nope": "1"}, "s3.nope"),
    ({"nope.listen": "1"}, "nope.listen"),
    ({"s3": "1"}, "s3"),
])
def test_with_overrides_bad_value_is_named(overrides, key):
    with pytest.raises(ConfigError) as info:
        Config().with_overrides(overrides)
    assert str(info.value).startswith(f"{key}:"), str(info.value)


def test_cli_flags_come_from_the_fields():
    flags = {o.flag: o.key for o in cli_overrides()}
    assert flags == {"listen": "s3.listen", "data": "node.data_dir"}
    assert cli.OVERRIDES == flags
    for key in flags.values():
        assert key in dotted_fields()
    args = cli.build_parser().parse_args(["run", "--listen", "127.0.0.1:1234", "--data", "/tmp/x"])
    assert (args.listen, args.data) == ("127.0.0.1:1234", "/tmp/x")


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    path = write(tmp_path, "[s3]\nlisten = 'x'")
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == "meshd: error: s3.listen: expected HOST:PORT, got 'x'\n"


def test_cli_reports_a_bad_override_in_one_line(capsys):
    assert cli.main(["run", "--listen", "localhost:notaport"]) == 2
    err = capsys.readouterr().err
    assert err == "meshd: error: s3.listen: expected HOST:PORT, got 'localhost:notaport'\n"


# --- [backends.NAME] and [storage] default_backend -----------------------------------

S3_TABLE = """
[backends.archive]
type = "s3"
endpoint = "http://127.0.0.1:9100"
bucket = "blobs"
access_key = "AK"
secret_key = "very-secret-value"
"""


def test_default_is_the_builtin_local_filesystem_backend():
    config = Config()
    assert config.storage.default_backend == "local" and config.backends == {}
    assert config.backend("local") == BackendSection(type="filesystem")
    assert config.backend("local").path is None  # the node uses <data_dir>/store
    with pytest.raises(KeyError):
        config.backend("archive")


def test_backends_are_read(tmp_path):
    config = load_config(write(tmp_path, S3_TABLE + """
region = "eu-west-1"
prefix = "site-a/"
addressing_style = "virtual"
[backends.scratch]
type = "filesystem"
path = "/srv/blobs"
[backends.ram]
type = "memory"
[storage]
default_backend = "archive"
"""))
    assert config.storage.default_backend == "archive"
    assert set(config.backends) == {"archive", "scratch", "ram"}
    archive = config.backend("archive")
    assert (archive.type, archive.endpoint, archive.bucket, archive.region, archive.prefix) == (
        "s3", "http://127.0.0.1:9100", "blobs", "eu-west-1", "site-a/")
    assert (archive.access_key, archive.secret_key, archive.addressing_style) == (
        "AK", "very-secret-value", "virtual")
    assert config.backend("scratch") == BackendSection(type="filesystem", path=Path("/srv/blobs"))
    assert config.backend("ram") == BackendSection(type="memory")


def test_s3_backend_defaults(tmp_path):
    archive = load_config(write(tmp_path, S3_TABLE)).backend("archive")
    assert (archive.region, archive.prefix, archive.addressing_style) == ("us-east-1", "", "path")
    # An explicitly empty prefix is allowed (other strings must not be empty).
    assert load_config(write(tmp_path, S3_TABLE + 'prefix = ""\n')).backend("archive").prefix == ""


def test_a_backends_table_may_replace_the_builtin_local(tmp_path):
    config = load_config(write(tmp_path, '[backends.local]\ntype = "filesystem"\npath = "/elsewhere"'))
    assert config.storage.default_backend == "local"
    assert config.backend("local").path == Path("/elsewhere")


def test_secret_key_stays_out_of_every_repr(tmp_path):
    config = load_config(write(tmp_path, S3_TABLE))
    assert "very-secret-value" not in repr(config)
    assert "very-secret-value" not in str(config.backend("archive"))
    assert "AK" in repr(config.backend("archive"))  # the access key is no secret


def test_backends_survive_overrides_and_round_trip(tmp_path):
    config = load_config(write(tmp_path, S3_TABLE + """
[backends.scratch]
type = "filesystem"
[backends.ram]
type = "memory"
[storage]
default_backend = "ram"
"""))
    from meshd.config import _build

    assert _build(Config, to_data(config), "") == config
    moved = config.with_overrides({"s3.listen": "127.0.0.1:0", "node.data_dir": str(tmp_path)})
    assert moved.backends == config.backends and moved.storage.default_backend == "ram"


@pytest.mark.parametrize("text, message", [
    # unknown or missing type
    ('[backends.x]\ntype = "ftp"', "backends.x.type: expected one of filesystem, s3, memory, got 'ftp'"),
    ('[backends.x]\npath = "/srv"', "backends.x.type: required, one of filesystem, s3, memory"),
    ('[backends.x]\ntype = 3', "backends.x.type: expected one of filesystem, s3, memory, got 3"),
    ('[backends.x]\ntype = ["s3"]', "backends.x.type: expected one of filesystem, s3, memory, got ['s3']"),
    # an option of another type, or of no type
    ('[backends.x]\ntype = "filesystem"\nbucket = "b"', "backends.x.bucket: not an option of type 'filesystem'"),
    ('[backends.x]\ntype = "filesystem"\nregion = "us-east-1"',
     "backends.x.region: not an option of type 'filesystem'"),
    ('[backends.x]\ntype = "memory"\npath = "/srv"', "backends.x.path: not an option of type 'memory'"),
    (S3_TABLE + 'path = "/srv"', "backends.archive.path: not an option of type 's3'"),
    (S3_TABLE + "colour = 1", "backends.archive.colour: unknown key"),
    # required s3 options
    (S3_TABLE.replace('endpoint = "http://127.0.0.1:9100"\n', ""),
     'backends.archive.endpoint: required for type \'s3\''),
    (S3_TABLE.replace('bucket = "blobs"\n', ""), "backends.archive.bucket: required for type 's3'"),
    (S3_TABLE.replace('access_key = "AK"\n', ""), "backends.archive.access_key: required for type 's3'"),
    (S3_TABLE.replace('secret_key = "very-secret-value"\n', ""),
     "backends.archive.secret_key: required for type 's3'"),
    # bad option values
    (S3_TABLE.replace("http://127.0.0.1:9100", "127.0.0.1:9100"),
     "backends.archive.endpoint: expected an http(s) URL, got '127.0.0.1:9100'"),
    (S3_TABLE + 'addressing_style = "dns"',
     "backends.archive.addressing_style: expected one of path, virtual, got 'dns'"),
    (S3_TABLE.replace('bucket = "blobs"', "bucket = 7"), "backends.archive.bucket: expected a non-empty string, got 7"),
    ('[backends.x]\ntype = "filesystem"\npath = ""', "backends.x.path: expected a path string, got ''"),
    # not tables
    ('backends = "fast"', "backends: expected a table, got 'fast'"),
    ("[backends]\nx = 1", "backends.x: expected a table"),
    # default_backend naming nothing
    ('[storage]\ndefault_backend = "archive"', "storage.default_backend: no backend named 'archive'"),
    ('[storage]\ndefault_backend = ""', "storage.default_backend: expected a non-empty string, got ''"),
    ('[storage]\ndefault_backend = "ram"\n[backends.mem]\ntype = "memory"',
     "storage.default_backend: no backend named 'ram'"),
    # codecs
    ('[backends.x]\ntype = "filesystem"\ncompress = "lz4"', "backends.x.compress: expected one of none, zstd, got 'lz4'"),
    ('[backends.x]\ntype = "filesystem"\nencrypt = "yes"', "backends.x.encrypt: expected true or false, got 'yes'"),
    ('[backends.x]\ntype = "memory"\nmin_free_bytes = 5', "backends.x.min_free_bytes: not an option of type 'memory'"),
    ('[encryption]\nkey = "abc"', "encryption.key: expected 64 hex digits (a 32-byte key)"),
    ('[encryption]\nkey_file = "/k"\nkey = "' + "ab" * 32 + '"', "encryption.key: give either key or key_file, not both"),
    ('[encryption]\ncipher = "aes-128-ecb"',
     "encryption.cipher: expected one of auto, aes-256-gcm, chacha20-poly1305, got 'aes-128-ecb'"),
    # [buckets.NAME]
    ('[buckets.photos]\nbackend = "archive"', "buckets.photos.backend: no backend named 'archive'"),
    ("[buckets.photos]", "buckets.photos.backend: required"),
    ('[buckets.Bad_Name]\nbackend = "local"', "buckets.Bad_Name: not a valid bucket name"),
    ('[buckets.photos]\nbackend = "local"\ncolour = 1', "buckets.photos.colour: unknown key"),
    # [[ingest]]
    ('[[ingest]]\nbucket = "survey"', "ingest[0].path: required"),
    ('[[ingest]]\npath = "/data"', "ingest[0].bucket: required"),
    ('[[ingest]]\npath = "/data"\nbucket = "x"', "ingest[0].bucket: 'x' is not a valid bucket name"),
    ('[[ingest]]\npath = "/data"\nbucket = "survey"\nfollow = true', "ingest[0].follow: unknown key"),
    ('ingest = 3', "ingest: expected a list, got 3"),
])
def test_bad_backend_config_is_named(tmp_path, text, message):
    assert load_error(tmp_path, text) == message


def test_bad_backend_message_never_shows_the_secret(tmp_path):
    message = load_error(tmp_path, S3_TABLE.replace('bucket = "blobs"\n', "") + 'addressing_style = "x"')
    assert "very-secret-value" not in message


def test_default_backend_override_must_name_a_backend():
    with pytest.raises(ConfigError) as info:
        Config().with_overrides({"storage.default_backend": "nowhere"})
    assert str(info.value) == "storage.default_backend: no backend named 'nowhere'"
    with pytest.raises(ConfigError) as info:
        Config().with_overrides({"backends.x": "1"})
    assert str(info.value).startswith("backends.x:")


def example_commented_tables() -> dict:
    """The commented-out [backends.NAME], [buckets.NAME] and [[ingest]] examples of
    config.example.toml, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    pattern = r"# (\[backends\.\w+\]|\[buckets\.[\w-]+\]|\[\[ingest\]\]|[a-z_]+ = .+)"
    kept = [m.group(1) for line in lines if (m := re.fullmatch(pattern, line))]
    return tomllib.loads("\n".join(kept))


def test_example_commented_tables_are_valid_and_name_every_option():
    tables = example_commented_tables()
    assert set(tables["backends"]) == {"scratch", "archive", "scratchpad"}
    from meshd.config import _build

    config = _build(Config, tables, "")
    assert {b.type for b in config.backends.values()} == {"filesystem", "s3", "memory"}
    in_file = {key for table in tables["backends"].values() for key in table}
    assert in_file == {f.name for f in dataclasses.fields(BackendSection)}
    assert config.bucket_backend("archive-2024") == "archive"
    assert set(tables["buckets"]["archive-2024"]) == {f.name for f in dataclasses.fields(BucketSection)}
    (entry,) = tables["ingest"]
    assert set(entry) == {f.name for f in dataclasses.fields(IngestSection)}
    assert config.ingest[0].path == Path("/data/survey-2024") and config.ingest[0].prefix == "raw/"
