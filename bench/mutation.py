"""meshd mutation bench: how many small faults planted in core modules the unit
tests catch, measured with mutmut.

    python bench/mutation.py                  # every module (about 10 minutes on 2 cores)
    python bench/mutation.py --module names   # one module (repeat --module for more)
    python bench/mutation.py --keep           # keep the work tree: `cd` there, `mutmut browse`

For each module, mutmut (3.x) writes mutants of every function in it (an
operator flipped, a constant changed, a string altered, an argument dropped,
...), records which of the module's chosen unit tests call which function,
then runs, for each mutant, only the tests that reach its function; a mutant
is killed when one of them fails. What survives is a change of the code that
no test notices: a gap in the tests, or an equivalent mutant (one that cannot
change behaviour, such as a different error message nobody reads).

The checkout is never touched: the packages, tests/ and pyproject.toml are
copied into a temporary directory per module, the `[tool.mutmut]` section is
written into that copy's pyproject.toml, mutmut runs there (PYTHONPATH unset,
so only the copy's code can be imported), and the directory is removed unless
--keep. Hypothesis runs with a fixed seed (--hypothesis-seed, default 0) and
no example database, so a rerun tests the same examples, and without
shrinking: a test fails at the first failing example it finds (the same
verdict, much sooner).

Score = killed / (mutants - no tests): a timeout, a suspicious result or a
survivor all count against it. Figures are reported, not asserted: the exit
status is 0 whatever the scores (2 if mutmut itself could not run a module).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/mutation.py` from anywhere
    sys.path.insert(0, str(ROOT))

# What the copy needs: every package (a test may import any of them), the
# tests with their pytest configuration, and the files tests read from the
# repository root (test_config.py loads the example config).
PACKAGES = ("meshd", "s3gateway", "backends", "registry", "registry_client", "replication", "wire")
ROOT_FILES = ("config.example.toml",)
COPY = (*PACKAGES, "tests", "pyproject.toml", *ROOT_FILES)
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", "mutants")

# A pytest plugin written into the copy (loaded with `-p`): a hypothesis test
# that finds a failing example fails at once instead of shrinking it first.
# The verdict is the same (a kill is a kill); shrinking a listing model's
# counter-example took over a minute per mutant.
HYPOTHESIS_PLUGIN = "mutation_bench_hypothesis"
HYPOTHESIS_PLUGIN_TEXT = '''"""Written by bench/mutation.py into its temporary copy of meshd: no shrinking."""
from hypothesis import Phase, settings

settings.register_profile("mutation-bench", phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
                          database=None)
settings.load_profile("mutation-bench")
'''


@dataclass(frozen=True)
class Target:
    path: str  # the module to mutate, relative to the repository root
    tests: tuple[str, ...]  # the unit tests (files or directories) that may kill its mutants
    why: str  # why these tests


# Only tests that run in mutmut's own process can kill a mutant: the
# integration tests talk to a meshd subprocess, which mutmut does not see.
TARGETS: dict[str, Target] = {
    "paging": Target(
        "meshd/catalog/paging.py",
        ("tests/unit/meshd/catalog/test_listing_model.py", "tests/unit/meshd/catalog/test_catalog.py"),
        "the model-based listing tests and the catalog's listing cases"),
    "hlc": Target(
        "meshd/hlc.py", ("tests/unit/meshd/test_hlc.py",),
        "the clock and version-id tests"),
    "names": Target(
        "meshd/names.py",
        ("tests/unit/meshd/test_config.py", "tests/unit/meshd/test_objects.py",
         "tests/unit/meshd/test_objects_multipart.py"),
        "no unit test of its own: config's bucket-name checks and the object service's callers"),
    "conditions": Target(
        "meshd/conditions.py",
        ("tests/unit/meshd/test_conditions.py", "tests/unit/meshd/catalog/test_feed.py"),
        "the read-condition decision table; conditional writes only through the feed test"),
    "chunked": Target(
        "s3gateway/auth/chunked.py",
        ("tests/unit/s3gateway/auth/test_chunked.py", "tests/unit/s3gateway/auth/test_sigv4.py"),
        "the aws-chunked parser tests and SigV4's streaming examples"),
    "versions": Target(
        "meshd/catalog/versions.py", ("tests/unit/meshd/catalog/",),
        "the catalog tests, the merge laws (test_merge.py) among them"),
}

# mutmut's words for a mutant's fate (`mutmut results --all true`), and the
# column of the table each one goes to.
KILLED = {"killed"}
SURVIVED = {"survived"}
TIMEOUT_SUSPICIOUS = {"timeout", "suspicious", "segfault"}
NO_TESTS = {"no tests"}
STATUSES = KILLED | SURVIVED | TIMEOUT_SUSPICIOUS | NO_TESTS | {
    "skipped", "caught by type check", "check was interrupted by user", "not checked"}
_RESULT_LINE = re.compile(r"^\s*(\S+): (.+?)\s*$")
_SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|WHERE|ORDER BY|ON CONFLICT)\b")


class BenchError(RuntimeError):
    pass


# -- pure parts: configuration, results, arithmetic, the table --------------------------


def resolve_targets(names: list[str] | None) -> list[str]:
    """`--module` values (short names or module paths) to target names, in TARGETS order."""
    if not names:
        return list(TARGETS)
    by_path = {t.path: name for name, t in TARGETS.items()}
    chosen = set()
    for n in names:
        if n in TARGETS:
            chosen.add(n)
        elif n.removeprefix("./") in by_path:
            chosen.add(by_path[n.removeprefix("./")])
        else:
            raise BenchError(f"unknown module {n!r}; known: {', '.join(TARGETS)} (or their paths)")
    return [n for n in TARGETS if n in chosen]


def mutmut_config(target: Target, hypothesis_seed: int, timeout_multiplier: float) -> str:
    """The `[tool.mutmut]` section for one target (JSON strings and lists are valid TOML)."""
    q = json.dumps
    pytest_args = ["-p", "no:cacheprovider", "-p", HYPOTHESIS_PLUGIN, f"--hypothesis-seed={hypothesis_seed}"]
    return "\n".join([
        "",
        "[tool.mutmut]",
        f"source_paths = {q(list(PACKAGES))}",  # copied whole into mutants/, so nothing imports from elsewhere
        f"only_mutate = {q([target.path])}",
        # besides tests/ and pyproject.toml, which mutmut copies anyway
        f"also_copy = {q([*ROOT_FILES, HYPOTHESIS_PLUGIN + '.py'])}",
        f"pytest_add_cli_args_test_selection = {q(list(target.tests))}",
        f"pytest_add_cli_args = {q(pytest_args)}",
        f"timeout_multiplier = {float(timeout_multiplier)}",
        "use_git_change_detection = false",
        "",
    ])


def parse_results(text: str) -> dict[str, str]:
    """`mutmut results --all true` output ("    <mutant>: <status>" per line) to
    {mutant: status}; lines that are not results (warnings, blank) are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _RESULT_LINE.match(line)
        if m and m.group(2) in STATUSES:
            out[m.group(1)] = m.group(2)
    return out


