import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from dstrf.data.synthetic import synthetic_trials
from dstrf.estimate import dstrf, open_dstrf
from dstrf.lit import EncoderModule
from dstrf.lit.callbacks import DSTRFCallback, GradmapCallback

from ..wandb_records import offline_runs


@pytest.mark.slow
def test_dstrf_callback_under_ddp_writes_the_files_of_a_single_process(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "experiment=quick",
        "callbacks=analysis",
        "callbacks.dstrf.times=[60,90]",
        "callbacks.dstrf.channels=[0,4]",
        "callbacks.gradmap.x0=[3,100]",
        "split.test=[0,1,2]",
        "split.val=[3]",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    index = json.loads((run_dir / "dstrf" / "index.json").read_text())
    assert sorted(index["trials"]) == ["0", "1", "2"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert index["checkpoint"] == metrics["best_checkpoint"].split("/")[-1]

    # one process, same checkpoint, same settings
    module = EncoderModule.load_from_checkpoint(run_dir / metrics["best_checkpoint"], map_location="cpu")
    trials = synthetic_trials(n_trials=5, n_frames=400, n_freqs=16)
    single = tmp_path / "single"
    single.mkdir()
    callback = DSTRFCallback(channels=[0, 4], times=[60, 90])
    assert callback.compute(module, {t: trials[t].stimulus for t in (0, 1, 2)}, single) == [0, 1, 2]
    for t in (0, 1, 2):
        with open_dstrf(run_dir / "dstrf" / f"trial_{t}.h5") as ddp, open_dstrf(single / f"trial_{t}.h5") as one:
            assert ddp.times.tolist() == list(range(60, 90)) and ddp.channels.tolist() == [0, 4]
            torch.testing.assert_close(ddp[:], one[:], rtol=0, atol=0)
    # and the stored numbers are the dSTRF of the model in the data's units
    expected = dstrf(module.data_units(), trials[1].stimulus, channels=[0, 4], times=range(60, 90))
    with open_dstrf(run_dir / "dstrf" / "trial_1.h5") as stored:
        torch.testing.assert_close(stored[:], expected)
    # callbacks=analysis: the nonlinearity tables of the three trials, and the gradient maps of rank 0 alone
    assert len((run_dir / "dstrf" / "nonlinearities.csv").read_text().splitlines()) == 1 + 3 * 2
    from dstrf.estimate import gradmap

    maps = np.load(run_dir / "gradmap" / "gradmaps.npz")["maps"]
    torch.testing.assert_close(torch.from_numpy(maps), gradmap(module.data_units(), x0=trials.window(3, 100, 65)))


def test_ranks_write_disjoint_shares_that_cover_every_trial(tmp_path):
    module = EncoderModule({"_target_": "dstrf.models.LinearSTRF", "lags": 4}, 3, 2)
    stimuli = {t: torch.randn(3, 30) for t in (3, 7, 1, 9, 4)}
    callback = DSTRFCallback(times=[10, 20])
    shares = [callback.compute(module, stimuli, tmp_path, rank=rank, world_size=2) for rank in range(2)]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == [1, 3, 4, 7, 9]
    assert sorted(p.name for p in tmp_path.glob("trial_*.h5")) == [f"trial_{t}.h5" for t in (1, 3, 4, 7, 9)]
    with open_dstrf(tmp_path / "trial_7.h5") as stored:  # a linear model's dSTRF is its kernel, in data units
        torch.testing.assert_close(stored[5], module.data_units().encoder.strf.detach())


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"times must be \[start, stop\]"):
        DSTRFCallback(times=[1, 2, 3])
    with pytest.raises(ValueError, match="dtype must be one of"):
        DSTRFCallback(dtype="int8")


@pytest.mark.slow
def test_figures_and_animation_are_written_and_logged_to_wandb(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "experiment=quick",
        "callbacks=dstrf",
        "callbacks.dstrf.times=[60,120]",
        "callbacks.dstrf.channels=[1,2]",
        "callbacks.dstrf.figure_channels=[2]",
        "callbacks.dstrf.animation=true",
        "callbacks.dstrf.animation_frames=6",
        "split.test=[0,1]",
        "split.val=[2]",
        "logger=wandb",
        "logger.wandb.mode=offline",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "dstrf"
    assert sorted(p.name for p in out.glob("*.png")) == ["trial_0_channel_2.png", "trial_1_channel_2.png"]
    assert sorted(p.name for p in out.glob("*.gif")) == ["trial_0_channel_2.gif", "trial_1_channel_2.gif"]
    from PIL import Image

    with Image.open(out / "trial_1_channel_2.gif") as movie:
        assert movie.n_frames == 6
    media = next((run_dir / "wandb").glob("offline-run-*")) / "files" / "media"
    assert len(list((media / "images" / "dstrf").glob("trial_*_channel_2_*.png"))) == 2
    assert len(list((media / "videos" / "dstrf").glob("trial_*_channel_2/animation_*.gif"))) == 2
    # a figure and the animation of the same map never share a key: one media type per key
    (run,) = offline_runs(run_dir)
    for trial in (0, 1):
        assert run.summary[f"dstrf/trial_{trial}_channel_2"]["_type"] == "image-file"
        assert run.summary[f"dstrf/trial_{trial}_channel_2/animation"]["_type"] == "video-file"


def test_figure_channels_must_be_computed():
    with pytest.raises(ValueError, match=r"figure_channels \[3\] are not among the computed channels \[0, 1\]"):
        DSTRFCallback(channels=[0, 1], figure_channels=[1, 3])
    with pytest.raises(ValueError, match="animation_frames must be a positive"):
        DSTRFCallback(animation_frames=0)


@pytest.mark.slow
def test_gradmap_callback_after_fitting_writes_maps_optimal_stimuli_and_logs_them(tmp_path):
    from dstrf.estimate import gradmap

    run_dir = tmp_path / "run"
    args = [
        "experiment=quick",
        "model=ln_strf",
        "callbacks=gradmap",
        "callbacks.gradmap.optimal_stimuli=[1]",
        "callbacks.gradmap.steps=60",
        "callbacks.gradmap.constraint=[range,-2,2]",
        "logger=wandb",
        "logger.wandb.mode=offline",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "gradmap"
    assert sorted(p.name for p in out.iterdir()) == [
        "gradmaps.npz",
        "gradmaps.png",
        "optimal_stimuli.npz",
        "optimal_stimuli.png",
    ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    module = EncoderModule.load_from_checkpoint(run_dir / metrics["best_checkpoint"], map_location="cpu")
    saved = np.load(out / "gradmaps.npz")
    assert saved["maps"].shape == (5, 16, module.receptive_field) and list(saved["channel_names"])[3] == "temporal_hold"
    # the default reference: 64 windows evenly spaced over the test trials, so the map is their mean dSTRF
    import dstrf

    job = dstrf.inspect.load(run_dir)
    data, test = job.trials(), job.jobs[0].split.test
    ends = saved["reference_frames"]
    assert ends.shape == (64, 2) and set(ends[:, 0]) == set(test) and "mean over 64 windows" in str(saved["reference"])
    windows = torch.stack([data.window(t, f, module.receptive_field) for t, f in ends])
    expected = gradmap(module.data_units(), x0=windows).numpy()
    np.testing.assert_allclose(saved["maps"], expected, rtol=1e-5, atol=1e-7)
    assert np.abs(saved["maps"] - gradmap(module.data_units()).numpy()).max() > 1e-3 * np.abs(expected).max()
    # LN model: the kernel times the mean slope s'(W x + b) > 0, in data units (sd_y / sd_x per band)
    encoder = module.encoder
    assert np.corrcoef(saved["maps"][1].ravel(), encoder.strf[1].detach().numpy().ravel())[0, 1] > 0.999
    stimuli = np.load(out / "optimal_stimuli.npz")
    assert stimuli["standardized"].shape == (1, 16, module.receptive_field)
    assert stimuli["standardized"].min() >= -2 and stimuli["standardized"].max() <= 2
    assert stimuli["responses"][0, -1] > stimuli["responses"][0, 0] + 1
    media = next((run_dir / "wandb").glob("offline-run-*")) / "files" / "media" / "images" / "gradmap"
    assert len(list(media.glob("gradmaps_*.png"))) == 1 and len(list(media.glob("optimal_stimuli_*.png"))) == 1


def test_gradmap_callback_reference_window_from_the_data(tmp_path):
    from dstrf.estimate import gradmap

    trials = synthetic_trials(n_trials=2, n_frames=120, n_freqs=4, neurons=("linear", "ln"))
    module = EncoderModule({"_target_": "dstrf.models.DeepEncoder", "hidden": 6}, 4, 2)
    with pytest.warns(UserWarning, match=r"all zeros.* Fix: .*callbacks\.gradmap\.reference=data"):
        GradmapCallback(reference="null").compute(module, trials, tmp_path / "null")  # bias-free ReLU: flat there
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        written = GradmapCallback(windows=5).compute(module, trials, tmp_path / "default", trial_ids=[1])
    saved = np.load(written["gradmaps"])
    assert saved["reference_frames"].tolist() == [[1, 64], [1, 78], [1, 92], [1, 105], [1, 119]]
    windows = torch.stack([trials.window(1, f, 65) for f in (64, 78, 92, 105, 119)])
    np.testing.assert_allclose(saved["maps"], gradmap(module.data_units(), x0=windows).numpy())
    assert np.all(np.abs(saved["maps"]).reshape(2, -1).max(1) > 0)
    written = GradmapCallback(x0=[1, 100]).compute(module, trials, tmp_path / "data")
    window = trials[1].stimulus[:, 100 - 64 : 101]
    np.testing.assert_allclose(np.load(written["gradmaps"])["maps"], gradmap(module.data_units(), x0=window).numpy())
    with pytest.raises(ValueError, match="frame 30 of trial 1 cannot end a window of 65 frames"):
        GradmapCallback(x0=[1, 30]).compute(module, trials, tmp_path / "bad")
    with pytest.raises(ValueError, match=r"x0 must be \[trial, frame\]"):
        GradmapCallback(x0=[1])


@pytest.mark.slow
def test_analyze_writes_the_nonlinearity_tables_of_the_test_trials(tmp_path):
    import csv

    from dstrf.analysis import nonlinearities

    run_dir = tmp_path / "run"
    args = [
        "experiment=quick",
        "callbacks=dstrf",
        "callbacks.dstrf.times=[40,140]",
        "callbacks.dstrf.channels=[0,3]",
        "callbacks.dstrf.figures=false",
        "callbacks.dstrf.analyze=true",
        "split.test=[0,1]",
        "split.val=[2]",
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "dstrf.train", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "dstrf"
    assert not list(out.glob("trial_*.png"))  # figures=false
    with open(out / "nonlinearities.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["trial"], r["channel"], r["name"]) for r in rows] == [
        ("0", "0", "linear"),
        ("0", "3", "temporal_hold"),
        ("1", "0", "linear"),
        ("1", "3", "temporal_hold"),
    ]
    with open_dstrf(out / "trial_1.h5") as stored:  # the frames whose window lies inside the trial: 64..139
        expected = nonlinearities(stored[24:].numpy())
    np.testing.assert_allclose(
        [float(rows[2]["complexity"]), float(rows[3]["complexity"])], expected.column("complexity")
    )
    assert [int(rows[i]["frames"]) for i in (2, 3)] == [76, 76]
    with open(out / "nonlinearities_by_channel.csv") as f:
        summary = list(csv.DictReader(f))
    assert [r["trials"] for r in summary] == ["2", "2"]
    assert float(summary[1]["shape_change"]) == pytest.approx(
        (float(rows[1]["shape_change"]) + float(rows[3]["shape_change"])) / 2
    )
    assert (out / "nonlinearities.png").is_file()
