"""Wall time of a whole cross-validation x jackknife grid, basic launcher vs joblib (2 workers), in one run.

The grid is started exactly as users start it, ``dstrf-train +sweep=cv_jackknife ...`` in a subprocess, on the
built-in synthetic data (8 trials x 1000 frames, 16 bands, 5 neurons; 4 folds of 2 test trials, 1 validation
trial, so 5 jackknife replicates per fold: 20 jobs of a DeepEncoder with 32 hidden channels, 10 epochs each):

1. ``hydra/launcher=basic`` (one job after another, torch on both cores);
2. ``hydra/launcher=joblib hydra.launcher.n_jobs=2 threads=1`` (two jobs at a time, one thread each).

Each grid runs in a fresh temporary root and the script checks that every job completed. Run from the
repository root: ``python experiments/benchmark_sweep.py`` (about 3 minutes on 2 cores). Writes
``experiments/results/sweep_benchmark.{json,md}``. Needs ``pip install "dstrf-lightning[launchers]"``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
GRID = [
    "+sweep=cv_jackknife",
    "data.trials.n_trials=8",
    "data.trials.n_frames=1000",
    "data.trials.n_freqs=16",
    "split.n_folds=4",
    "model.hidden=32",
    "trainer.max_epochs=10",
    "logger=csv",
]
LAUNCHERS = {
    "basic": ["hydra/launcher=basic"],
    "joblib (2 workers, 1 thread each)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1"],
}


def run_grid(extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "WANDB_MODE": "disabled", "DSTRF_ROOT": root}
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "dstrf.train", *GRID, *extra], cwd=root, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"sweep failed:\n{result.stderr[-3000:]}")
        (sweep,) = (Path(root) / "outputs" / "multiruns").iterdir()
        jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
        done = sum((sweep / job["dir"] / "done.json").is_file() for job in jobs)
        summary = json.loads((sweep / "summary.json").read_text())
        return {
            "wall_s": round(wall, 1),
            "jobs": len(jobs),
            "done": done,
            "per_job_s": round(wall / len(jobs), 2),
            "summary_keys": sorted(summary),
        }


def main() -> None:
    results = {name: run_grid(extra) for name, extra in LAUNCHERS.items()}
    basic = results["basic"]["wall_s"]
    for r in results.values():
        r["speedup_vs_basic"] = round(basic / r["wall_s"], 2)
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "grid": GRID}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sweep_benchmark.json").write_text(json.dumps({"machine": info, "results": results}, indent=2))
    lines = [
        f"cv_jackknife grid of {results['basic']['jobs']} jobs (`{' '.join(GRID)}`), {info['cpus']} CPUs, torch {info['torch']}.",
        "",
        "| launcher | jobs done | wall (s) | per job (s) | speed-up vs basic |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['done']}/{r['jobs']} | {r['wall_s']} | {r['per_job_s']} | {r['speedup_vs_basic']}x |"
        )
    table = "\n".join(lines)
    (RESULTS / "sweep_benchmark.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
