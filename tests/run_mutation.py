"""Mutation testing of the core (``make mutation``; see TESTING.md): run mutmut module by module
and print killed / survived / timeout per module.

Usage (from the repository root)::

    .venv/bin/python tests/run_mutation.py run [--recheck|--again] [MODULE ...]
    .venv/bin/python tests/run_mutation.py report [--survivors]

mutmut's settings (files, fast unit tests only, message lines left alone) are in ``setup.cfg``;
it copies the package into ``mutants/`` (git-ignored) and keeps its results there; a second
run only tests the mutants without a result (``--recheck``: and the survivors, after adding
tests; ``--again``: every mutant of the modules). Each
module is run on its own, so an interrupted run still leaves usable per-module results.
"""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")

# module label -> (source file, mutant-name globs), in the order `run` takes them. Whole files
# except where what users read / what is labelled is one part of a file: the candidate reducer
# of acquisition/base.py, JIN's per-row terms of scoring/two_pass.py and the row-keyed masks of
# models/predict.py.
MODULES: dict[str, tuple[str, list[str]]] = {
    "scores": ("rayfal/acquisition/scores.py", ["rayfal.acquisition.scores.*"]),
    "uncertainty": ("rayfal/acquisition/uncertainty.py", ["rayfal.acquisition.uncertainty.*"]),
    "evaluation": ("rayfal/evaluation.py", ["rayfal.evaluation.*"]),
    "reducer": ("rayfal/acquisition/base.py", ["rayfal.acquisition.base.xǁCandidateReducerǁ*",
                                               "rayfal.acquisition.base.xǁCandidatesǁ*"]),
    "jin-batch-terms": ("rayfal/scoring/two_pass.py",
                        ["rayfal.scoring.two_pass.x_jin_batch_terms__mutmut_*"]),
    # the row-keyed MC-dropout masks: the reference path and the fast kernel's block masks
    "row-keyed-masks": ("rayfal/models/predict.py",
                        ["rayfal.models.predict.xǁRowKeyedMasksǁ*",
                         "rayfal.models.predict.xǁ_BlockMaskedHeadǁ_masks__mutmut_*"]),
    "jin": ("rayfal/acquisition/jin.py", ["rayfal.acquisition.jin.*"]),
    "fairness-metrics": ("rayfal/fairness/metrics.py", ["rayfal.fairness.metrics.*"]),
    "ledger": ("rayfal/data/ledger.py", ["rayfal.data.ledger.*"]),
}

KILLED = {1, 3, 37, -11, -9}   # test failure, pytest internal error, type check, crash
TIMEOUT = {36, -24, 24, 152, 255}


def _results(module: str) -> dict[str, int | None]:
    path, globs = MODULES[module]
    meta = ROOT / "mutants" / f"{path}.meta"
    if not meta.is_file():
        return {}
    for attempt in range(5):  # mutmut rewrites the file while it runs: retry a torn read
        try:
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            break
        except json.JSONDecodeError:
            if attempt == 4:
                raise
            time.sleep(0.2)
    return {k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}


def report(survivors: bool = False) -> int:
    """Print the per-module table; with ``survivors`` every mutant that was not killed."""
    tot = {"killed": 0, "survived": 0, "timeout": 0, "unchecked": 0}
    print(f"{'module':18} {'mutants':>7} {'killed':>7} {'survived':>8} {'timeout':>7} "
          f"{'unchecked':>9} {'score':>6}")
    lost: list[tuple[str, str]] = []
    for module in MODULES:
        res = _results(module)
        c = {"killed": 0, "survived": 0, "timeout": 0, "unchecked": 0}
        for key, code in res.items():
            if code is None:
                c["unchecked"] += 1
            elif code in KILLED:
                c["killed"] += 1
            elif code in TIMEOUT:
                c["timeout"] += 1
                lost.append((key, "timeout"))
            else:  # 0 survived, 5/33 no test reached it: both count as not killed
                c["survived"] += 1
                lost.append((key, "survived" if code == 0 else f"exit {code}"))
        for k in tot:
            tot[k] += c[k]
        checked = c["killed"] + c["survived"] + c["timeout"]
        score = f"{100 * c['killed'] / checked:5.1f}%" if checked else "    -"
        print(f"{module:18} {len(res):7d} {c['killed']:7d} {c['survived']:8d} {c['timeout']:7d} "
              f"{c['unchecked']:9d} {score:>6}")
    checked = tot["killed"] + tot["survived"] + tot["timeout"]
    score = f"{100 * tot['killed'] / checked:5.1f}%" if checked else "    -"
    print(f"{'total':18} {sum(tot.values()):7d} {tot['killed']:7d} {tot['survived']:8d} "
          f"{tot['timeout']:7d} {tot['unchecked']:9d} {score:>6}")
    if survivors:
        for key, why in lost:
            print(f"  {why:9} {key}")
    return 0


def _sync_copies() -> int:
    """Bring ``mutants/``'s plain copies up to date; return how many were refreshed.

    mutmut copies the package and the tests into ``mutants/`` once and never updates a copy
    that exists, so a test or module edited since would be run in its old version (it does
    regenerate a mutated file whose source is newer). Copies of the files it mutates are left
    to it."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    mutated = set(cfg.get("mutmut", "only_mutate").split())
    refreshed = 0
    for top in ("rayfal", "tests"):
        for src in (ROOT / top).rglob("*"):
            rel = src.relative_to(ROOT)
            if not src.is_file() or "__pycache__" in rel.parts or rel.as_posix() in mutated:
                continue
            dst = ROOT / "mutants" / rel
            if not dst.is_file() or dst.read_bytes() != src.read_bytes():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                refreshed += 1
    return refreshed


def run(modules: list[str], *, again: bool = False, recheck: bool = False) -> int:
    """Run mutmut over ``modules`` (all by default), one module at a time, then report. A
    module with results already runs only its unchecked mutants and those no test reached,
    with ``recheck`` also its survivors (after adding tests), with ``again`` all of them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    children = os.environ.get("MUTMUT_CHILDREN", "2")
    for module in modules or list(MODULES):
        res = {} if again else _results(module)
        rerun = (None, 5, 33, 0) if recheck else (None, 5, 33)
        names = [k for k, v in res.items() if v in rerun] if res else MODULES[module][1]
        print(f"== {module}: {len(names) if res else 'all'} mutant(s) to run", flush=True)
        if names:
            if (ROOT / "mutants").is_dir():
                print(f"   {_sync_copies()} copied file(s) in mutants/ refreshed", flush=True)
            subprocess.run([str(MUTMUT), "run", "--max-children", children, *names],
                           cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL)
        report()
    return report(survivors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] not in ("run", "report"):
        sys.exit(__doc__)
    if args[0] == "report":
        sys.exit(report(survivors="--survivors" in args))
    names = [m for m in args[1:] if m not in ("--again", "--recheck")]
    unknown = [m for m in names if m not in MODULES]
    if unknown:
        sys.exit(f"unknown module(s) {unknown}; known: {list(MODULES)}")
    sys.exit(run(names, again="--again" in args, recheck="--recheck" in args))
