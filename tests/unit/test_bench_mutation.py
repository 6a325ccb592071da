"""bench/mutation.py's pure parts: the mutmut configuration it writes, reading
`mutmut results`, the counts and the score, the table. mutmut itself is not run
(bench/README.md says how to run the bench)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bench import mutation
from bench.mutation import (
    BenchError, count, mutmut_config, parse_results, resolve_targets, score, survivor_kind, table, total,
)

ROOT = Path(__file__).resolve().parents[2]

RESULTS = """\
    meshd.hlc.xǁHybridClockǁ__init____mutmut_1: killed
    meshd.hlc.xǁHybridClockǁnow__mutmut_8: survived
    meshd.hlc.x_hlc_millis__mutmut_1: killed
    meshd.hlc.xǁVersionIdǁparse__mutmut_3: survived
    meshd.hlc.xǁVersionIdǁparse__mutmut_4: timeout
    meshd.hlc.xǁVersionIdǁparse__mutmut_5: suspicious
    meshd.hlc.xǁVersionIdǁparse__mutmut_6: no tests
    meshd.hlc.xǁVersionIdǁparse__mutmut_7: check was interrupted by user
    meshd.hlc.xǁVersionIdǁparse__mutmut_8: killed
warning: something mutmut printed: not a result
"""


def test_results_are_read_per_mutant_and_other_lines_skipped() -> None:
    statuses = parse_results(RESULTS)
    assert len(statuses) == 9
    assert statuses["meshd.hlc.xǁHybridClockǁnow__mutmut_8"] == "survived"
    assert statuses["meshd.hlc.xǁVersionIdǁparse__mutmut_6"] == "no tests"
    assert statuses["meshd.hlc.xǁVersionIdǁparse__mutmut_7"] == "check was interrupted by user"
    assert parse_results("") == {} and parse_results("Traceback: boom\n") == {}


def test_counts_and_score() -> None:
    c = count(parse_results(RESULTS))
    assert (c["mutants"], c["killed"], c["survived"], c["timeout_suspicious"], c["no_tests"]) == (9, 3, 2, 2, 1)
    assert c["by_status"]["check was interrupted by user"] == 1 and sum(c["by_status"].values()) == 9
    assert c["score"] == round(3 / 8, 4)  # killed / (mutants - no tests): timeouts count against it


def test_score_edges() -> None:
    assert score({"mutants": 0, "killed": 0, "no_tests": 0}) is None
    assert score({"mutants": 4, "killed": 0, "no_tests": 4}) is None
    assert score({"mutants": 4, "killed": 4, "no_tests": 0}) == 1.0
    assert count({}) | {"by_status": {}} == {"mutants": 0, "killed": 0, "survived": 0, "timeout_suspicious": 0,
                                               "no_tests": 0, "not_checked": 0, "by_status": {}, "score": None}


def test_the_config_section_limits_mutmut_to_one_file_and_its_tests() -> None:
    target = mutation.TARGETS["paging"]
    base = (ROOT / "pyproject.toml").read_text()
    conf = tomllib.loads(base + mutmut_config(target, 7, 5))["tool"]["mutmut"]
    assert conf["only_mutate"] == ["meshd/catalog/paging.py"]
    assert conf["source_paths"] == list(mutation.PACKAGES)
    assert conf["pytest_add_cli_args_test_selection"] == list(target.tests)
    assert "--hypothesis-seed=7" in conf["pytest_add_cli_args"] and conf["timeout_multiplier"] == 5.0
    assert conf["also_copy"] == ["config.example.toml", "mutation_bench_hypothesis.py"]
    assert "-p" in conf["pytest_add_cli_args"] and "mutation_bench_hypothesis" in conf["pytest_add_cli_args"]
    assert conf["use_git_change_detection"] is False


def test_every_target_and_its_tests_exist() -> None:
    for name, t in mutation.TARGETS.items():
        assert (ROOT / t.path).is_file(), name
        assert t.tests and all((ROOT / p).exists() and p.startswith("tests/unit/") for p in t.tests), name
    assert all((ROOT / p).exists() for p in mutation.COPY)


def test_modules_are_chosen_by_name_or_path() -> None:
    assert resolve_targets(None) == list(mutation.TARGETS)
    assert resolve_targets(["paging", "meshd/names.py", "names"]) == ["paging", "names"]
    assert resolve_targets(["./s3gateway/auth/chunked.py"]) == ["chunked"]
    with pytest.raises(BenchError, match="unknown module"):
        resolve_targets(["meshd/nope.py"])


def diff(old: str, new: str) -> str:
    return f"--- meshd/x.py\n+++ meshd/x.py\n@@ -1,3 +1,3 @@\n def f(x):\n-{old}\n+{new}\n     return x\n"


def test_survivors_are_told_apart_by_what_they_change() -> None:
    assert survivor_kind(diff('    raise ValueError("bad id")', "    raise ValueError(None)")) == "raise-only"
    assert survivor_kind(diff('    "SELECT 1 FROM t WHERE a=?",', '    "select 1 from t where a=?",')) == "sql-case"
    assert survivor_kind(diff('    "ORDER BY version_id DESC LIMIT 1",', '    "ORDER BY VERSION_ID DESC LIMIT 1",')) == "sql-case"
    # Letter case that matters: a dict key, a case-sensitive prefix.
    assert survivor_kind(diff('    add_event(k, {"stamp": s})', '    add_event(k, {"STAMP": s})')) == "other"
    assert survivor_kind(diff('    or name.startswith("xn--")', '    or name.startswith("XN--")')) == "other"
    assert survivor_kind(diff("    if n > 16:", "    if n >= 16:")) == "other"
    assert survivor_kind(diff('    x = "a"', '    raise ValueError("a")')) == "other"
    assert survivor_kind("(mutmut show exited 1)\n") == "other"
    two = "--- a\n+++ a\n-    if a\n-        or b\n+    if a and b\n"  # lines joined
    assert survivor_kind(two) == "other"


def test_table_and_total() -> None:
    hlc = {"path": "meshd/hlc.py", **count(parse_results(RESULTS)), "seconds": 11.6,
           "survivors": [{"name": "meshd.hlc.xǁHybridClockǁnow__mutmut_8", "kind": "other", "diff": "-a\n+b\n"},
                         {"name": "meshd.hlc.xǁVersionIdǁparse__mutmut_3", "kind": "raise-only", "diff": ""}],
           "survivor_kinds": {"raise-only": 1, "sql-case": 0, "other": 1},
           "timeout_suspicious_mutants": ["m4", "m5"], "no_tests_mutants": ["m6"]}
    broken = {"path": "meshd/names.py", "error": "mutmut run exited 1", "seconds": 2.0}
    modules = {"hlc": hlc, "names": broken}
    t = total(modules)
    assert (t["mutants"], t["killed"], t["score"], t["seconds"]) == (9, 3, round(3 / 8, 4), 13.6)
    assert t["survivor_kinds"] == {"raise-only": 1, "sql-case": 0, "other": 1}
    res = {"modules": modules, "total": t,
           "meta": {"mutmut": "3.8.1", "max_children": 2, "hypothesis_seed": 0}}
    lines = table(res).splitlines()
    assert "mutmut 3.8.1" in lines[0] and lines[1].split()[:3] == ["module", "file", "mutants"]
    assert lines[3].split() == ["hlc", "meshd/hlc.py", "9", "3", "2", "1", "2", "1", "37.5%", "11.6"]
    assert lines[4].split() == ["names", "meshd/names.py", "error", "2.0"]
    assert lines[5].split() == ["all", "9", "3", "2", "1", "2", "1", "37.5%", "13.6"]
    text = mutation.survivors_text(res)
    assert "== hlc (meshd/hlc.py): 2 survived (1 other, 1 raise-only, 0 sql-case)" in text
    assert "-- meshd.hlc.xǁHybridClockǁnow__mutmut_8 [other]\n-a\n+b" in text
    assert "timeout/suspicious: m4, m5" in text and "mutmut failed: mutmut run exited 1" in text
