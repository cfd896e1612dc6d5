"""Tuning outputs: every trial as CSV/Parquet, the best trial or the Pareto front as a table,
a PNG plot, and job files with the chosen values written back (``rayfal run`` reuses them).

The Optuna study (SQLite) is the source of truth for the trials (params, state, values); each
trial's last round record (``trials/<dir>/rounds.csv``) adds every other metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from rayfal.atomic import atomic_write_text
from rayfal.tune.pareto import best_index, non_dominated
from rayfal.tune.space import TuneSpec, best_job

RESULTS_DIR = "results"


def _last_record(trial_dir: Path, rounds_done: int | None = None) -> dict[str, Any]:
    """The numeric fields of the trial's last round record, or of round ``rounds_done - 1``
    (a trial stopped early: what Tune and Optuna saw, even if its campaign wrote one more)."""
    rounds = sorted(trial_dir.glob("campaigns/*/seed_*/rounds/round_*.json"))
    if rounds_done is not None:
        rounds = rounds[:max(0, int(rounds_done))]
    if not rounds:
        return {}
    rec = json.loads(rounds[-1].read_text())
    return {k: v for k, v in rec.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def trials_frame(study, run_dir: Path, spec: TuneSpec, max_rounds: int) -> pd.DataFrame:
    """One row per Optuna trial: number, status, params (``param:KEY``), final metrics."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("resume_of") for t in trials} - {None}
    rows = []
    for t in trials:
        status = t.state.name
        if status == "FAIL" and t.number in retried:
            status = "INTERRUPTED"
        trial_dir = t.user_attrs.get("trial_dir", "")
        row: dict[str, Any] = {"trial": t.number, "status": status, "trial_dir": trial_dir,
                               "baseline": bool(t.user_attrs.get("baseline", False)),
                               "resume_of": t.user_attrs.get("resume_of")}
        row.update({f"param:{k}": v for k, v in t.params.items()})
        upto = t.user_attrs.get("rounds_done") if status == "PRUNED" else None
        last = _last_record(run_dir / "trials" / trial_dir, upto) if trial_dir else {}
        row["rounds_done"] = int(last["round"]) + 1 if "round" in last else t.user_attrs.get(
            "rounds_done", 0)
        for m in [*spec.metrics, *([spec.constraint.metric] if spec.constraint else [])]:
            row[m] = last.get(m, t.user_attrs.get(f"metric_{m}", np.nan))
        for k, v in last.items():
            row.setdefault(k, v)
        row["seconds"] = ((t.datetime_complete - t.datetime_start).total_seconds()
                          if t.datetime_complete and t.datetime_start else np.nan)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["finished"] = (df["status"] == "COMPLETE") & (df["rounds_done"] >= max_rounds)
    if spec.constraint:
        df["feasible"] = df[spec.constraint.metric] <= spec.constraint.max
    else:
        df["feasible"] = True
    return df


def params_of(row: pd.Series) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if str(k).startswith("param:") and not (isinstance(v, float) and np.isnan(v)):
            out[str(k)[6:]] = v.item() if hasattr(v, "item") else v
    return out


def select(df: pd.DataFrame, spec: TuneSpec) -> pd.DataFrame:
    """The Pareto front (two objectives; finished and feasible trials) or the best trial."""
    done = df[df["finished"]] if not df.empty else df
    if done.empty:
        return done
    if spec.multi:
        ok = done[done["feasible"]]
        idx = non_dominated(ok[spec.metrics].to_numpy(float), spec.modes)
        front = ok.iloc[idx]
        return front.sort_values(spec.metrics[0], ascending=spec.modes[0] == "min")
    viol = (done[spec.constraint.metric] - spec.constraint.max).to_numpy(float) if spec.constraint \
        else None
    i = best_index(done[spec.metrics[0]].to_numpy(float), spec.modes[0], viol)
    return done.iloc[[i]] if i is not None else done.iloc[[]]


def _label(row: pd.Series) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else
                     f"{k.split('.')[-1]}={v}" for k, v in params_of(row).items())


