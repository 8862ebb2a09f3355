import json
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dstrf.estimate import dstrf
from dstrf.inspect import load

# end-to-end: real dstrf-train runs and sweeps (the fast tier, -m "not slow", skips them)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def estimated(sweep_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dstrf")
    result = subprocess.run(
        ["dstrf-estimate", str(sweep_dir), "--times", "60:90", "--channels", "0", "3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, out, json.loads((out / "index.json").read_text())


def test_every_trial_uses_only_models_that_never_saw_it(estimated):
    sweep_dir, _, index = estimated
    experiment = load(sweep_dir)
    jobs = {job.name: job for job in experiment.jobs}
    assert index["trials"], "no trial was estimated"
    for entry in index["trials"]:
        for name in entry["models"]:
            split = jobs[name].split
            assert entry["trial"] in split.test
            assert entry["trial"] not in split.train and entry["trial"] not in split.val
            assert jobs[name].group == entry["group"] and jobs[name].status == "done"
    fold0 = [e for e in index["trials"] if e["group"] == "" and len(e["models"]) == 3]
    assert fold0 and sorted(fold0[0]["models"]) == ["fold0_jk0", "fold0_jk1", "fold0_jk2"]  # the fold's 3 replicates
    assert not any("fold1_jk1" in e["models"] for e in index["trials"])  # an incomplete job is never used


def test_files_hold_the_jackknife_mean_of_the_models_in_data_units(estimated):
    sweep_dir, out, index = estimated
    experiment = load(sweep_dir)
    entry = next(e for e in index["trials"] if len(e["models"]) == 3)
    with h5py.File(out / entry["file"], "r") as f:
        mean, se, mask = f["mean"][()], f["se"][()], f["mask"][()]
        assert f["times"][()].tolist() == list(range(60, 90)) and f["channels"][()].tolist() == [0, 3]
        assert f.attrs["n_models"] == 3
    jobs = [experiment[name] for name in entry["models"]]
    stimulus = experiment.trials(jobs[0])[entry["trial"]].stimulus
    stacked = torch.stack(
        [dstrf(j.load_module("cpu").data_units(), stimulus, channels=[0, 3], times=range(60, 90)) for j in jobs]
    ).numpy()
    np.testing.assert_allclose(mean, stacked.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(se, np.sqrt(2 / 3 * ((stacked - stacked.mean(0)) ** 2).sum(0)), rtol=1e-4, atol=1e-6)
    assert mask.dtype == bool and mask.shape == mean.shape


def test_files_describe_themselves(estimated):
    """sfreq, band frequencies, channel names, lags, the trial, its models, dtype, units and what the mask means."""
    sweep_dir, out, index = estimated
    entry = next(e for e in index["trials"] if len(e["models"]) == 3)
    experiment = load(sweep_dir)
    data, model = experiment.trials(), experiment[entry["models"][0]].load_model()
    with h5py.File(out / entry["file"], "r") as f:
        attrs = dict(f.attrs)
    assert attrs["sfreq"] == data.sfreq and attrs["trial"] == entry["trial"] and attrs["dtype"] == "float32"
    assert json.loads(attrs["channel_names"]) == list(data.channel_names)
    np.testing.assert_allclose(attrs["freqs"], data.freqs if data.freqs is not None else [])
    assert (
        json.loads(attrs["models"]) == entry["models"] and attrs["lags"] == model.receptive_field and attrs["q"] == 0.95
    )
    assert attrs["mask_meaning"].startswith("True: the models agree in sign") and "data's units" in attrs["units"]


def test_rerun_keeps_finished_files_and_other_options_never_overwrite(estimated):
    sweep_dir, out, index = estimated
    path = out / index["trials"][0]["file"]
    before = path.stat().st_mtime_ns
    args = ["dstrf-estimate", str(sweep_dir), "--times", "60:90", "--channels", "0", "3", "--out", str(out)]
    assert subprocess.run(args, capture_output=True, text=True, timeout=600).returncode == 0
    assert path.stat().st_mtime_ns == before
    other = subprocess.run([*args[:-2], "--q", "0.9", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert other.returncode == 1 and "refusing to overwrite" in other.stderr
    assert path.stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def gradmaps(sweep_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gradmap")
    result = subprocess.run(
        ["dstrf-estimate", str(sweep_dir), "--gradmap", "--x0", "2:100", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, out, json.loads((out / "index.json").read_text())


def test_gradmaps_per_fold_are_the_jackknife_mean_of_the_fold_models(gradmaps):
    from dstrf.estimate import gradmap

    sweep_dir, out, index = gradmaps
    by_file = {e["file"]: e for e in index["folds"]}
    # fold 0's three replicates, fold 1's one finished job, and the other group's fold 0; never the unfinished job
    assert sorted(by_file) == ["fold_0.h5", "fold_1.h5", "model.hidden=8/fold_0.h5"]
    assert sorted(by_file["fold_0.h5"]["models"]) == ["fold0_jk0", "fold0_jk1", "fold0_jk2"]
    assert by_file["fold_1.h5"]["models"] == ["fold1_jk0"]
    experiment = load(sweep_dir)
    jobs = [experiment[name] for name in by_file["fold_0.h5"]["models"]]
    window = experiment.trials(jobs[0])[2].stimulus[:, 100 - 64 : 101]
    stacked = torch.stack([gradmap(j.load_module("cpu").data_units(), x0=window) for j in jobs]).double()
    with h5py.File(out / "fold_0.h5", "r") as f:
        mean, se, mask = f["mean"][()], f["se"][()], f["mask"][()]
        data = experiment.trials(jobs[0])
        assert f.attrs["sfreq"] == data.sfreq and json.loads(f.attrs["channel_names"]) == list(data.channel_names)
        assert f.attrs["mask_meaning"].startswith("True: the models agree in sign") and "units" in f.attrs
        assert f.attrs["n_models"] == 3 and json.loads(f.attrs["test_trials"]) == by_file["fold_0.h5"]["test_trials"]
    assert np.abs(mean).max() > 0  # a data window: the bias-free network is not flat there
    np.testing.assert_allclose(mean, stacked.mean(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        se, np.sqrt(2 / 3 * ((stacked - stacked.mean(0)) ** 2).sum(0).numpy()), rtol=1e-4, atol=1e-7
    )
    agree = (stacked > 0).all(0) | (stacked < 0).all(0) | (stacked == 0).any(0)
    assert mask.dtype == bool and (mask[agree.numpy()]).all()  # unanimous signs are always kept
    assert (out / "fold_0.png").is_file()
    # the file opens as gradient maps, and the figure draws from it alone
    from dstrf.estimate import open_dstrf, open_gradmap
    from dstrf.plots import plot_receptive_fields

    opened = open_gradmap(out / "fold_0.h5")
    assert opened.kind == "jackknife" and opened.channel_names == list(data.channel_names)
    np.testing.assert_allclose(opened.masked.numpy(), mean * mask)
    assert opened.sfreq == data.sfreq and opened.attrs["reference"] == "the window of trial 2 ending at frame 100"
    assert len(plot_receptive_fields(opened).axes) >= len(data.channel_names)
    with pytest.raises(ValueError, match="open it with open_gradmap"):
        open_dstrf(out / "fold_0.h5")


def test_default_gradmap_reference_is_the_fold_test_windows_and_null_warns_naming_the_options(sweep_dir, tmp_path):
    from dstrf.estimate import gradmap

    run = ["dstrf-estimate", str(sweep_dir), "--gradmap", "--windows", "6"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run([*run, "--out", str(tmp_path / "data")], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "InactiveGradmapWarning" not in result.stderr
    index = json.loads((tmp_path / "data" / "index.json").read_text())
    assert index["reference"] == "the mean over 6 windows of each fold's test trials"
    entry = next(e for e in index["folds"] if e["file"] == "fold_0.h5")
    experiment = load(sweep_dir)
    jobs = [experiment[name] for name in entry["models"]]
    data = experiment.trials(jobs[0])
    with h5py.File(tmp_path / "data" / "fold_0.h5", "r") as f:
        mean, ends = f["mean"][()], f.attrs["reference_frames"]
        assert f.attrs["reference"].startswith("the mean over 6 windows of trial")
    assert len(ends) == 6 and set(ends[:, 0]) == set(entry["test_trials"])
    windows = torch.stack([data.window(t, k, 65) for t, k in ends])
    stacked = torch.stack([gradmap(j.load_module("cpu").data_units(), x0=windows) for j in jobs])
    np.testing.assert_allclose(mean, stacked.mean(0).numpy(), rtol=1e-5, atol=1e-7)
    assert np.all(np.abs(mean).reshape(mean.shape[0], -1).max(1) > 0)  # informative for every channel

    result = subprocess.run(
        [*run, "--reference", "null", "--out", str(tmp_path / "null")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all zeros" in result.stderr and "Fix: take the reference from the data: --reference data" in result.stderr
    assert "pass x0=" not in result.stderr
    bad = subprocess.run([*run[:-1], "0", "--out", str(tmp_path / "bad")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--windows must be >= 1" in bad.stderr


def test_gradmap_bad_reference_is_a_clear_error(sweep_dir, tmp_path):
    result = subprocess.run(
        ["dstrf-estimate", str(sweep_dir), "--gradmap", "--x0", "2:10", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1 and "frame 10 of trial 2 cannot end a window of 65 frames" in result.stderr
    assert not list(tmp_path.iterdir())


def test_analyze_gives_per_trial_and_per_channel_nonlinearities_of_the_masked_mean(estimated):
    import csv

    from dstrf.analysis import nonlinearities

    sweep_dir, out, index = estimated
    args = [
        "dstrf-estimate",
        str(sweep_dir),
        "--times",
        "60:90",
        "--channels",
        "0",
        "3",
        "--out",
        str(out),
        "--analyze",
        "--baseline",
        "model.hidden=8",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nonlinearities of the sweep" in result.stdout
    with open(out / "nonlinearities.csv") as f:
        rows = list(csv.DictReader(f))
    tested = sorted(e["trial"] for e in index["trials"] if e["group"] == "")
    assert sorted({int(r["trial"]) for r in rows}) == tested and {r["name"] for r in rows} == {
        "linear",
        "temporal_hold",
    }
    entry = next(e for e in index["trials"] if e["group"] == "")
    with h5py.File(out / entry["file"], "r") as f:  # frames 64..89 have their whole window inside the trial
        masked = f["mean"][4:] * f["mask"][4:]
    expected = nonlinearities(masked)
    mine = [r for r in rows if int(r["trial"]) == entry["trial"]]
    np.testing.assert_allclose([float(r["complexity"]) for r in mine], expected.column("complexity"))
    np.testing.assert_allclose([float(r["gain_change"]) for r in mine], expected.column("gain_change"))
    assert (out / "nonlinearities_by_channel.csv").is_file() and (out / "nonlinearities.png").is_file()
    assert (out / "model.hidden=8" / "nonlinearities.csv").is_file()
    bad = subprocess.run([*args[:-1], "model.hidden=99"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "--baseline 'model.hidden=99' is not a group of this sweep" in bad.stderr


def test_model_sets_are_folds_or_under_pairs_the_trials():
    from types import SimpleNamespace

    from dstrf.sweep.posthoc import _model_sets

    job = lambda name, fold: SimpleNamespace(name=name, fold=fold)
    kfold = [job("fold0_jk0", 0), job("fold0_jk1", 0)]
    plan = {("", 0): kfold, ("", 1): kfold, ("", 2): [job("fold1_jk0", 1)]}
    assert [(g, stem, [j.name for j in jobs], tested) for g, stem, jobs, tested in _model_sets(plan)] == [
        ("", "fold_0", ["fold0_jk0", "fold0_jk1"], [0, 1]),
        ("", "fold_1", ["fold1_jk0"], [2]),
    ]
    # pairs of 3 trials: fold 0 = {0, 1}, fold 1 = {0, 2}, fold 2 = {1, 2}; trial i's models are the pairs with i
    pairs = [job("fold0", 0), job("fold1", 1), job("fold2", 2)]
    plan = {("m", 0): pairs[:2], ("m", 1): [pairs[0], pairs[2]], ("m", 2): pairs[1:]}
    assert [(stem, tested) for _, stem, _, tested in _model_sets(plan)] == [
        ("trial_0", [0]),
        ("trial_1", [1]),
        ("trial_2", [2]),
    ]


def test_a_frame_stride_and_the_size_said_before_the_work(sweep_dir, tmp_path):
    import argparse

    from dstrf.sweep.posthoc import _time_range

    assert _time_range("60:90:5") == slice(60, 90, 5) and _time_range(":90") == slice(None, 90, None)
    for bad in ("60", "a:b", "0:10:0"):
        with pytest.raises(argparse.ArgumentTypeError, match="--times"):
            _time_range(bad)
    out = tmp_path / "strided"
    args = [
        "dstrf-estimate",
        str(sweep_dir),
        "--times",
        "60:90:5",
        "--channels",
        "1",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env={**os.environ, "WANDB_MODE": "disabled"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "output frames in all; the files will hold about" in result.stderr
    assert "about" in result.stderr and "for the first trial (timed on a few of its frames)" in result.stderr
    assert not [p for p in out.rglob("*.probe*")]  # the timing's scratch file is gone
    index = json.loads((out / "index.json").read_text())
    with h5py.File(out / index["trials"][0]["file"], "r") as f:
        assert f["times"][()].tolist() == [60, 65, 70, 75, 80, 85] and f["mean"].shape[:2] == (6, 1)


def test_figures_are_drawn_from_the_jackknife_files(estimated):
    """--figures draws the chosen channels per trial from the files alone, also for files kept from a run before."""
    sweep_dir, out, index = estimated
    args = ["dstrf-estimate", str(sweep_dir), "--times", "60:90", "--channels", "0", "3", "--out", str(out)]
    result = subprocess.run([*args, "--figures", "3"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((out / "index.json").read_text())
    assert again["kept"] == len(again["trials"])  # nothing recomputed
    for entry in again["trials"]:
        name = entry["file"].replace(".h5", "_channel_3.png")
        assert entry["figures"] == [name] and (out / name).stat().st_size > 10_000
    refused = subprocess.run([*args, "--figures", "1"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1 and "--figures [1] are not among --channels [0, 3]" in refused.stderr
    moving = subprocess.run(
        [*args, "--figures", "0", "--animation", "--animation-frames", "3"], capture_output=True, text=True, timeout=600
    )
    assert moving.returncode == 0, moving.stderr[-3000:]
    for entry in json.loads((out / "index.json").read_text())["trials"]:
        still, animated = entry["figures"]
        assert still == entry["file"].replace(".h5", "_channel_0.png")
        assert Path(animated).stem == Path(still).stem and Path(animated).suffix in (".mp4", ".gif")
        assert (out / animated).stat().st_size > 1_000
    alone = subprocess.run([*args, "--animation"], capture_output=True, text=True, timeout=600)
    assert alone.returncode == 1 and "--animation animates the channels of --figures" in alone.stderr
