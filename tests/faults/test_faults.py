"""Fault injection: jobs killed at chosen points, job directories damaged, moved, shared or fed new data; the
same command run again must end with the job done exactly once and results equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dstrf.data import save_trials
from dstrf.data.synthetic import synthetic_trials

from .cases import FAULTS, Fault

REPO = Path(__file__).resolve().parents[2]
# 4 epochs of a small linear STRF on experiment=quick's data: 3 training trials, 2 batches per epoch.
BASE = ["experiment=quick", "model=linear_strf", "model.lags=10", "trainer.max_epochs=4"]


def train(args: list[str], cwd: Path, kill_at: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "DSTRF_KILL_AT": kill_at or ""}
    return subprocess.run(
        [sys.executable, "-m", "tests.faults.runner", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(run_dir: Path) -> dict:
    """What must not depend on interruptions: scores, epochs, best checkpoint, predictions, the epoch log."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with np.load(run_dir / "test_predictions.npz") as saved:
        predictions = {k: saved[k] for k in saved.files if k.startswith("trial_")}
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    rows = [dict(zip(header, row.split(","))) for row in rows[1:]]
    return {
        "val": metrics["val"],
        "test": metrics["test"],
        "epochs": metrics["epochs"],
        "best": metrics["best_checkpoint"],
        "predictions": predictions,
        "train_log": [(int(r["epoch"]), float(r["train/loss"])) for r in rows if r.get("train/loss")],
        "val_log": [(int(r["epoch"]), float(r["val/r"])) for r in rows if r.get("val/r")],
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["epochs"] == b["epochs"] and a["best"] == b["best"]
    np.testing.assert_allclose(a["val"]["r"], b["val"]["r"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["test"]["r"], b["test"]["r"], rtol=0, atol=1e-6)
    assert sorted(a["predictions"]) == sorted(b["predictions"])
    for key in a["predictions"]:
        np.testing.assert_allclose(a["predictions"][key], b["predictions"][key], rtol=0, atol=1e-5)
    # every epoch trained and logged exactly once, with the same losses and validation scores (the last
    # validation row is the best checkpoint's, scored after the fit)
    assert [e for e, _ in a["train_log"]] == [e for e, _ in b["train_log"]] == list(range(b["epochs"]))
    assert [e for e, _ in a["val_log"]] == [e for e, _ in b["val_log"]] == list(range(b["epochs"] + 1))
    for log in ("train_log", "val_log"):
        np.testing.assert_allclose([v for _, v in a[log]], [v for _, v in b[log]], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = train([*BASE, f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _damage(run_dir: Path, damage: str | None) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    if damage == "truncate-last":
        path = run_dir / "checkpoints" / "last.ckpt"
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "truncate-best":
        path = run_dir / metrics["best_checkpoint"]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "delete-metrics":
        (run_dir / "metrics.json").unlink()
    elif damage == "delete-predictions":
        (run_dir / "test_predictions.npz").unlink()
    else:
        assert damage is None, damage


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_rerun_after_fault(fault: Fault, reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    if fault.kill_at is None:
        shutil.copytree(reference, run_dir)  # a finished job (also: in another place than it ran)
    else:
        first = train([*BASE, f"hydra.run.dir={run_dir}"], cwd=tmp_path, kill_at=fault.kill_at)
        assert first.returncode == 137, first.stderr[-3000:]
        assert not (run_dir / "done.json").exists()
    _damage(run_dir, fault.damage)
    second = train([*BASE, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["job"]["action"] == fault.action
    assert_same(results(run_dir), results(reference))
    assert not list((run_dir / "checkpoints").glob("*.part"))
    if fault.damage and fault.damage.startswith("truncate"):
        assert "set aside" in second.stdout and list(run_dir.rglob("*.unreadable-*"))
    # now it is done: a third run skips it and touches nothing
    third = train([*BASE, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert third.returncode == 0 and "already holds this job's results" in third.stdout


@pytest.mark.slow
def test_a_copied_run_resumes_from_its_own_checkpoints(reference: Path, tmp_path: Path) -> None:
    original = tmp_path / "original"
    first = train([*BASE, f"hydra.run.dir={original}"], cwd=tmp_path, kill_at="batch:2:1")
    assert first.returncode == 137
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    # The original's checkpoints now hold other weights: a copy that read them would score them.
    for path in (original / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"not this one")
    second = train([*BASE, f"hydra.run.dir={copy}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert_same(results(copy), results(reference))
    assert "original" not in (copy / "job.json").read_text()  # job files name paths relative to the job


@pytest.mark.slow
def test_a_second_run_in_the_same_directory_refuses_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dstrf.train",
            *BASE,
            "trainer.max_epochs=1000",
            "callbacks.early_stopping.patience=1000",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.ckpt").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start training"
            time.sleep(0.2)
        config = (run_dir / ".hydra" / "config.yaml").read_text()
        second = train([*BASE, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=60)
        assert second.returncode != 0
        assert f"another dstrf job is running in {run_dir} (pid {first.pid})" in second.stderr
        assert first.poll() is None  # the first one goes on, its files untouched
        assert (run_dir / ".hydra" / "config.yaml").read_text() == config
        assert not (run_dir / "superseded").exists()
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_changed_data_supersede_and_a_relative_data_path_works_from_anywhere(tmp_path: Path, monkeypatch) -> None:
    save_trials(synthetic_trials(n_trials=5, n_frames=400, n_freqs=16, seed=0), tmp_path / "trials.h5")
    args = [*BASE, "data=file", "data.trials.path=trials.h5", "callbacks=gradmap", f"hydra.run.dir={tmp_path / 'run'}"]
    first = train(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "run"
    old = json.loads((run_dir / "metrics.json").read_text())
    assert old["data"]["data.trials.path"]["sha256"] and (run_dir / "gradmap" / "gradmaps.npz").is_file()
    assert "dstrf: LinearSTRF" in (run_dir / "train.log").read_text()  # dstrf's messages reach the job log
    # the same command, the same data: skipped
    assert "already holds this job's results" in train(args, cwd=tmp_path).stdout
    # other data at the same path: the old results are superseded, whole, and the job runs again
    save_trials(synthetic_trials(n_trials=5, n_frames=400, n_freqs=16, seed=1), tmp_path / "trials.h5", overwrite=True)
    second = train(args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "the config or the data changed" in second.stdout
    (archived,) = (run_dir / "superseded").iterdir()
    assert json.loads((archived / "metrics.json").read_text()) == old
    assert (archived / ".hydra" / "config.yaml").is_file() and (archived / "gradmap" / "gradmaps.npz").is_file()
    new = json.loads((run_dir / "metrics.json").read_text())
    assert new["data"]["data.trials.path"]["sha256"] != old["data"]["data.trials.path"]["sha256"]
    assert new["test"]["r"] != old["test"]["r"]
    # the run predicts its trials from any directory (the saved config holds the resolved data path)
    from dstrf.inspect import load

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    job = load(run_dir).jobs[0]
    with np.load(run_dir / "test_predictions.npz") as saved:
        trial = new["split"]["test"][0]
        np.testing.assert_allclose(job.predict(trial), saved[f"trial_{trial}"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_diverged_fit_fails_and_is_never_done(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = train(
        [
            "experiment=quick",
            "model=linear_strf",
            "model.lags=10",
            "module.lr=1e8",
            "trainer.max_epochs=6",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "diverged" in result.stderr and "epoch" in result.stderr and "module.lr" in result.stderr
    assert not (run_dir / "done.json").exists() and not (run_dir / "metrics.json").exists()
