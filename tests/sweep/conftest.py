"""A small real sweep (for the aggregation and inspector tests), built once per test session.

Six real `dstrf-train` jobs of `experiment=quick` with a 5-fold K-fold split of its 5 trials, all run by the
real Hydra entry point in ONE subprocess (importing torch and Lightning once saves most of the time), laid out
as dstrf's sweeper lays out a sweep, with the ``sweep.json`` it writes:

- group "" (no swept setting): fold0_jk0, fold0_jk1, fold0_jk2 (done; the three jackknife replicates of
  fold 0, which all test the same trial), fold1_jk0 (done), fold1_jk1 (incomplete: ran, then its done.json,
  metrics.json and test_predictions.npz were deleted, as if interrupted), fold1_jk2 (listed, never ran);
- group "model.hidden=8": model.hidden=8/fold0_jk0 (done).

:func:`built_sweep` is imported by ``tests/test_inspect.py`` too; the sweep is built once per session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASE = ["experiment=quick", "trainer.max_epochs=2", "split=kfold", "split.n_folds=5"]
GROUPS = {"": [], "model.hidden=8": ["model.hidden=8"]}
# (group, fold, jackknife, state): state "done", "incomplete" (run, then made to look interrupted) or "missing"
JOBS = [
    ("", 0, 0, "done"),
    ("", 0, 1, "done"),
    ("", 0, 2, "done"),
    ("", 1, 0, "done"),
    ("", 1, 1, "incomplete"),
    ("", 1, 2, "missing"),
    ("model.hidden=8", 0, 0, "done"),
]

# Runs several `dstrf-train` command lines through the real @hydra.main entry point, one after the other.
_RUNNER = """
import sys
from dstrf.train import main
for line in sys.argv[1:]:
    sys.argv = ["dstrf-train", *line.split("\\x1f")]
    try:
        main()
    except SystemExit as exit:
        if exit.code:
            raise
"""

_CACHE: dict[str, Path] = {}


def job_dir_name(group: str, fold: int, jackknife: int | None) -> str:
    name = f"fold{fold}" + (f"_jk{jackknife}" if jackknife is not None else "")
    return f"{group}/{name}" if group else name


def job_overrides(group: str, fold: int, jackknife: int | None) -> list[str]:
    return [
        *BASE,
        *GROUPS[group],
        f"split.fold={fold}",
        f"split.jackknife={'null' if jackknife is None else jackknife}",
    ]


def _build(root: Path) -> Path:
    sweep = root / "sweep"
    lines = []
    for group, fold, jk, state in JOBS:
        if state != "missing":
            args = [*job_overrides(group, fold, jk), f"hydra.run.dir='{sweep / job_dir_name(group, fold, jk)}'"]
            lines.append("\x1f".join(args))
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, *lines], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    for group, fold, jk, state in JOBS:
        if state == "incomplete":
            job = sweep / job_dir_name(group, fold, jk)
            # keep what the job actually used, for the inspector's recomputed split to be checked against
            (root / "incomplete_metrics.json").write_text((job / "metrics.json").read_text())
            for name in ("done.json", "metrics.json", "test_predictions.npz"):
                (job / name).unlink()
    manifest = {
        "created": "2024-01-01T00:00:00",
        "overrides": ["+sweep=cv_jackknife", *BASE[:2], "model=deep_encoder,linear_strf"],
        "jobs": [
            {
                "num": num,
                "dir": job_dir_name(group, fold, jk),
                "overrides": job_overrides(group, fold, jk),
                "group": group,
                "fold": fold,
                "jackknife": jk,
            }
            for num, (group, fold, jk, _) in enumerate(JOBS)
        ],
    }
    (sweep / "sweep.json").write_text(json.dumps(manifest, indent=2))
    return sweep


def built_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep directory described in the module docstring (built on first use; treat it as read-only:
    tests that change anything work on a copy, see :func:`copy_sweep`)."""
    if "sweep" not in _CACHE:
        _CACHE["sweep"] = _build(tmp_path_factory.mktemp("real_sweep"))
    return _CACHE["sweep"]


def copy_sweep(sweep: Path, target: Path) -> Path:
    shutil.copytree(sweep, target)
    return target


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory) -> Path:
    return built_sweep(tmp_path_factory)
