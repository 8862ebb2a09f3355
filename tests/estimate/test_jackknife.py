import h5py
import numpy as np
import pytest
import torch

from dstrf.estimate import dstrf, jackknife_dstrf, jackknife_se, quantile, sign_consistency_mask
from dstrf.estimate.jackknife import block_shape, element_bytes, jackknife_seconds
from dstrf.models import DeepEncoder

F, N, T = 6, 2, 90


def replicates(m=5):
    models = []
    for seed in range(m):
        torch.manual_seed(seed)
        models.append(DeepEncoder(F, N, hidden=5, kernel_size=3, dilations=(1, 2)))
    return models


def test_mean_mask_and_se_equal_a_direct_computation_on_the_stacked_dstrfs():
    models = replicates()
    x = torch.randn(F, T, generator=torch.Generator().manual_seed(3))
    stacked = torch.stack([dstrf(m, x, dtype=torch.float64) for m in models]).numpy()  # (M, T, N, F, L)
    result = jackknife_dstrf(models, x, q=0.9, chunk_size=13)  # chunks smaller than T: streamed
    np.testing.assert_allclose(result.mean.numpy(), stacked.mean(0), rtol=1e-5, atol=1e-7)
    se = np.sqrt((5 - 1) / 5 * ((stacked - stacked.mean(0)) ** 2).sum(0))
    np.testing.assert_allclose(result.se.numpy(), se, rtol=1e-5, atol=1e-7)
    straddles = (np.quantile(stacked, 0.9, axis=0) > 0) & (np.quantile(stacked, 0.1, axis=0) < 0)
    np.testing.assert_array_equal(result.mask.numpy(), ~straddles)
    assert 0 < result.mask.float().mean() < 1  # random replicates: some bins agree, some do not
    np.testing.assert_allclose(result.masked.numpy(), np.where(straddles, 0, stacked.mean(0)), rtol=1e-5, atol=1e-7)


def test_identical_replicates_are_all_significant_with_zero_se():
    model = replicates(1)[0]
    x = torch.randn(F, T)
    result = jackknife_dstrf([model, model, model], x)
    assert bool(result.mask.all()) and float(result.se.abs().max()) < 1e-6
    torch.testing.assert_close(result.mean, dstrf(model, x))


def test_statistics_helpers():
    values = torch.randn(7, 4, 3, dtype=torch.float64)
    np.testing.assert_allclose(quantile(values, 0.83).numpy(), np.quantile(values.numpy(), 0.83, axis=0))
    assert torch.isnan(jackknife_se(torch.ones(1, 3))).all()
    with pytest.raises(ValueError, match=r"q must be in \(0.5, 1\)"):
        sign_consistency_mask(values, q=0.3)
    with pytest.raises(ValueError, match="at least one model"):
        jackknife_dstrf([], torch.randn(F, T))


def test_block_shape_fits_the_memory_budget():
    per = 4 * 64 * 65 * (7 + 5)  # bytes per (frame, channel) element, M = 7, float32
    assert element_bytes(64, 65, 7) == per and element_bytes(64, 65, 7, itemsize=8) == 2 * per
    assert element_bytes(4, 5, 40) == 4 * 5 * (4 * 45 + 12 * 40)  # beyond 32 models torch.sort's copies count
    assert block_shape(6000, 220, 64, 65, 7, memory=per * 220 * 40) == (40, 220)  # whole rows of channels
    frames, channels = block_shape(6000, 220, 64, 65, 7, memory=per * 800)  # fewer than 16 rows fit
    assert (frames, channels) == (16, 50) and frames * channels * per <= per * 800
    assert block_shape(10, 3, 4, 5, 2, memory=1) == (1, 1)  # below one element: one at a time
    assert block_shape(10, 3, 4, 5, 2, memory=1 << 40) == (10, 3)  # never more than there is


