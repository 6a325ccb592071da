"""meshd.conditions: conditional requests against a version, as S3 applies RFC 9110
(If-Match beats If-Unmodified-Since; If-None-Match beats If-Modified-Since; a
copy answers 412 where a GET answers 304), and S3's conditional writes
(`check_write`: If-None-Match: * and If-Match against the key's current version)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.conditions import Conditions, WriteCondition, check_conditions, check_write
from meshd.errors import KeyNotFound, NotModified, PreconditionFailed
from meshd.model import VersionRecord

ETAG = '"0123456789abcdef0123456789abcdef"'
MODIFIED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
VERSION = VersionRecord(
    bucket="b", key="k", version_id="0" * 32, hlc=1, origin="0" * 16, size=1, etag=ETAG,
    sha256="00", last_modified_ms=int(MODIFIED.timestamp() * 1000) + 750,  # sub-second part
)
BEFORE = MODIFIED - timedelta(seconds=1)
AFTER = MODIFIED + timedelta(seconds=1)


def outcome(cond: Conditions, *, for_copy: bool = False) -> int:
    try:
        check_conditions(VERSION, cond, for_copy=for_copy)
    except PreconditionFailed:
        return 412
    except NotModified as exc:
        assert exc.etag == ETAG
        assert exc.last_modified_ms == VERSION.last_modified_ms
        return 304
    return 200


def test_no_conditions() -> None:
    assert not Conditions()
    assert outcome(Conditions()) == 200


@pytest.mark.parametrize("header,result", [
    (ETAG, 200),
    (ETAG.strip('"'), 200),
    ("*", 200),
    (f'"x", {ETAG}', 200),
    (f"W/{ETAG}", 200),
    ('"x"', 412),
    ('"x", "y"', 412),
])
def test_if_match(header: str, result: int) -> None:
    assert outcome(Conditions(if_match=header)) == result
    assert outcome(Conditions(if_match=header), for_copy=True) == result


@pytest.mark.parametrize("header,get_result,copy_result", [
    (ETAG, 304, 412),
    ("*", 304, 412),
    (f'"x",{ETAG}', 304, 412),
    ('"x"', 200, 200),
])
def test_if_none_match(header: str, get_result: int, copy_result: int) -> None:
    assert outcome(Conditions(if_none_match=header)) == get_result
    assert outcome(Conditions(if_none_match=header), for_copy=True) == copy_result


@pytest.mark.parametrize("since,get_result,copy_result", [
    (BEFORE, 200, 200),
    (MODIFIED, 304, 412),  # HTTP dates have whole seconds: the same second is not "since"
    (AFTER, 304, 412),
])
def test_if_modified_since(since: datetime, get_result: int, copy_result: int) -> None:
    assert outcome(Conditions(if_modified_since=since)) == get_result
    assert outcome(Conditions(if_modified_since=since), for_copy=True) == copy_result


@pytest.mark.parametrize("since,result", [(BEFORE, 412), (MODIFIED, 200), (AFTER, 200)])
def test_if_unmodified_since(since: datetime, result: int) -> None:
    assert outcome(Conditions(if_unmodified_since=since)) == result
    assert outcome(Conditions(if_unmodified_since=since), for_copy=True) == result


def test_if_match_true_wins_over_if_unmodified_since_false() -> None:
    assert outcome(Conditions(if_match=ETAG, if_unmodified_since=BEFORE)) == 200
    assert outcome(Conditions(if_match=ETAG, if_unmodified_since=BEFORE), for_copy=True) == 200


def test_if_none_match_false_wins_over_if_modified_since_true() -> None:
    assert outcome(Conditions(if_none_match=ETAG, if_modified_since=BEFORE)) == 304
    assert outcome(Conditions(if_none_match=ETAG, if_modified_since=BEFORE), for_copy=True) == 412


def test_if_none_match_true_wins_over_if_modified_since_false() -> None:
    assert outcome(Conditions(if_none_match='"x"', if_modified_since=AFTER)) == 200


def test_412_comes_before_304() -> None:
    assert outcome(Conditions(if_match='"x"', if_none_match=ETAG)) == 412
    assert outcome(Conditions(if_unmodified_since=BEFORE, if_modified_since=AFTER)) == 412


def test_other_time_zones_compare_by_instant() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert outcome(Conditions(if_unmodified_since=BEFORE.astimezone(plus2))) == 412
    assert outcome(Conditions(if_modified_since=BEFORE.astimezone(plus2))) == 200


# -- the decision table as a model --------------------------------------------------


def model(im: bool | None, ius: bool | None, inm: bool | None, ims: bool | None, for_copy: bool) -> int:
    """im/ius/inm/ims: None = header absent, else whether the condition holds."""
    if im is False:
        return 412
    if im is None and ius is False:
        return 412
    not_modified = 412 if for_copy else 304
    if inm is False:
        return not_modified
    if inm is None and ims is False:
        return not_modified
    return 200


_opt = st.one_of(st.none(), st.booleans())


@settings(max_examples=200, deadline=None)
@given(im=_opt, ius=_opt, inm=_opt, ims=_opt, for_copy=st.booleans())
def test_matches_decision_table(im, ius, inm, ims, for_copy: bool) -> None:
    cond = Conditions(
        if_match=None if im is None else (ETAG if im else '"other"'),
        if_unmodified_since=None if ius is None else (AFTER if ius else BEFORE),
        if_none_match=None if inm is None else ('"other"' if inm else ETAG),
        if_modified_since=None if ims is None else (BEFORE if ims else AFTER),
    )
    assert outcome(cond, for_copy=for_copy) == model(im, ius, inm, ims, for_copy)


@settings(max_examples=200, deadline=None)
@given(header=st.text(max_size=80))
def test_any_etag_header_gives_an_answer(header: str) -> None:
    for cond in (Conditions(if_match=header), Conditions(if_none_match=header)):
        assert outcome(cond) in (200, 304, 412)


# -- conditional writes (check_write) ------------------------------------------------

# The key's current version as the catalog has it: none, a delete marker, an object.
# The delete marker carries the object's ETag so that only its being a marker can
# make a difference.
MARKER = dataclasses.replace(VERSION, delete_marker=True, sha256=None, size=0)
CURRENT = {"none": None, "marker": MARKER, "object": VERSION}


def write_outcome(current: str, cond: WriteCondition) -> str:
    """"ok", or the failure as the S3 edge sees it: "412 <Condition>" or "404"."""
    try:
        check_write(CURRENT[current], cond)
    except PreconditionFailed as exc:
        return f"412 {exc.condition}"
    except KeyNotFound:
        return "404"
    return "ok"


def test_write_condition_truthiness() -> None:
    assert not WriteCondition()
    assert WriteCondition(if_none_match=True)
    assert WriteCondition(if_match=ETAG)
    assert WriteCondition(if_match="")  # an empty If-Match is still a condition


@pytest.mark.parametrize("current", ["none", "marker", "object"])
def test_no_write_condition_always_passes(current: str) -> None:
    assert write_outcome(current, WriteCondition()) == "ok"


@pytest.mark.parametrize("current,result", [
    ("none", "ok"),
    ("marker", "ok"),  # a delete marker is not an object: the write may create one
    ("object", "412 If-None-Match"),
])
def test_if_none_match_star(current: str, result: str) -> None:
    assert write_outcome(current, WriteCondition(if_none_match=True)) == result


@pytest.mark.parametrize("header,result", [
    (ETAG, "ok"),
    (ETAG.strip('"'), "ok"),  # unquoted
    (f"W/{ETAG}", "ok"),  # weak: compared by its opaque tag
    (f'"other", {ETAG}', "ok"),  # a list, one matches
    ("*", "ok"),  # any current object
    ('"0123456789abcdef0123456789abcdee"', "412 If-Match"),  # one digit off
    (ETAG.upper(), "412 If-Match"),  # ETags compare exactly
    ('W/"other"', "412 If-Match"),
    ('"a", "b"', "412 If-Match"),
    ("", "412 If-Match"),
])
def test_if_match_against_an_object(header: str, result: str) -> None:
    assert write_outcome("object", WriteCondition(if_match=header)) == result


@pytest.mark.parametrize("current", ["none", "marker"])
@pytest.mark.parametrize("header", [ETAG, "*", '"other"'])
def test_if_match_without_a_current_object_is_no_such_key(current: str, header: str) -> None:
    # S3: 404 NoSuchKey, not 412, even when the delete marker's ETag would match.
    assert write_outcome(current, WriteCondition(if_match=header)) == "404"


@pytest.mark.parametrize("current,result", [
    ("none", "404"),  # If-None-Match holds, then If-Match finds nothing
    ("marker", "404"),
    ("object", "412 If-None-Match"),  # If-None-Match is checked first
])
def test_both_write_conditions(current: str, result: str) -> None:
    assert write_outcome(current, WriteCondition(if_none_match=True, if_match=ETAG)) == result


def test_if_match_sees_the_current_etag_not_a_stale_one() -> None:
    newer = dataclasses.replace(VERSION, etag='"ffffffffffffffffffffffffffffffff"')
    with pytest.raises(PreconditionFailed):
        check_write(newer, WriteCondition(if_match=ETAG))
    check_write(newer, WriteCondition(if_match='"ffffffffffffffffffffffffffffffff"'))
