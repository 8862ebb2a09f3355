"""Sweeps started as users start them (`dstrf-train +sweep=... -m ...`), in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dstrf.data.splits import kfold
from dstrf.lit import EncoderModule
from dstrf.metrics import pearson_r

TINY = ["experiment=quick", "data.trials.n_trials=6", "data.trials.n_frames=300", "model.hidden=8"]


def dstrf_train(args, root: Path, **kwargs):
    env = {**os.environ, "WANDB_MODE": "disabled", "DSTRF_ROOT": str(root)}
    return subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def only_sweep(root: Path) -> Path:
    sweeps = list((root / "outputs" / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


@pytest.fixture(scope="module")
def cv_jackknife(tmp_path_factory):
    """3 folds x 2 jackknife replicates: 6 trials, 2 test + 2 validation per fold leave 2 to leave out."""
    root = tmp_path_factory.mktemp("cvjk")
    args = ["+sweep=cv_jackknife", *TINY, "split.n_folds=3", "split.val_size=2", "trainer.max_epochs=2"]
    result = dstrf_train(args, root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, only_sweep(root), args


@pytest.mark.slow
def test_cv_jackknife_sweep_runs_every_job_in_its_own_directory(cv_jackknife):
    root, sweep, _ = cv_jackknife
    expected = {f"fold{f}_jk{j}" for f in range(3) for j in range(2)}
    assert {p.name for p in sweep.iterdir() if p.is_dir()} == expected
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert {job["dir"] for job in manifest["jobs"]} == expected
    for job in manifest["jobs"]:
        metrics = json.loads((sweep / job["dir"] / "metrics.json").read_text())
        assert (metrics["job"]["fold"], metrics["job"]["jackknife"]) == (job["fold"], job["jackknife"])
        # the job's split is the scheme's, recomputed independently
        split = kfold(6, n_folds=3, fold=job["fold"], jackknife=job["jackknife"], val_size=2)
        assert metrics["split"]["train"] == list(split.train) and metrics["split"]["test"] == list(split.test)
        assert (sweep / job["dir"] / "done.json").is_file()


@pytest.mark.slow
def test_summary_numbers_equal_a_recomputation_from_saved_predictions(cv_jackknife):
    _, sweep, _ = cv_jackknife
    rows = json.loads((sweep / "summary.json").read_text())
    assert (sweep / "summary.csv").is_file()
    trial_rows = rows["trials"] if "trials" in rows else rows["rows"]
    # recompute "pred" for every test trial: r of the jackknife-averaged prediction
    predictions: dict[int, list[np.ndarray]] = {}
    responses, warmup = {}, 0
    for job_dir in sorted(p for p in sweep.iterdir() if p.is_dir()):
        saved = np.load(job_dir / "test_predictions.npz")
        warmup = max(warmup, int(saved["warmup"]))
        for key in saved.files:
            if key.startswith("trial_"):
                trial = int(key.split("_")[1])
                predictions.setdefault(trial, []).append(saved[key])
                responses[trial] = saved[f"response_{trial}"]
    assert sorted(predictions) == list(range(6)) and all(len(p) == 2 for p in predictions.values())
    for row in trial_rows:
        trial, channel = int(row["trial"]), row["channel"]
        n = ["linear", "ln", "gain_change", "temporal_hold", "shape_change"].index(channel)
        mean = np.mean(predictions[trial], axis=0)
        expected = pearson_r(
            torch.as_tensor(mean), torch.as_tensor(responses[trial]), torch.arange(mean.shape[1]) >= warmup
        )[n]
        assert row["r_pred"] == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.slow
def test_rerunning_the_sweep_skips_every_finished_job(cv_jackknife):
    root, sweep, args = cv_jackknife
    checkpoints = {p: p.stat().st_mtime_ns for p in sweep.rglob("*.ckpt")}
    result = dstrf_train(args, root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("already holds this job's results") == 6
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    assert only_sweep(root) == sweep


@pytest.mark.slow
def test_a_killed_sweep_resumes_and_runs_every_job_once(tmp_path):
    args = ["+sweep=cv", *TINY, "split.n_folds=2", "trainer.max_epochs=60", "callbacks.early_stopping.patience=1000"]
    env = {**os.environ, "WANDB_MODE": "disabled", "DSTRF_ROOT": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "dstrf.train", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # wait until the first job is complete and the second has written a checkpoint, then kill the sweep
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        sweeps = list((tmp_path / "outputs" / "multiruns").glob("*"))
        if (
            sweeps
            and (sweeps[0] / "fold0" / "done.json").exists()
            and (sweeps[0] / "fold1" / "checkpoints" / "last.ckpt").exists()
        ):
            time.sleep(0.2)
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    sweep = only_sweep(tmp_path)
    assert not (sweep / "fold1" / "done.json").exists(), "the sweep finished before it could be interrupted"
    finished = {p: p.stat().st_mtime_ns for p in (sweep / "fold0").rglob("*.ckpt")}

    result = dstrf_train(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert only_sweep(tmp_path) == sweep
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the finished job was not retrained
    resumed = json.loads((sweep / "fold1" / "metrics.json").read_text())
    assert resumed["job"]["resumed_from"] == "checkpoints/last.ckpt" and resumed["epochs"] == 60
    assert json.loads((sweep / "fold0" / "metrics.json").read_text())["job"]["resumed_from"] is None


@pytest.mark.slow
def test_ddp_inside_a_multirun_runs_each_job_once_with_exact_scores(tmp_path):
    common = [
        "-m",
        "split.test=[0,1,2],[3]",
        "split.val=[4]",
        *TINY[:-1],
        "model=linear_strf",
        "model.lags=20",
        "module.lr=0.01",
        "trainer.max_epochs=15",
        "trainer.accelerator=cpu",
    ]
    ddp_root, single_root = tmp_path / "ddp", tmp_path / "single"
    ddp_root.mkdir(), single_root.mkdir()
    ddp = dstrf_train([*common, "trainer=ddp", "trainer.devices=2"], ddp_root)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = dstrf_train(common, single_root)
    assert single.returncode == 0, single.stderr[-3000:]

    sweep = only_sweep(ddp_root)  # no second sweep tree made by a stray rank
    job_dirs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert [p.relative_to(sweep).parts[0] for p in job_dirs] == ["split.test=[0,1,2]", "split.test=[3]"]
    for job_dir in job_dirs:
        assert (job_dir / "rank1.log").is_file()  # both ranks worked in the job's own directory
        metrics = json.loads((job_dir / "metrics.json").read_text())
        # sharded evaluation scores every test trial exactly once: a single process on the same checkpoint agrees
        module = EncoderModule.load_from_checkpoint(job_dir / metrics["best_checkpoint"], map_location="cpu")
        saved = np.load(job_dir / "test_predictions.npz")
        assert sorted(int(k.split("_")[1]) for k in saved.files if k.startswith("trial_")) == metrics["split"]["test"]
        for trial in metrics["split"]["test"]:
            response = torch.as_tensor(saved[f"response_{trial}"])
            prediction = module.predict(torch.as_tensor(_stimulus(trial)))
            r = pearson_r(prediction, response, torch.arange(response.shape[1]) >= module.warmup)
            np.testing.assert_allclose(r.numpy(), metrics["test"]["per_trial"][str(trial)], atol=1e-5)
        # and training matches the single-process run within tolerance (DDP averages gradients over 2 shards)
        twin = next(
            p
            for p in only_sweep(single_root).rglob("metrics.json")
            if p.parent.relative_to(only_sweep(single_root)) == job_dir.relative_to(sweep)
        )
        single_metrics = json.loads(twin.read_text())
        assert metrics["test"]["r_mean"] == pytest.approx(single_metrics["test"]["r_mean"], abs=0.1)
        assert metrics["test"]["r_mean"] > 0.3  # both actually learned


def _stimulus(trial: int) -> np.ndarray:
    from dstrf.data.synthetic import synthetic_trials

    return synthetic_trials(n_trials=6, n_frames=300, n_freqs=16)[trial].stimulus.numpy()


@pytest.mark.slow
def test_joblib_launcher_runs_the_folds_in_parallel(tmp_path):
    args = [
        "+sweep=cv",
        *TINY,
        "split.n_folds=2",
        "trainer.max_epochs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "threads=1",
    ]
    result = dstrf_train(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    sweep = only_sweep(tmp_path)
    assert all((sweep / f"fold{k}" / "done.json").is_file() for k in range(2))
    assert json.loads((sweep / "summary.json").read_text())["complete"] is True


def test_slurm_launcher_config_follows_the_trainer():
    from dstrf.config import compose

    cfg = compose(["+sweep=cv_jackknife", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 1
    assert launcher.timeout_min == 240 and launcher.array_parallelism == 64
    assert cfg.hydra.sweeper._target_.endswith("DstrfSweeper") and cfg.hydra.sweeper.jackknife is True


@pytest.mark.slow
def test_flags_after_overrides_and_changed_data_rerun_every_job(tmp_path):
    """The README's `dstrf-train +sweep=cv -m model=a,b` (flag after an override), on a trials file; the same
    command after the file is overwritten with other data reruns every job, the old results superseded."""
    from dstrf.data import save_trials
    from dstrf.data.synthetic import synthetic_trials

    save_trials(synthetic_trials(n_trials=5, n_frames=400, n_freqs=16, seed=0), tmp_path / "trials.h5")
    args = [
        "+sweep=cv",
        "-m",
        "model=linear_strf,ln_strf",
        "experiment=quick",
        "data=file",
        "data.trials.path=trials.h5",
        "split.n_folds=2",
        "trainer.max_epochs=1",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "DSTRF_ROOT": str(tmp_path)}

    def sweep():
        return subprocess.run(
            ["dstrf-train", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )

    first = sweep()
    assert first.returncode == 0, first.stderr[-3000:]
    root = only_sweep(tmp_path)
    jobs = [root / f"model={m}" / f"fold{f}" for m in ("linear_strf", "ln_strf") for f in (0, 1)]
    assert all((job / "done.json").is_file() for job in jobs)
    assert sweep().stdout.count("already holds this job's results") == 4
    save_trials(synthetic_trials(n_trials=5, n_frames=400, n_freqs=16, seed=1), tmp_path / "trials.h5", overwrite=True)
    third = sweep()
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("the config or the data changed") == 4
    for job in jobs:
        (archived,) = (job / "superseded").iterdir()
        old = json.loads((archived / "metrics.json").read_text())["data"]["data.trials.path"]["sha256"]
        new = json.loads((job / "metrics.json").read_text())["data"]["data.trials.path"]["sha256"]
        assert old != new and (job / "done.json").is_file()


@pytest.mark.slow
def test_a_ridge_strf_sweep_is_inspected_aggregated_and_estimated_like_any_other(tmp_path):
    from dstrf.inspect import load
    from dstrf.models import RidgeSTRF
    from dstrf.sweep.posthoc import main as estimate_main

    result = dstrf_train(
        [
            "+sweep=cv",
            "experiment=quick",
            "data.trials.n_trials=8",
            "model=ridge_strf",
            "model.lags=20",
            "split.n_folds=2",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_sweep(tmp_path)
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["complete"] and summary["n_done"] == 2
    for job in load(sweep).jobs:
        metrics = job.metrics
        assert metrics["epochs"] == 1 and set(metrics["ridge"]["alpha"]) == set(metrics["channels"])
        assert (job.dir / "ridge_cv.png").is_file()
        assert "ridge_cv.png" in json.loads((job.dir / "done.json").read_text())["outputs"]
        model = job.load_model(units="standardized")
        assert isinstance(model, RidgeSTRF) and model.fitted
    assert estimate_main([str(sweep), "--out", str(tmp_path / "dstrf"), "--times", "0:60"]) == 0
    files = list((tmp_path / "dstrf").rglob("trial_*.h5"))
    assert files
    # a linear model's dSTRF is the same kernel at every frame past the warm-up
    import h5py

    with h5py.File(files[0], "r") as f:
        mean = f["mean"][()]
    assert mean.shape[0] == 60 and np.abs(mean[30]).max() > 0
    np.testing.assert_allclose(mean[30], mean[50], atol=1e-6)