def test_streaming_into_a_file_in_blocks_equals_the_in_memory_result(tmp_path, monkeypatch):
    """A budget of a few elements forces blocks of frames and of channels; every dSTRF call stays within it."""
    import dstrf.estimate.jackknife as jackknife

    torch.manual_seed(0)
    models = [DeepEncoder(F, 7, hidden=8, kernel_size=3, dilations=(1, 2)) for _ in range(3)]  # N < H: per channel
    x = torch.randn(F, T, generator=torch.Generator().manual_seed(3))
    expected = jackknife_dstrf(models, x, q=0.9)
    per = element_bytes(F, models[0].receptive_field, 3)
    calls = []
    real = jackknife.dstrf
    monkeypatch.setattr(jackknife, "dstrf", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    path = jackknife_dstrf(models, x, q=0.9, out=tmp_path / "jk.h5", attrs={"trial": 4}, memory=per * 40)
    assert (20, 2) in {tuple(c.shape[:2]) for c in calls} and max(c.shape[0] * c.shape[1] for c in calls) <= 40
    with h5py.File(path) as f:
        np.testing.assert_allclose(f["mean"][()], expected.mean.numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(f["se"][()], expected.se.numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_array_equal(f["mask"][()], expected.mask.numpy())
        assert f["times"][()].tolist() == list(range(T)) and f["channels"][()].tolist() == list(range(7))
        assert f.attrs["trial"] == 4 and f.attrs["mask_meaning"].startswith("True: the models agree in sign")
    assert not (tmp_path / "jk.h5.partial").exists()
    with pytest.raises(FileExistsError, match="never overwrites"):
        jackknife_dstrf(models, x, out=path)


def test_an_interrupted_stream_leaves_only_the_partial_file(tmp_path, monkeypatch):
    import dstrf.estimate.jackknife as jackknife

    models = replicates(2)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return dstrf(*args, **kwargs)

    monkeypatch.setattr(jackknife, "dstrf", failing)
    with pytest.raises(KeyboardInterrupt):
        jackknife_dstrf(models, torch.randn(F, T), chunk_size=10, out=tmp_path / "jk.h5")
    assert not (tmp_path / "jk.h5").exists() and (tmp_path / "jk.h5.partial").exists()


def test_memory_budget_is_validated():
    with pytest.raises(ValueError, match="memory must be a number of bytes or a size"):
        jackknife_dstrf(replicates(1), torch.randn(F, T), memory="lots")


@pytest.mark.parametrize("m", [1, 2, 3, 7, 11, 33])
def test_block_statistics_in_place_equal_the_definitions(m):
    """The in-place route (sorting network up to 32 models, torch.sort beyond) gives numpy's mean, SE and mask."""
    from dstrf.estimate.jackknife import _block_statistics

    rng = np.random.default_rng(m)
    values = rng.standard_normal((m, 40, 3)).astype(np.float32)
    values[rng.random(values.shape) < 0.2] = 0.0
    values[:, :10] = np.round(values[:, :10])  # ties
    mean, se, mask = _block_statistics(torch.from_numpy(values.copy()), 0.9, torch.float32)
    np.testing.assert_allclose(mean.numpy(), values.mean(0), rtol=1e-6, atol=1e-7)
    if m > 1:
        expected_se = np.sqrt((m - 1) / m * ((values - values.mean(0)) ** 2).sum(0))
        np.testing.assert_allclose(se.numpy(), expected_se, rtol=1e-5, atol=1e-6)
    else:
        assert torch.isnan(se).all()
    straddles = (np.quantile(values, 0.9, axis=0) > 0) & (np.quantile(values, 0.1, axis=0) < 0)
    np.testing.assert_array_equal(mask.numpy(), ~straddles)
    if m >= 3:  # both kinds of element occur
        assert straddles.any() and (~straddles).any()


@pytest.mark.parametrize("m", [2, 3, 7, 11])
def test_the_mask_equals_numpys_quantiles_with_ties_and_zeros(m):
    rng = np.random.default_rng(m)
    values = rng.standard_normal((m, 3000))
    values[rng.random((m, 3000)) < 0.2] = 0.0  # exact zeros: neither side of the sign test
    values[:, :500] = np.round(values[:, :500])  # ties
    for q in (0.51, 0.75, 0.9, 0.95, 0.99):
        straddles = (np.quantile(values, q, axis=0) > 0) & (np.quantile(values, 1 - q, axis=0) < 0)
        np.testing.assert_array_equal(sign_consistency_mask(torch.from_numpy(values), q).numpy(), ~straddles)


def test_hidden_unit_models_are_blocked_in_whole_rows_of_channels(monkeypatch):
    """A block of channels would recompute the hidden units' Jacobian: every block holds all channels."""
    import dstrf.estimate.jackknife as jackknife

    torch.manual_seed(0)
    models = [DeepEncoder(F, 9, hidden=3, kernel_size=3, dilations=(1, 2)) for _ in range(2)]  # N = 9 > H = 3
    per = element_bytes(F, models[0].receptive_field, 2)
    calls = []
    real = jackknife.dstrf
    monkeypatch.setattr(jackknife, "dstrf", lambda *a, **k: calls.append(k) or real(*a, **k))
    jackknife_dstrf(models, torch.randn(F, T), memory=per * 9 * 16)
    assert {len(k["channels"]) for k in calls} == {9} and {k["hidden_units"] for k in calls} == {True}
    assert block_shape(100, 9, F, 7, 2, memory=per * 40, whole_rows=True) == (4, 9)
    calls.clear()  # a budget of whole rows of fewer than 16 frames: per channel, in blocks of channels
    jackknife_dstrf(models, torch.randn(F, T), memory=per * 40)
    assert {k["hidden_units"] for k in calls} == {False} and max(len(k["channels"]) for k in calls) == 2


def test_the_time_estimate_times_the_blocks_jackknife_dstrf_takes_and_scales_them(tmp_path, monkeypatch):
    """jackknife_seconds times one model on the first probe frames of one channel block, with the route and width
    jackknife_dstrf uses, plus the statistics and a scratch write, and scales by frames and channel blocks."""
    import time

    import dstrf.estimate.jackknife as jackknife

    models = replicates(3)
    per = element_bytes(F, models[0].receptive_field, 3)
    x, times = torch.randn(F, T), slice(10, 74)  # 64 output frames
    calls: list[dict] = []
    real = jackknife.dstrf
    monkeypatch.setattr(jackknife, "dstrf", lambda *a, **k: calls.append(k) or real(*a, **k))
    jackknife_dstrf(models, x, times=times, memory=per * 16)  # blocks of 16 frames x 1 channel, N = 2
    used = {(len(k["channels"]), k["hidden_units"]) for k in calls}
    calls.clear()
    clock = iter(range(1000))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))  # every timed step takes 1 s
    seconds = jackknife_seconds(models, x, times=times, memory=per * 16, probe_frames=8, out=tmp_path / "jk.h5")
    assert {(len(k["channels"]), k["hidden_units"]) for k in calls} == used == {(1, False)}
    assert [len(k["times"]) for k in calls] == [8, 8, 8]  # a warm-up and two timed probes
    # (3 models x 1 s + 1 s statistics and writing) x 64 / 8 frames x 2 channel blocks
    assert seconds == (3 + 1) * 64 / 8 * 2
    assert list(tmp_path.iterdir()) == []  # the scratch file is gone, and nothing is at out
    with pytest.raises(ValueError, match="times is empty"):
        jackknife_seconds(models, x, times=[])


def test_open_dstrf_opens_a_jackknife_file_and_figures_draw_from_it(tmp_path):
    from dstrf.estimate import open_dstrf
    from dstrf.plots import plot_dstrf

    models = replicates(3)
    x = torch.randn(F, T, generator=torch.Generator().manual_seed(5))
    expected = jackknife_dstrf(models, x, q=0.9, times=slice(20, 60))
    path = jackknife_dstrf(models, x, q=0.9, times=slice(20, 60), out=tmp_path / "jk.h5", attrs={"sfreq": 100.0})
    with open_dstrf(path) as f:
        assert (
            f.kind == "jackknife" and f.times.tolist() == list(range(20, 60)) and f.shape == tuple(expected.mean.shape)
        )
        torch.testing.assert_close(f[5:9, 1], expected.mean[5:9, 1])  # the mean is the file's dSTRF
        torch.testing.assert_close(f.dataset("se"), expected.se)
        assert torch.equal(f.dataset("mask", (slice(0, 3),)), expected.mask[:3])
        assert f.attrs["q"] == 0.9 and f.attrs["n_models"] == 3 and f.attrs["sfreq"] == 100.0
        with pytest.raises(KeyError, match="has no dataset 'dstrf'"):
            f.dataset("dstrf")
        figure = plot_dstrf(f, x, channel=1, times=[30, 40])
        assert len(figure.axes) >= 3
    with h5py.File(tmp_path / "other.h5", "w") as other:
        other.create_dataset("mean", data=np.zeros((2, 3, 4)))  # a gradient-map file: no frames
    with pytest.raises(ValueError, match="is not a dSTRF file"):
        open_dstrf(tmp_path / "other.h5")