def count(statuses: dict[str, str]) -> dict:
    """The table's counts from {mutant: status}; every status is in `by_status` too."""
    by_status: dict[str, int] = {}
    for s in statuses.values():
        by_status[s] = by_status.get(s, 0) + 1

    def n(group: set[str]) -> int:
        return sum(by_status.get(s, 0) for s in group)

    c = {"mutants": len(statuses), "killed": n(KILLED), "survived": n(SURVIVED),
         "timeout_suspicious": n(TIMEOUT_SUSPICIOUS), "no_tests": n(NO_TESTS),
         "not_checked": by_status.get("not checked", 0), "by_status": dict(sorted(by_status.items()))}
    c["score"] = score(c)
    return c


def score(c: dict) -> float | None:
    """killed / (mutants - no tests); None when no mutant had a test."""
    tested = c["mutants"] - c["no_tests"]
    return round(c["killed"] / tested, 4) if tested > 0 else None


def survivor_kind(diff: str) -> str:
    """A hint of what a surviving mutant changed, from its diff: "raise-only" when
    every changed line is a raise statement (mostly an error's message, which no
    test reads), "sql-case" when the lines are SQL that differs in letter case
    alone (equivalent: SQLite's keywords and names ignore case), else "other"
    (the ones to read first)."""
    old = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    new = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    if not old and not new:
        return "other"
    if all(ln.startswith("raise ") for ln in old + new):
        return "raise-only"
    if len(old) == len(new) and all(a.lower() == b.lower() and _SQL.search(a + b) for a, b in zip(old, new)):
        return "sql-case"
    return "other"