def plot(df: pd.DataFrame, chosen: pd.DataFrame, spec: TuneSpec, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = df[df["finished"]]
    other = df[~df["finished"] & df[spec.metrics[0]].notna()]
    if spec.multi:
        mx, my = spec.metrics
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.scatter(done[mx], done[my], c="0.6", label="finished trials")
        if len(other):
            ax.scatter(other[mx], other[my], marker="x", c="0.75", label="stopped / failed (last round)")
        base = done[done["baseline"]]
        if len(base):
            ax.scatter(base[mx], base[my], marker="s", facecolors="none", edgecolors="tab:blue",
                       s=90, label="baselines (fixed values)")
        if len(chosen):
            front = chosen.sort_values(mx)
            ax.plot(front[mx], front[my], "-o", c="tab:red", label="Pareto front")
            for _, r in front.iterrows():
                ax.annotate(_label(r), (r[mx], r[my]), fontsize=7, xytext=(4, 4),
                            textcoords="offset points")
        ax.set_xlabel(f"{mx} ({spec.modes[0]})")
        ax.set_ylabel(f"{my} ({spec.modes[1]})")
        ax.legend(fontsize=7)
        ax.set_title(f"{len(done)} finished trials, {len(chosen)} on the front")
    else:
        keys = list(spec.space)[:3]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4), squeeze=False)
        m = spec.metrics[0]
        for ax, key in zip(axes[0], keys, strict=False):
            col = f"param:{key}"
            feas = done[done["feasible"]]
            infeas = done[~done["feasible"]]
            ax.scatter(feas[col], feas[m], c="0.4", label="finished")
            if len(infeas):
                ax.scatter(infeas[col], infeas[m], facecolors="none", edgecolors="0.4",
                           label=f"violates {spec.constraint.metric} <= {spec.constraint.max:g}")
            if len(other):
                ax.scatter(other[col], other[m], marker="x", c="0.75", label="stopped early")
            if len(chosen):
                label = "best" if bool(chosen["feasible"].all()) else "least violating (none feasible)"
                ax.scatter(chosen[col], chosen[m], marker="*", s=200, c="tab:red", label=label)
            if spec.space[key].kind in ("loguniform", "logint"):
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(f"{m} ({spec.modes[0]})")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(df: pd.DataFrame, cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_results(study, run_dir: Path, spec: TuneSpec, resolved: dict, max_rounds: int
                  ) -> dict[str, Path]:
    """Write every output under ``RUN_DIR/results``; returns name -> path."""
    out = Path(run_dir) / RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study, Path(run_dir), spec, max_rounds)
    paths: dict[str, Path] = {}
    if df.empty:
        return paths
    atomic_write_text(out / "trials.csv", df.to_csv(index=False))
    df.to_parquet(out / "trials.parquet", index=False)
    paths["trials"] = out / "trials.csv"
    chosen = select(df, spec)
    name = "pareto" if spec.multi else "best"
    cols = ["trial", *[c for c in df.columns if c.startswith("param:")], *spec.metrics]
    if spec.constraint:
        cols.append(spec.constraint.metric)
    cols += [c for c in ("baseline", "rounds_done", "n_labelled") if c in df.columns]
    if spec.constraint:
        cols.append("feasible")
    atomic_write_text(out / f"{name}.csv", chosen.to_csv(index=False))
    warning = ""
    if spec.constraint and len(chosen) and not bool(chosen["feasible"].all()):
        warning = (f"**No finished trial meets {spec.constraint.metric} <= "
                   f"{spec.constraint.max:g}**: shown is the least violating one.\n\n")
    atomic_write_text(out / f"{name}.md", warning + markdown(chosen, cols))
    atomic_write_text(out / "trials.md", markdown(df, ["status", *cols]))
    paths[name] = out / f"{name}.md"
    plot(df, chosen, spec, out / f"{name}.png")
    paths["plot"] = out / f"{name}.png"
    for old in out.glob("pareto_*.yaml"):
        old.unlink()
    for k, (_, row) in enumerate(chosen.iterrows()):
        note = f"trial{int(row['trial'])}"
        job = best_job(resolved, params_of(row), note=f"tuned-{note}")
        fname = "best_job.yaml" if not spec.multi else f"pareto_{k:02d}_{note}.yaml"
        header = (f"# written by `rayfal tune`: trial {int(row['trial'])} "
                  + ", ".join(f"{m}={row[m]:.4g}" for m in spec.metrics) + "\n")
        atomic_write_text(out / fname, header + yaml.safe_dump(job, sort_keys=False))
        paths.setdefault("jobs", out / fname)
    summary = {
        "trials": int(len(df)),
        "by_status": df["status"].value_counts().to_dict(),
        "finished": int(df["finished"].sum()),
        name: [{"trial": int(r["trial"]), "params": params_of(r),
                **{m: float(r[m]) for m in spec.metrics}, "feasible": bool(r["feasible"])}
               for _, r in chosen.iterrows()],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
    return paths
