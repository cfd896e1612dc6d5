"""rayfal on your own data and model, from Python (README: "Use it on your data and model").

Run from this folder: ``python own_data.py [RUN_DIR]``.
"""

import sys
from pathlib import Path

import numpy as np

import rayfal

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so that "my_nets:Net" is importable (an installed package needs nothing)


def rows(rng, n, start):
    """Your data: a feature matrix, a group id and a label per row."""
    y = rng.integers(0, 2, n)
    g = (rng.random(n) < 0.3).astype(int)
    x = rng.normal(size=(n, 4)) + 1.5 * y[:, None] + 0.5 * g[:, None]
    return dict(row_id=np.arange(start, start + n), group=g, features=x, label=y)


def main(run_dir: str = "runs/own_data") -> "rayfal.RunResult":
    rng = np.random.default_rng(0)
    data = Path(run_dir) / "mydata"
    pool = rayfal.write_pool(data / "pool", **rows(rng, 2000, 0))
    test = rayfal.write_pool(data / "test", **rows(rng, 500, 10**6))
    job = rayfal.load_job({
        "name": "own_data", "seeds": [0, 1],
        "dataset": {"name": "parquet", "pool": str(pool), "test": str(test)},
        "model": {"target": "my_nets:Net", "kwargs": {"hidden": 32}},
        "training": {"epochs": 5, "min_steps": 50},
        "al": {"initial_labels": 20, "query_size": 20, "rounds": 3, "max_frac": None},
        "campaigns": [{"strategy": "random", "label": "uniform"}, {"strategy": "bald"}],
    })
    result = rayfal.run(job, run_dir=Path(run_dir) / "run")
    print(result.records[["campaign", "seed", "round", "n_labelled", "accuracy",
                          "predictive_parity"]].to_string(index=False))
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