def kinds(survivors: list[dict]) -> dict[str, int]:
    out = {"raise-only": 0, "sql-case": 0, "other": 0}
    for sv in survivors:
        out[sv["kind"]] += 1
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(res: dict) -> str:
    m = res["meta"]
    head = ("module", "file", "mutants", "killed", "survived", "surv. other", "timeout/susp", "no tests", "score",
            "seconds")
    rows = []
    for name, r in res["modules"].items():
        if "error" in r:
            rows.append((name, r["path"], "error", "", "", "", "", "", "", r.get("seconds", "")))
            continue
        rows.append((name, r["path"], r["mutants"], r["killed"], r["survived"], r["survivor_kinds"]["other"],
                     r["timeout_suspicious"], r["no_tests"], _pct(r["score"]), r["seconds"]))
    t = res.get("total")
    if t and len(rows) > 1:
        rows.append(("all", "", t["mutants"], t["killed"], t["survived"], t["survivor_kinds"]["other"],
                     t["timeout_suspicious"], t["no_tests"], _pct(t["score"]), t["seconds"]))
    widths = [max(len(str(row[i])) for row in (*rows, head)) for i in range(len(head))]
    lines = [
        f"meshd mutation bench: mutmut {m['mutmut']}, {m['max_children']} worker(s), "
        f"hypothesis seed {m['hypothesis_seed']}; score = killed / (mutants - no tests); "
        "surv. other = survivors that change more than a raise statement or the case of SQL",
        "  ".join(h.ljust(w) for h, w in zip(head, widths)),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append("  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def survivors_text(res: dict) -> str:
    """The mutants no test caught, module by module, with mutmut's diffs."""
    lines: list[str] = []
    for name, r in res["modules"].items():
        if "error" in r:
            lines.append(f"\n== {name} ({r['path']}): mutmut failed: {r['error']}")
            continue
        k = r["survivor_kinds"]
        lines.append(f"\n== {name} ({r['path']}): {r['survived']} survived "
                     f"({k['other']} other, {k['raise-only']} raise-only, {k['sql-case']} sql-case)")
        for s in r["survivors"]:
            lines.append(f"-- {s['name']} [{s['kind']}]")
            lines.append(s["diff"].rstrip("\n"))
        for label, names in (("timeout/suspicious", r["timeout_suspicious_mutants"]),
                             ("no tests", r["no_tests_mutants"])):
            if names:
                lines.append(f"{label}: {', '.join(names)}")
    return "\n".join(lines)


def total(modules: dict[str, dict]) -> dict:
    done = [r for r in modules.values() if "error" not in r]
    t = {k: sum(r[k] for r in done) for k in ("mutants", "killed", "survived", "timeout_suspicious", "no_tests")}
    t["survivor_kinds"] = {k: sum(r["survivor_kinds"][k] for r in done) for k in ("raise-only", "sql-case", "other")}
    t["score"] = score(t)
    t["seconds"] = round(sum(r.get("seconds", 0) for r in modules.values()), 1)
    return t


# -- running mutmut -------------------------------------------------------------------


def find_mutmut(given: str | None) -> str:
    """The mutmut next to this interpreter (it runs the tests in-process, so it
    needs the test extra's packages too), else the one on PATH."""
    if given:
        found = shutil.which(given)
        if not found:
            raise BenchError(f"--mutmut {given}: no such executable")
        return found
    beside = Path(sys.executable).parent / "mutmut"
    if beside.exists():
        return str(beside)
    found = shutil.which("mutmut")
    if found:
        return found
    raise BenchError("mutmut not found: pip install -e '.[bench]' (or pass --mutmut PATH)")


def prepare(work: Path, target: Target, args: argparse.Namespace) -> None:
    """Copy what the tests need from the checkout into `work` and configure mutmut there."""
    work.mkdir(parents=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=COPY_IGNORE)
        else:
            shutil.copy2(src, work / name)
    pyproject = work / "pyproject.toml"
    if "mutmut" in tomllib.loads(pyproject.read_text()).get("tool", {}):
        raise BenchError("pyproject.toml already has a [tool.mutmut] section; this script writes its own")
    with pyproject.open("a") as f:
        f.write(mutmut_config(target, args.hypothesis_seed, args.timeout_multiplier))
    tomllib.loads(pyproject.read_text())  # still valid TOML
    (work / f"{HYPOTHESIS_PLUGIN}.py").write_text(HYPOTHESIS_PLUGIN_TEXT)


def mutmut_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # only the copy (mutants/) may provide the packages
    env["PYTHONIOENCODING"] = "utf-8"  # mutant names carry "ǁ"
    return env


def run_mutmut(mutmut: str, args: list[str], work: Path, log: Path | None = None,
               timeout: float | None = None) -> subprocess.CompletedProcess:
    """One mutmut command in `work`, in its own process group (it forks workers),
    all of which are ended if it outlives `timeout`."""
    out = log.open("w") if log else subprocess.PIPE
    try:
        proc = subprocess.Popen([mutmut, *args], cwd=work, env=mutmut_env(), stdout=out,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                                errors="replace", start_new_session=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise BenchError(f"mutmut {args[0]} ran past {timeout:.0f} s and was stopped") from None
        except BaseException:  # Ctrl-C or SIGTERM: mutmut is in a session of its own, end it too
            _stop(proc)
            raise
    finally:
        if log:
            out.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout if not log else None)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _tail(path: Path, chars: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-chars:].replace("\r", "\n")


def run_target(mutmut: str, name: str, target: Target, work: Path, args: argparse.Namespace) -> dict:
    res: dict = {"path": target.path, "tests": list(target.tests), "why": target.why}
    prepare(work, target, args)
    log = work / "mutmut-run.log"
    print(f"{name}: mutating {target.path} against {' '.join(target.tests)} (log: {log})",
          file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        ran = run_mutmut(mutmut, ["run", "--max-children", str(args.max_children)], work, log,
                         timeout=args.module_timeout)
    except BenchError as exc:
        ran, res["error"] = None, str(exc)
    res["seconds"] = round(time.monotonic() - started, 1)
    if ran is not None and ran.returncode != 0:
        res["error"] = f"mutmut run exited {ran.returncode}"
    if "error" in res:
        res["log_tail"] = _tail(log)
        print(f"{name}: {res['error']}; the end of its log:\n{res['log_tail']}", file=sys.stderr, flush=True)
        return res
    listed = run_mutmut(mutmut, ["results", "--all", "true"], work, timeout=300)
    statuses = parse_results(listed.stdout or "")
    if listed.returncode != 0 or not statuses:
        res["error"] = f"mutmut results exited {listed.returncode} with {len(statuses)} result(s)"
        res["log_tail"] = (listed.stdout or "")[-3000:]
        return res
    res.update(count(statuses))
    res["survivors"] = []
    for m, s in statuses.items():
        if s in SURVIVED:
            diff = show(mutmut, m, work)
            res["survivors"].append({"name": m, "kind": survivor_kind(diff), "diff": diff})
    res["survivor_kinds"] = kinds(res["survivors"])
    res["timeout_suspicious_mutants"] = [m for m, s in statuses.items() if s in TIMEOUT_SUSPICIOUS]
    res["no_tests_mutants"] = [m for m, s in statuses.items() if s in NO_TESTS]
    print(f"{name}: {res['mutants']} mutants, {res['killed']} killed, {res['survived']} survived, "
          f"score {_pct(res['score'])} in {res['seconds']} s", file=sys.stderr, flush=True)
    return res


def show(mutmut: str, mutant: str, work: Path) -> str:
    """mutmut's diff of one mutant against the original function."""
    shown = run_mutmut(mutmut, ["show", mutant], work, timeout=120)
    lines = (shown.stdout or "").splitlines(keepends=True)
    if lines and lines[0].startswith("# "):  # "# <mutant>: <status>"
        lines = lines[1:]
    return "".join(lines) if shown.returncode == 0 else f"(mutmut show exited {shown.returncode})\n"


def mutmut_version(mutmut: str, work: Path) -> str:
    """`mutmut --version` needs a configured project, so it is asked in a work tree."""
    try:
        out = run_mutmut(mutmut, ["--version"], work, timeout=60).stdout or ""
    except BenchError:
        return "unknown"
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="meshd mutation bench: mutmut over core modules and their unit tests")
    p.add_argument("--module", action="append", metavar="NAME",
                   help=f"a module to run ({', '.join(TARGETS)} or its path); repeatable; default all")
    p.add_argument("--max-children", type=int, default=min(2, os.cpu_count() or 1),
                   help="mutmut worker processes (default 2)")
    p.add_argument("--hypothesis-seed", type=int, default=0, help="fixed seed for hypothesis tests (default 0)")
    p.add_argument("--timeout-multiplier", type=float, default=5.0,
                   help="a mutant times out after 2 x this x (its tests' duration in mutmut's stats run "
                        "+ 1 s) of CPU time (default 5; mutmut's own default is 15)")
    p.add_argument("--module-timeout", type=float, default=1800.0,
                   help="stop mutmut on a module after this many seconds (default 1800)")
    p.add_argument("--mutmut", help="the mutmut executable (default: beside this python, else on PATH)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results-mutation.json",
                   help="where to write the JSON")
    p.add_argument("--data-dir", type=Path, help="where the temporary work directory goes")
    p.add_argument("--keep", action="store_true", help="keep the work directory (its path is printed)")
    args = p.parse_args(argv)
    if args.max_children < 1 or args.module_timeout <= 0 or args.timeout_multiplier <= 0:
        p.error("--max-children, --timeout-multiplier and --module-timeout must be positive")
    try:
        args.targets = resolve_targets(args.module)
    except BenchError as exc:
        p.error(str(exc))
    return args


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so a stopped bench ends mutmut and removes its work tree
    try:
        mutmut = find_mutmut(args.mutmut)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="meshd-mutation-", dir=args.data_dir))
    started = time.time()
    modules: dict[str, dict] = {}
    version = "unknown"
    try:
        for name in args.targets:
            modules[name] = run_target(mutmut, name, TARGETS[name], work / name, args)
            if version == "unknown":
                version = mutmut_version(mutmut, work / name)
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "mutmut": version, "mutmut_path": mutmut, "max_children": args.max_children,
        "hypothesis_seed": args.hypothesis_seed, "timeout_multiplier": args.timeout_multiplier,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "loadavg_after": os.getloadavg()[0], "seconds": round(time.time() - started, 1),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "score = killed / (mutants - no tests); timeouts, suspicious results and survivors count "
                "against it; seconds = wall time of `mutmut run` for the module",
        "work_dir": str(work) if args.keep else None,
    }
    res = {"modules": modules, "total": total(modules), "meta": meta}
    from bench.run import publish  # aiohttp and the node helpers: only needed here

    publish(table(res) + "\n" + survivors_text(res), res, args.json)
    return 2 if any("error" in r for r in modules.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
