"""meshd/names.py: the names the object service accepts (S3's bucket naming
rules, key length and encoding, the shape of a version id). Every rule has a
case just inside and just outside it, so weakening any one of them fails here."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.errors import InvalidBucketName, InvalidKey, InvalidVersionId, KeyTooLong
from meshd.hlc import VersionId
from meshd.names import MAX_KEY_BYTES, validate_bucket_name, validate_key, validate_version_id


def bucket_ok(name: str) -> bool:
    try:
        validate_bucket_name(name)
    except InvalidBucketName as exc:
        assert exc.bucket == name  # the error names the bucket (S3's <BucketName>)
        return False
    return True


# -- bucket names: examples ----------------------------------------------------------


@pytest.mark.parametrize("name", [
    "abc", "a" * 63, "a-b", "a.b", "a1b", "123", "0ab", "ab9", "my-bucket.data-2024",
    "a-b-c.d-e", "a--b", "1.2.3", "1.2.3.4.5", "1.2.3.a", "xn-a", "sthree", "sthreex", "xsthree-a",
    "axn--b", "s3alias", "b-s3alias-x", "x-s3aliaz", "b--ol-s3x", "b-ol-s3", "a" * 59 + "-s3a",
])
def test_valid_bucket_names(name: str) -> None:
    assert bucket_ok(name)


@pytest.mark.parametrize("name,rule", [
    # length: 3..63
    ("", "length"), ("a", "length"), ("ab", "length"), ("a" * 64, "length"), ("a" * 100, "length"),
    # characters: lower-case letters, digits, '.', '-'
    ("Abc", "upper case"), ("abC", "upper case"), ("aBc", "upper case"), ("ABC", "upper case"),
    ("a_b", "underscore"), ("a b", "space"), ("a/b", "slash"), ("a:b", "colon"), ("aé", "non-ASCII"),
    ("ab\u0661", "non-ASCII digit"), ("a\x00b", "NUL"),
    # starts and ends with a letter or digit
    ("-ab", "leading -"), (".ab", "leading ."), ("ab-", "trailing -"), ("ab.", "trailing ."),
    ("-a-", "both ends"),
    # adjacent periods, and a period next to a hyphen
    ("a..b", ".."), ("a...b", ".."), ("a.-b", ".-"), ("a-.b", "-."), ("ab.-.cd", ".-"),
    # formatted like an IPv4 address
    ("192.168.5.4", "IPv4"), ("1.2.3.4", "IPv4"), ("0.0.0.0", "IPv4"), ("999.999.999.999", "IPv4"),
    ("001.02.3.4", "IPv4"),
    # reserved prefixes and suffixes
    ("xn--abc", "xn--"), ("xn--", "xn--"), ("xn--a.b", "xn--"),
    ("sthree-abc", "sthree-"), ("sthree-", "sthree-"),
    ("abc-s3alias", "-s3alias"), ("a-s3alias", "-s3alias"),
    ("abc--ol-s3", "--ol-s3"), ("a--ol-s3", "--ol-s3"),
    # a line end is not the end of the name
    ("abc\n", "trailing newline"), ("abc\r\n", "trailing CRLF"), ("\nabc", "leading newline"),
    ("1.2.3.4\n", "IPv4 and newline"),
])
def test_invalid_bucket_names(name: str, rule: str) -> None:
    assert not bucket_ok(name), rule


@pytest.mark.parametrize("n,ok", [(2, False), (3, True), (4, True), (62, True), (63, True), (64, False)])
def test_bucket_name_length_limits(n: int, ok: bool) -> None:
    for name in ("a" * n, "1" * n, ("a-" * n)[:n - 1] + "z"):
        assert bucket_ok(name) is ok, (n, name)


@pytest.mark.parametrize("prefix", ["xn--", "sthree-"])
def test_every_reserved_prefix_only_as_a_prefix(prefix: str) -> None:
    assert not bucket_ok(prefix + "bucket")
    assert bucket_ok("a" + prefix + "bucket")  # anywhere else it is fine
    assert bucket_ok(prefix[:-1] + "bucket")  # and one character short is not the prefix


@pytest.mark.parametrize("suffix", ["-s3alias", "--ol-s3"])
def test_every_reserved_suffix_only_as_a_suffix(suffix: str) -> None:
    assert not bucket_ok("bucket" + suffix)
    assert bucket_ok("bucket" + suffix + "x")
    assert bucket_ok("bucket" + suffix[1:])  # one character short is not the suffix


# -- bucket names: properties -----------------------------------------------------------

_ALPHABET = string.ascii_lowercase + string.digits + ".-"
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


def model_bucket_ok(name: str) -> bool:
    """S3's rules for general purpose buckets, as meshd applies them, written out
    independently of meshd/names.py."""
    return (
        3 <= len(name) <= 63
        and all(c in _ALPHABET for c in name)
        and name[0] not in ".-" and name[-1] not in ".-"
        and not any(bad in name for bad in ("..", ".-", "-."))
        and not _IPV4.fullmatch(name)
        and not name.startswith("xn--") and not name.startswith("sthree-")
        and not name.endswith("-s3alias") and not name.endswith("--ol-s3")
    )


# Names built from pieces that hit the rules often, plus arbitrary text.
_pieces = st.sampled_from(["a", "z", "0", "9", ".", "-", "--", "..", "xn--", "sthree-", "-s3alias",
                           "--ol-s3", "1.2.3.4", "A", "_", "\n", "é", " "])
_names = st.one_of(
    st.text(alphabet=_ALPHABET, min_size=0, max_size=70),
    st.lists(_pieces, max_size=12).map("".join),
    st.text(max_size=70),
)


@settings(max_examples=500, deadline=None)
@given(_names)
def test_bucket_names_match_the_model(name: str) -> None:
    assert bucket_ok(name) == model_bucket_ok(name)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, min_size=3, max_size=63), st.data())
def test_any_upper_case_letter_is_refused(name: str, data) -> None:
    i = data.draw(st.integers(0, len(name) - 1))
    upper = data.draw(st.sampled_from(string.ascii_uppercase))
    assert not bucket_ok(name[:i] + upper + name[i + 1:])


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", fullmatch=True))
def test_letters_digits_and_single_hyphens_inside_are_accepted(name: str) -> None:
    """What the character pattern admits is refused only by a named rule."""
    assert bucket_ok(name) == (not name.startswith(("xn--", "sthree-"))
                               and not name.endswith(("-s3alias", "--ol-s3")))


# -- keys --------------------------------------------------------------------------------


def _key_id(key: str) -> str:
    return f"{len(key)}chars-{len(key.encode('utf-8', 'surrogatepass'))}bytes-{key[-1]!a}"


def key_error(key: str) -> str | None:
    try:
        validate_key(key)
    except InvalidKey as exc:
        return str(exc)
    return None


def test_max_key_bytes_is_s3s() -> None:
    assert MAX_KEY_BYTES == 1024


@pytest.mark.parametrize("key", [
    "k", "a" * 1024, "é" * 512, "€" * 341 + "a", "😀" * 256, "a/b/../c", " ", "\x00", "\n",
], ids=_key_id)
def test_valid_keys(key: str) -> None:
    assert key_error(key) is None
    assert len(key.encode()) <= 1024


@pytest.mark.parametrize("key", [
    "a" * 1025, "é" * 512 + "a", "é" * 513, "€" * 342, "😀" * 256 + "a", "a" * 1023 + "é",
    "a" * 2000, "a" * 1022 + "\ud800",  # a lone surrogate counts as the 3 bytes it would take
], ids=_key_id)
def test_keys_over_1024_utf8_bytes_are_too_long(key: str) -> None:
    # KeyTooLong is what the S3 edge maps to KeyTooLongError (not InvalidArgument).
    assert key_error(key) == "the key is longer than 1024 bytes"
    with pytest.raises(KeyTooLong):
        validate_key(key)


def test_character_count_is_not_the_limit() -> None:
    key = "é" * 600  # 600 characters, 1200 bytes
    assert len(key) <= 1024 and key_error(key) is not None


def test_empty_key() -> None:
    assert key_error("") == "the key is empty"


@pytest.mark.parametrize("key", ["\ud800", "a\udfffb", "\udcff", "ok" + "\ud83d", "a" * 1021 + "\ud800"], ids=_key_id)
def test_lone_surrogates_are_not_utf8(key: str) -> None:
    # What aiohttp hands over for undecodable bytes (surrogate escapes), within the length limit.
    assert key_error(key) == "the key is not valid UTF-8"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=1100))
def test_keys_are_judged_by_their_utf8_length(key: str) -> None:
    err = key_error(key)
    if key == "":
        assert err == "the key is empty"
    elif len(key.encode("utf-8", "surrogatepass")) > 1024:
        assert err == "the key is longer than 1024 bytes"
    else:
        assert err is None


# -- version ids ------------------------------------------------------------------------------

HEX16 = "0123456789abcdef"


def version_ok(text: str) -> bool:
    try:
        validate_version_id(text)
    except InvalidVersionId as exc:
        assert exc.text == text[:100]  # the error carries the id, cut short
        return False
    return True


@pytest.mark.parametrize("vid", [
    HEX16 + "0123456789abcdef",  # str(VersionId): 16 + 16 lower-case hex
    HEX16 + "x", HEX16 + "a" * 64, HEX16 + "node-1.A_Z", "f" * 17, "0" * 80,
])
def test_valid_version_ids(vid: str) -> None:
    assert version_ok(vid)


@pytest.mark.parametrize("vid", [
    "", "null", HEX16, HEX16[:15], "0" * 15 + "g" + "x", HEX16.upper() + "x", "0123456789ABCDEF" + "node",
    HEX16 + "a" * 65, "0" * 81, HEX16 + "a/b", HEX16 + "a b", HEX16 + "é", HEX16 + "x\n", " " + HEX16 + "x",
    HEX16 + "x" + "\x00", "\u0660" * 16 + "x",
])
def test_invalid_version_ids(vid: str) -> None:
    assert not version_ok(vid)


def test_invalid_version_id_error_is_cut_to_100_characters() -> None:
    with pytest.raises(InvalidVersionId) as info:
        validate_version_id("z" * 5000)
    assert info.value.text == "z" * 100


@settings(max_examples=200, deadline=None)
@given(hlc=st.integers(0, 2**64 - 1), origin=st.text(HEX16, min_size=16, max_size=16))
def test_every_version_id_meshd_makes_is_valid(hlc: int, origin: str) -> None:
    assert version_ok(str(VersionId(hlc, origin)))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=90))
def test_version_ids_match_the_model(text: str) -> None:
    expected = (17 <= len(text) <= 80 and all(c in HEX16 for c in text[:16])
                and all(c in string.ascii_letters + string.digits + "_.-" for c in text[16:]))
    assert version_ok(text) == expected
