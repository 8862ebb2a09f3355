"""dstrf.postfit: the post-fit steps that the run callbacks and dstrf-estimate share, on tiny synthetic data."""

import csv
import json
import warnings

import h5py
import numpy as np
import pytest
import torch

from dstrf import postfit
from dstrf.analysis import by_channel, nonlinearities, stack_tables
from dstrf.data.synthetic import synthetic_trials
from dstrf.estimate import InactiveGradmapWarning, dstrf, gradmap, open_dstrf
from dstrf.models import LNSTRF, DeepEncoder, LinearSTRF

LAGS = 4


@pytest.fixture(scope="module")
def trials():
    return synthetic_trials(n_trials=3, n_frames=80, n_freqs=4, neurons=("linear", "ln"))


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return LinearSTRF(4, 2, lags=LAGS).eval()


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def dstrfs(seed, n_frames=12, n_channels=2):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((1, n_channels, 3, LAGS))
    gain = 1 + 0.5 * rng.standard_normal((n_frames, n_channels, 1, 1))
    return base * gain + 0.3 * rng.standard_normal((n_frames, n_channels, 3, LAGS))


def test_names_index_and_warmup():
    assert postfit.trial_file("out", 7).as_posix() == "out/trial_7.h5"
    assert postfit.warmup_start(np.arange(10), 4) == 3  # frames 0..2 see padding, frame 3 does not
    assert postfit.warmup_start(np.arange(60, 90), 65) == 4  # a stored range starting inside the warm-up
    assert postfit.warmup_start(np.arange(100, 110), 65) == 0


def test_write_index_creates_the_folder(tmp_path):
    path = postfit.write_index(tmp_path / "a" / "b", {"trials": [1, 2], "q": 0.95})
    assert path == tmp_path / "a" / "b" / "index.json"
    assert json.loads(path.read_text()) == {"trials": [1, 2], "q": 0.95}


