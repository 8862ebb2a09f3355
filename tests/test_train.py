"""End to end: `python -m dstrf.train` / `dstrf-train` as users start them, in a subprocess."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from dstrf.data.synthetic import synthetic_trials
from dstrf.lit import EncoderModule
from dstrf.metrics import pearson_r

# end-to-end: real dstrf-train runs and sweeps (the fast tier, -m "not slow", skips them)
pytestmark = pytest.mark.slow


def train(args, cwd, env=None, command=(sys.executable, "-m", "dstrf.train")):
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run([*command, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    result = train(["experiment=quick", f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_run_directory_holds_everything(quick_run):
    run_dir, result = quick_run
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/loss", "val/r", "val/r/linear", "val/r/shape_change", "test/r/ln"} <= set(header)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "DeepEncoder" and metrics["receptive_field"] == 65 and metrics["epochs"] == 3
    assert metrics["channels"] == ["linear", "ln", "gain_change", "temporal_hold", "shape_change"]
    assert (run_dir / metrics["best_checkpoint"]).is_file()
    assert len(metrics["val"]["r"]) == len(metrics["test"]["r"]) == len(metrics["test"]["cc_norm"]) == 5
    assert metrics["val"]["r_mean"] == pytest.approx(np.mean(metrics["val"]["r"]))
    assert sorted(map(int, metrics["test"]["per_trial"])) == metrics["split"]["test"]
    # the printed summary table
    assert "channel" in result.stdout and "test r" in result.stdout and "gain_change" in result.stdout
    assert str(run_dir) in result.stdout


def test_best_checkpoint_reloads_and_predicts_the_saved_test_predictions(quick_run):
    run_dir, _ = quick_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    module = EncoderModule.load_from_checkpoint(run_dir / metrics["best_checkpoint"], map_location="cpu")
    saved = np.load(run_dir / "test_predictions.npz")
    trials = synthetic_trials(n_trials=5, n_frames=400, n_freqs=16)  # the data of experiment=quick
    for trial in metrics["split"]["test"]:
        prediction = module.predict(trials[trial].stimulus)
        np.testing.assert_allclose(prediction.numpy(), saved[f"trial_{trial}"], rtol=1e-4, atol=1e-5)
        mask = torch.arange(prediction.shape[1]) >= module.warmup
        r = pearson_r(prediction, trials[trial].response, mask)
        np.testing.assert_allclose(r.numpy(), metrics["test"]["per_trial"][str(trial)], atol=1e-5)


def test_rerunning_a_finished_run_skips_it_and_a_changed_config_never_overwrites_it(quick_run, tmp_path):
    run_dir, _ = quick_run
    before = {
        p: p.stat().st_mtime_ns
        for p in run_dir.rglob("*")
        if p.is_file() and p.suffix != ".log" and p.name != ".job.lock"
    }  # .hydra/ too: a skip rewrites nothing
    result = train(["experiment=quick", f"hydra.run.dir={run_dir}"], cwd=run_dir.parent)
    assert result.returncode == 0 and "already holds this job's results" in result.stdout
    assert before == {p: p.stat().st_mtime_ns for p in before}
    # a changed config in the same directory: the earlier results move to superseded/, whole
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    old_metrics = (copy / "metrics.json").read_text()
    result = train(["experiment=quick", "trainer.max_epochs=1", f"hydra.run.dir={copy}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (archived,) = (copy / "superseded").iterdir()
    assert (archived / "metrics.json").read_text() == old_metrics
    assert (archived / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((copy / "metrics.json").read_text())["epochs"] == 1


def test_a_trial_shorter_than_the_receptive_field_stops_before_training(tmp_path):
    result = train(
        ["experiment=quick", "data.trials.n_frames=[400,400,50,400,400]", f"hydra.run.dir={tmp_path / 'r'}"],
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "trial 2 ('synthetic2') has 50 frames, fewer than the model's receptive field of 65" in result.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_wandb_logger_goes_offline_without_a_key_and_never_hangs(tmp_path):
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "", "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}
    result = train(["experiment=quick", "logger=wandb", f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_default_run_of_the_console_script(tmp_path):
    """`dstrf-train` with no overrides: the DeepEncoder on the default synthetic data, on CPU."""
    result = train([], cwd=tmp_path, env={"DSTRF_ROOT": str(tmp_path)}, command=("dstrf-train",))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "DeepEncoder" and len(metrics["channels"]) == 5
    assert metrics["test"]["r_mean"] > 0.7  # it learns: every synthetic neuron is predictable
    assert (run_dir / metrics["best_checkpoint"]).is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_more_folds_than_trials_is_an_error_before_training(tmp_path):
    result = train(
        ["experiment=quick", "split=kfold", "split.n_folds=12", f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path
    )
    assert result.returncode != 0
    assert "n_folds=12 but there are only 5 trials" in result.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_folder_of_wav_files_trains_a_ridge_strf_and_a_changed_recording_supersedes(tmp_path):
    """The README's walkthrough: WAV files and response arrays listed in a manifest -> dstrf-train data=audio."""
    soundfile = pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    rows = ["audio,response,name"]
    for i in range(5):
        audio = rng.standard_normal(16000 * 3) * np.repeat(rng.random(30), 1600)  # 3 s of amplitude-modulated noise
        soundfile.write(tmp_path / f"s{i}.wav", audio / 4, 16000)
        np.save(tmp_path / f"r{i}.npy", rng.standard_normal((2, 300)).astype(np.float32))
        rows.append(f"s{i}.wav,r{i}.npy,sent{i}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    args = [
        "data=audio",
        "data.trials.path=manifest.csv",
        "data.trials.n_bands=16",
        "model=ridge_strf",
        "model.lags=10",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    first = train(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "RidgeSTRF" and len(metrics["channels"]) == 2 and metrics["sfreq"] == 100.0
    assert set(metrics["data"]) == {
        "data.trials.path",
        *(f"data.trials.path[{k}{i}.{e}]" for i in range(5) for k, e in (("s", "wav"), ("r", "npy"))),
    }
    assert list((tmp_path / ".dstrf_cache").glob("*.npz"))  # spectrograms cached beside the manifest
    assert "already holds this job's results" in train(args, cwd=tmp_path).stdout
    soundfile.write(tmp_path / "s2.wav", rng.standard_normal(16000 * 3) / 4, 16000)  # a re-recorded stimulus
    third = train(args, cwd=tmp_path)
    assert third.returncode == 0 and "the config or the data changed" in third.stdout