def test_write_dstrfs_shares_trials_among_ranks_and_stores_the_dstrf(tmp_path, trials, linear):
    stimuli = {t: trials[t].stimulus for t in (2, 0, 1)}
    shares = [
        postfit.write_dstrfs(linear, stimuli, tmp_path, times=slice(10, 20), channels=[1], rank=r, world_size=2)
        for r in range(2)
    ]
    assert shares == [[0, 2], [1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial_0.h5", "trial_1.h5", "trial_2.h5"]
    with open_dstrf(tmp_path / "trial_2.h5") as stored:
        assert stored.times.tolist() == list(range(10, 20)) and stored.channels.tolist() == [1]
        assert stored.shape == (10, 1, 4, LAGS)
        torch.testing.assert_close(stored[:], dstrf(linear, trials[2].stimulus, channels=[1], times=range(10, 20)))
        torch.testing.assert_close(stored[3, 0], linear.strf[1].detach())  # a linear model: its kernel


def test_analyze_dstrfs_of_arrays_equals_nonlinearities_past_the_warmup(tmp_path):
    arrays = {3: dstrfs(0), 1: dstrfs(1)}
    names = ["a", "b"]
    written = postfit.analyze_dstrfs(arrays, tmp_path, names)
    assert written == {
        "per_trial": tmp_path / "nonlinearities.csv",
        "by_channel": tmp_path / "nonlinearities_by_channel.csv",
        "figure": tmp_path / "nonlinearities.png",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(postfit.NONLINEARITY_FILES.values())
    # rows 0..T-1 are frames 0..T-1: the first LAGS - 1 see the padding and are left out
    expected = stack_tables({t: nonlinearities(W[LAGS - 1 :], names=names) for t, W in arrays.items()})
    rows = read_csv(written["per_trial"])
    assert [(r["trial"], r["channel"], r["name"], r["frames"]) for r in rows] == [
        ("1", "0", "a", "9"),
        ("1", "1", "b", "9"),
        ("3", "0", "a", "9"),
        ("3", "1", "b", "9"),
    ]
    for column in ("complexity", "gain_change", "temporal_hold", "shape_change"):
        np.testing.assert_allclose([float(r[column]) for r in rows], expected.column(column), rtol=1e-12)
    summary = read_csv(written["by_channel"])
    expected_summary = by_channel(expected)
    assert [r["trials"] for r in summary] == ["2", "2"]
    np.testing.assert_allclose([float(r["complexity"]) for r in summary], expected_summary.column("complexity"))


def test_analyze_dstrfs_of_files_reads_their_frames_and_channels(tmp_path, trials, linear):
    postfit.write_dstrfs(linear, {0: trials[0].stimulus}, tmp_path, times=slice(1, 30), channels=[1])
    written = postfit.analyze_dstrfs({0: postfit.trial_file(tmp_path, 0)}, tmp_path, trials.channel_names)
    rows = read_csv(written["per_trial"])
    with open_dstrf(tmp_path / "trial_0.h5") as stored:  # frames 1..29 stored, 3..29 past the warm-up
        expected = nonlinearities(stored[2:].numpy())
    assert [(r["trial"], r["channel"], r["name"], r["frames"]) for r in rows] == [
        ("0", "1", trials.channel_names[1], "27")
    ]
    np.testing.assert_allclose(float(rows[0]["complexity"]), expected.column("complexity")[0], rtol=1e-12)
    assert float(rows[0]["complexity"]) == pytest.approx(1.0)  # a linear model: one filter


def test_too_few_frames_past_the_warmup_is_an_error_that_says_so():
    with pytest.raises(ValueError, match=r"^trial 5 has 2 frames past the warm-up \(3 frames\); go further$"):
        postfit.analyze_dstrfs({5: dstrfs(0, n_frames=5)}, ".", label="trial {trial} has", remedy="go further")


def test_nonlinearity_table_of_a_masked_mean_with_stored_frames_and_channels():
    mean, mask = dstrfs(2, n_frames=10), dstrfs(3, n_frames=10) > -0.5
    table = postfit.nonlinearity_table(
        mean, ["x", "y", "z", "w"], mask=mask, times=np.arange(1, 11), channels=[3, 1], tau_max=2
    )
    expected = nonlinearities((mean * mask)[2:], names=["w", "y"], tau_max=2)
    assert table.column("channel").tolist() == [3, 1] and list(table.column("name")) == ["w", "y"]
    np.testing.assert_allclose(table.column("complexity"), expected.column("complexity"), rtol=1e-12)
    np.testing.assert_allclose(table.column("shape_change"), expected.column("shape_change"), rtol=1e-12)
    assert table.settings["tau_max"] == 2


def test_write_nonlinearities_with_the_prediction_gain(tmp_path):
    tables = {0: nonlinearities(dstrfs(4), names=["a", "b"]), 1: nonlinearities(dstrfs(5), names=["a", "b"])}
    written = postfit.write_nonlinearities(
        tables, tmp_path / "group", r_baseline=np.array([0.2, 0.3]), r_model=np.array([0.5, 0.4])
    )
    assert all(path.is_file() for path in written.values())
    assert written["figure"] == tmp_path / "group" / "nonlinearities.png"
    assert len(read_csv(written["per_trial"])) == 4 and len(read_csv(written["by_channel"])) == 2


def test_write_jackknife_file_of_dstrfs_and_of_gradmaps(tmp_path):
    mean = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    path = postfit.write_jackknife_file(
        tmp_path / "g" / "trial_1.h5",
        mean,
        mean / 10,
        mean > 50,
        times=[60, 61],
        channels=[0, 2, 4],
        attrs={"q": 0.9, "lags": 5},
    )
    assert path == tmp_path / "g" / "trial_1.h5" and sorted(p.name for p in path.parent.iterdir()) == ["trial_1.h5"]
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["mean"][()], mean)
        np.testing.assert_array_equal(f["mask"][()], mean > 50)
        assert f["times"][()].tolist() == [60, 61] and f["channels"][()].tolist() == [0, 2, 4]
        assert f["mean"].chunks == (2, 1, 4, 5) and f["se"].fletcher32 and dict(f.attrs) == {"q": 0.9, "lags": 5}
    maps = postfit.write_jackknife_file(
        tmp_path / "fold_0.h5", mean[0], mean[0], mean[0] > 0, channels=[0, 1, 2], attrs={}
    )
    with h5py.File(maps, "r") as f:
        assert "times" not in f and f["mean"].shape == (3, 4, 5) and f["mask"].fletcher32


def test_write_gradmaps_at_the_null_stimulus_and_at_a_data_window(tmp_path, trials, linear):
    written = postfit.write_gradmaps(linear, trials, tmp_path / "null", lags=LAGS, reference="null")
    assert written == {
        "gradmaps": tmp_path / "null" / "gradmaps.npz",
        "gradmaps_figure": tmp_path / "null" / "gradmaps.png",
    }
    saved = np.load(written["gradmaps"])
    np.testing.assert_allclose(saved["maps"], gradmap(linear, lags=LAGS).numpy())
    np.testing.assert_allclose(saved["maps"], linear.strf.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert saved["x0"].tolist() == [-1, -1] and list(saved["channel_names"]) == list(trials.channel_names)
    assert int(saved["lags"]) == LAGS and float(saved["sfreq"]) == trials.sfreq

    torch.manual_seed(1)
    ln = LNSTRF(4, 2, lags=LAGS).eval()
    written = postfit.write_gradmaps(
        ln, trials, tmp_path / "data", lags=LAGS, x0=(1, 40), readout="mean", channel_names=["p", "q"], sfreq=50.0
    )
    saved = np.load(written["gradmaps"])
    window = trials[1].stimulus[:, 40 - LAGS + 1 : 41]
    np.testing.assert_allclose(saved["maps"], gradmap(ln, lags=LAGS, x0=window, readout="mean").numpy())
    assert saved["x0"].tolist() == [1, 40] and list(saved["channel_names"]) == ["p", "q"]
    assert float(saved["sfreq"]) == 50.0 and str(saved["readout"]) == "mean"
    with pytest.raises(ValueError, match="frame 1 of trial 1 cannot end a window of 4 frames"):
        postfit.write_gradmaps(ln, trials, tmp_path / "bad", lags=LAGS, x0=(1, 1))


def test_the_default_reference_is_windows_evenly_spaced_over_the_trials(tmp_path, trials):
    lengths = [trials.lengths[t] for t in (0, 2)]
    stack, ends = postfit.reference_windows(trials, [0, 2], LAGS, count=7)
    valid = [(t, f) for t, n in zip((0, 2), lengths, strict=True) for f in range(LAGS - 1, n)]
    assert ends == [valid[i] for i in np.linspace(0, len(valid) - 1, 7).round().astype(int)]
    assert ends[0] == (0, LAGS - 1) and ends[-1] == (2, lengths[1] - 1)
    for (t, f), window in zip(ends, stack, strict=True):
        torch.testing.assert_close(window, trials[t].stimulus[:, f - LAGS + 1 : f + 1])
    assert len(postfit.reference_windows(trials, [1], LAGS, count=10_000)[1]) == trials.lengths[1] - LAGS + 1
    with pytest.raises(ValueError, match=r"trials \[1\] hold no window of 1000 frames .* reference=null"):
        postfit.reference_windows(trials, [1], 1000)
    with pytest.raises(ValueError, match="at least one window; got windows=0"):
        postfit.reference_windows(trials, [1], LAGS, count=0)

    torch.manual_seed(1)
    ln = LNSTRF(4, 2, lags=LAGS).eval()
    written = postfit.write_gradmaps(ln, trials, tmp_path, lags=LAGS, trial_ids=[0, 2], windows=7)
    saved = np.load(written["gradmaps"])
    assert saved["reference_frames"].tolist() == [list(e) for e in ends]
    assert str(saved["reference"]) == "the mean over 7 windows of trials 0, 2"
    np.testing.assert_allclose(saved["maps"], gradmap(ln, lags=LAGS, x0=stack).numpy())
    with pytest.raises(ValueError, match="reference must be one of"):
        postfit.write_gradmaps(ln, trials, tmp_path, lags=LAGS, reference="zeros")


def test_a_gradmaps_file_opens_and_draws_from_the_file_alone(tmp_path, trials):
    from dstrf.estimate import open_gradmap
    from dstrf.plots import plot_receptive_fields

    torch.manual_seed(1)
    ln = LNSTRF(4, 2, lags=LAGS).eval()
    written = postfit.write_gradmaps(ln, trials, tmp_path, lags=LAGS, windows=5, channel_names=["p", "q"])
    opened = open_gradmap(written["gradmaps"])
    saved = np.load(written["gradmaps"])
    torch.testing.assert_close(opened.maps, torch.from_numpy(saved["maps"]))
    assert opened.kind == "gradmap" and opened.se is None and torch.equal(opened.masked, opened.maps)
    assert opened.channel_names == ["p", "q"] and opened.channels.tolist() == [0, 1] and opened.lags == LAGS
    assert opened.sfreq == trials.sfreq and opened.attrs["readout"] == "last"
    assert opened.attrs["reference"].startswith("the mean over 5 windows")
    figure = plot_receptive_fields(opened)
    assert [ax.get_title() for ax in figure.axes[:2]] == ["p", "q"]
    assert "gradmaps.npz: gradient maps at the mean over 5 windows" in figure.get_suptitle()
    with pytest.raises(ValueError, match="not a gradient-map file"):
        np.savez(tmp_path / "other.npz", x=np.zeros(3))
        open_gradmap(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="no gradient-map file"):
        open_gradmap(tmp_path / "missing.npz")


def test_an_all_zero_map_is_reported_with_the_callers_fix(tmp_path, trials):
    deep = DeepEncoder(4, 2, hidden=3, kernel_size=2, dilations=(1,)).eval()
    with pytest.warns(InactiveGradmapWarning) as caught:
        postfit.write_gradmaps(deep, trials, tmp_path, lags=2, reference="null", fix="use --reference data")
    (warning,) = [w.message for w in caught]
    assert str(warning).endswith(" Fix: use --reference data") and "all zeros" in str(warning)
    assert "pass x0=" not in str(warning)  # the Python API's advice is replaced


def test_write_optimal_stimuli_in_data_units(tmp_path, trials):
    torch.manual_seed(2)
    ln = LNSTRF(4, 2, lags=LAGS).eval()
    mean, std = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 1.0, 2.0, 4.0])
    written = postfit.write_optimal_stimuli(
        ln, [1], trials, tmp_path, mean=mean, std=std, lags=LAGS, steps=20, constraint=("range", -2.0, 2.0), x0=(0, 30)
    )
    assert written == {
        "optimal_stimuli": tmp_path / "optimal_stimuli.npz",
        "optimal_stimuli_figure": tmp_path / "optimal_stimuli.png",
    }
    saved = np.load(written["optimal_stimuli"])
    assert saved["standardized"].shape == (1, 4, LAGS) and saved["responses"].shape == (1, 21)
    assert saved["standardized"].min() >= -2 and saved["standardized"].max() <= 2
    np.testing.assert_allclose(
        saved["stimuli"], saved["standardized"] * std[:, None].numpy() + mean[:, None].numpy(), rtol=1e-6
    )
    assert saved["neurons"].tolist() == [1] and saved["responses"][0, -1] > saved["responses"][0, 0]
    assert saved["starts"].tolist() == [[0, 30]]


def test_optimal_stimuli_start_from_the_reference_window_that_drives_the_neuron_most(tmp_path, trials):
    torch.manual_seed(3)
    deep = DeepEncoder(4, 2, hidden=4, kernel_size=2, dilations=(1, 2)).eval()  # flat at the null stimulus
    mean, std = torch.zeros(4), torch.ones(4)
    lags = deep.receptive_field
    with warnings.catch_warnings():
        warnings.simplefilter("error", InactiveGradmapWarning)
        written = postfit.write_optimal_stimuli(
            deep, [0, 1], trials, tmp_path, mean=mean, std=std, lags=lags, steps=5, trial_ids=[2], windows=9
        )
    saved = np.load(written["optimal_stimuli"])
    stack, ends = postfit.reference_windows(trials, [2], lags, count=9)
    with torch.no_grad():
        drive = deep(stack)[:, :, -1]  # (K, N)
    best = drive.argmax(0).tolist()
    assert saved["starts"].tolist() == [list(ends[k]) for k in best]
    np.testing.assert_allclose(saved["responses"][:, 0], drive.max(0).values.numpy(), rtol=1e-5)
    assert np.all(saved["responses"][:, -1] >= saved["responses"][:, 0])


def test_dstrf_figures_names_and_animation(tmp_path, trials, linear):
    postfit.write_dstrfs(
        linear, {0: trials[0].stimulus, 2: trials[2].stimulus}, tmp_path, times=slice(0, 20), channels=[0, 1]
    )
    written = postfit.dstrf_figures(linear, trials, [0, 2], tmp_path, times=[5, 10])
    assert [p.name for p in written] == ["trial_0_channel_0.png", "trial_2_channel_0.png"]
    assert all(p.is_file() for p in written)
    moving = postfit.dstrf_figures(linear, trials, [2], tmp_path, channels=[1], animation=True, animation_frames=3)
    assert [p.name for p in moving][0] == "trial_2_channel_1.png"
    assert moving[1].stem == "trial_2_channel_1" and moving[1].suffix in (".gif", ".mp4") and moving[1].is_file()
