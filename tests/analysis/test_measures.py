"""The four nonlinearity measures on dSTRFs with known structure, against brute force, and their errors."""

import numpy as np
import pytest
import torch

from dstrf.analysis import complexity, gain_change, inputs, shape_change, temporal_hold

from .conftest import (
    brute_complexity,
    brute_hold,
    brute_shape,
    gains,
    held,
    linear,
    pure_gain,
    smooth_strf,
    switch,
    with_zero_frames,
)

F, L = 16, 40


def stack(*channels):
    """Channels ``(T, F, L)`` -> W ``(T, N, F, L)``."""
    return np.stack(channels, axis=1)


def test_a_linear_model_has_complexity_one_no_gain_change_no_hold_and_no_shape_change():
    rng = np.random.default_rng(0)
    W = stack(*(linear(300, F, L, rng) for _ in range(3)))
    np.testing.assert_allclose(complexity(W), 1.0, atol=1e-12)
    for variant in ("norm_cv", "naplab", "matlab"):
        np.testing.assert_allclose(gain_change(W, variant), 0.0, atol=1e-12)
    np.testing.assert_array_equal(temporal_hold(W), 0.0)
    values, details = shape_change(W, details=True)
    np.testing.assert_allclose(values, 1.0, atol=1e-12)
    assert all((d.shifts == 0).all() and d.converged and d.n_iter == 1 for d in details)


def test_a_pure_gain_change_has_complexity_one_and_the_gain_s_coefficient_of_variation():
    rng = np.random.default_rng(1)
    g = gains(400, rng)
    w = smooth_strf(rng, F, L)
    W = stack(g[:, None, None] * w, pure_gain(400, F, L, rng))
    np.testing.assert_allclose(complexity(W), 1.0, atol=1e-12)
    cv, details = gain_change(W, details=True)
    assert cv[0] == pytest.approx(g.std() / g.mean(), rel=1e-10) and cv.min() > 0.3
    np.testing.assert_allclose(details[0].norm, g * np.linalg.norm(w), rtol=1e-10)  # the gain time course
    assert gain_change(W, "norm_std")[0] == pytest.approx(g.std() * np.linalg.norm(w), rel=1e-10)
    assert gain_change(W, "entry_std")[0] == pytest.approx(g.std() * w.std(), rel=1e-10)
    # scale-free: the default does not change when W is rescaled, the others scale with it
    np.testing.assert_allclose(gain_change(10 * W), cv, rtol=1e-10)
    np.testing.assert_allclose(gain_change(10 * W, "naplab"), 10 * gain_change(W, "naplab"), rtol=1e-10)
    np.testing.assert_array_equal(temporal_hold(W), 0.0)
    np.testing.assert_allclose(shape_change(W), 1.0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_feature_held_over_h_frames_has_a_temporal_hold_of_about_h(seed):
    rng = np.random.default_rng(seed)
    hs = (3, 5, 8, 10)
    built = [held(400, F, L, h, rng) for h in hs]
    W = stack(*(w for w, _ in built))
    hold, details = temporal_hold(W, details=True)
    assert np.all(np.abs(hold - np.array(hs)) <= 2), hold
    assert all(d.p_values[0] < 1e-10 and d.effect_sizes[0] > 0.5 for d in details)
    assert (complexity(W) > 3).all()
    # once latencies are aligned one feature remains: every frame's latency minus its shift is the same
    values, shapes = shape_change(W, details=True)
    np.testing.assert_allclose(values, 1.0, atol=1e-9)
    for (_, latency), d in zip(built, shapes):
        assert len(np.unique(latency - d.shifts)) == 1 and d.converged


def test_a_switch_between_two_filters_is_a_shape_change():
    rng = np.random.default_rng(2)
    W = stack(switch(500, F, L, rng), switch(500, F, L, rng))
    assert (shape_change(W) > 1.5).all() and (complexity(W) > 1.5).all()
    np.testing.assert_array_equal(temporal_hold(W), 0.0)


def test_inserted_all_zero_frames_change_no_measure():
    rng = np.random.default_rng(3)
    W = stack(linear(300, F, L, rng), pure_gain(300, F, L, rng), held(300, F, L, 6, rng)[0], switch(300, F, L, rng))
    W[[40, 41, 200]] = 0  # frames that are zero already
    padded = with_zero_frames(W, [0, 150, 300], 12)  # silence at the start, in the middle and at the end
    np.testing.assert_allclose(complexity(padded), complexity(W), rtol=1e-10)
    for variant in ("norm_cv", "norm_std", "entry_std"):
        np.testing.assert_allclose(gain_change(padded, variant), gain_change(W, variant), rtol=1e-10)
    np.testing.assert_allclose(shape_change(padded), shape_change(W), rtol=1e-10)
    hold, details = temporal_hold(W, tau_max=12, details=True)
    padded_hold, padded_details = temporal_hold(padded, tau_max=12, details=True)
    np.testing.assert_array_equal(padded_hold, hold)
    # zeros inserted only at the ends leave every pair as it was: identical p-values
    _, end_details = temporal_hold(with_zero_frames(W, [0, 300], 5), tau_max=12, details=True)
    for a, b in zip(details, end_details):
        np.testing.assert_array_equal(a.p_values, b.p_values)
        np.testing.assert_array_equal(a.n_pairs, b.n_pairs)
    # the middle block breaks pairs that straddled it: fewer pairs, never pairs with a zero frame
    assert all((b.n_pairs <= a.n_pairs).all() for a, b in zip(details, padded_details))
    # including zero frames in the gain change is a choice, and it shows
    assert gain_change(padded, include_zero_frames=True)[0] > 0.1


def test_a_channel_without_any_nonzero_frame_gets_nan():
    rng = np.random.default_rng(4)
    W = stack(np.zeros((50, F, L)), linear(50, F, L, rng))
    for measure in (complexity, gain_change, temporal_hold, shape_change):
        values = measure(W)
        assert np.isnan(values[0]) and np.isfinite(values[1])


@pytest.mark.parametrize("chunk_size, cached", [(1024, True), (7, True), (7, False)])
def test_equal_to_brute_force_on_random_structured_dstrfs(chunk_size, cached, monkeypatch):
    if not cached:
        monkeypatch.setattr(inputs, "CHANNEL_CACHE_BYTES", 0)
    rng = np.random.default_rng(5)
    T, f, lags = 60, 6, 9
    W = rng.standard_normal((T, 3, f, lags)).cumsum(0) * 0.3 + rng.standard_normal((T, 3, f, lags))
    W[:, 0] = held(T, f, lags, 4, rng, width=2)[0] + 0.1 * rng.standard_normal((T, f, lags))  # a hold to find
    W[10], W[11, 1], W[:, 2, :, -1] = 0, 0, 0  # zero frames, a zero lag
    np.testing.assert_allclose(
        complexity(W, chunk_size=chunk_size), [brute_complexity(W[:, n]) for n in range(3)], rtol=1e-12
    )
    hold, details = temporal_hold(W, tau_max=6, details=True, chunk_size=chunk_size)
    for n in range(3):
        expected_hold, expected_p = brute_hold(W[:, n], 6)
        assert hold[n] == expected_hold
        np.testing.assert_allclose(details[n].p_values, expected_p, rtol=1e-9)
    assert hold[0] >= 1
    values, shapes = shape_change(W, max_shift=3, details=True, chunk_size=chunk_size)
    for n in range(3):
        expected_value, expected_shifts = brute_shape(W[:, n], 3)
        assert values[n] == pytest.approx(expected_value, rel=1e-12)
        np.testing.assert_array_equal(shapes[n].shifts, expected_shifts)


@pytest.mark.slow
def test_the_signed_rank_tests_equal_scipy_column_by_column():
    # all of scipy's cases: long columns (normal approximation, vectorised), short ones without ties (exact),
    # short ones with ties or zeros (up to 13: the exhaustive sign-flip test; 14 to 50: normal approximation)
    import scipy.stats

    from dstrf.analysis.measures import _wilcoxon_greater

    rng = np.random.default_rng(11)
    columns = []
    for n in list(range(1, 16)) + [30, 50, 51, 80]:
        d = rng.standard_normal(n) + 0.3
        columns += [d, np.round(d), np.where(np.arange(n) < n // 3, 0.0, d), np.zeros(n)]
    packed = np.full((80, len(columns)), np.nan)
    for i, c in enumerate(columns):
        packed[: len(c), i] = c
    p, effect = _wilcoxon_greater(packed)
    for i, c in enumerate(columns):
        if not np.any(c != 0):
            assert np.isnan(p[i]) and np.isnan(effect[i])
            continue
        expected = scipy.stats.wilcoxon(c, alternative="greater")
        assert p[i] == pytest.approx(expected.pvalue, rel=1e-10), (len(c), c)
        nz = np.count_nonzero(c)
        assert effect[i] == pytest.approx(expected.statistic / (nz * (nz + 1) / 4) - 1)


def test_complexity_of_a_long_trial_equals_the_full_svd():
    # 10^5 frames: M^T M is accumulated chunk by chunk; with D = 6 it is tiny, the SVD of all of M is the check
    rng = np.random.default_rng(6)
    W = (rng.standard_normal((100_000, 3)) @ rng.standard_normal((3, 6))).reshape(100_000, 1, 2, 3)
    value, details = complexity(W, details=True, chunk_size=4096)
    s = np.linalg.svd(W.reshape(100_000, 6), compute_uv=False)
    assert value[0] == pytest.approx(s.sum() / s.max(), rel=1e-10)
    assert len(details[0].singular_values) == 3  # the round-off ones are left out


class Recorder:
    """A lazy (T, N, F, L) source that records which frames each read asks for."""

    def __init__(self, W):
        self.W, self.shape, self.reads = W, W.shape, []

    def __getitem__(self, index):
        frames, _ = index
        self.reads.append(frames.stop - frames.start)
        return self.W[index]


def test_a_source_too_large_for_memory_is_read_in_chunks(monkeypatch):
    rng = np.random.default_rng(7)
    W = stack(held(500, F, L, 4, rng)[0], pure_gain(500, F, L, rng))
    expected = [m(W, channels=[1, 0]) for m in (complexity, gain_change, temporal_hold, shape_change)]
    monkeypatch.setattr(inputs, "CHANNEL_CACHE_BYTES", 0)
    source = Recorder(W)
    found = [m(source, channels=[1, 0], chunk_size=64) for m in (complexity, gain_change, temporal_hold, shape_change)]
    for a, b in zip(found, expected):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert max(source.reads) <= 64 + L - 1  # a chunk plus the temporal hold's look-ahead, never the whole trial


def test_tensors_arrays_and_half_precision_give_the_same_values():
    rng = np.random.default_rng(8)
    W = stack(held(200, F, L, 4, rng)[0], pure_gain(200, F, L, rng)).astype(np.float32)
    for measure in (complexity, gain_change, temporal_hold, shape_change):
        np.testing.assert_allclose(measure(torch.from_numpy(W)), measure(W), rtol=1e-12)
        np.testing.assert_allclose(measure(torch.from_numpy(W).bfloat16()), measure(W), rtol=0.05)
    assert complexity(W).dtype == np.float64


def test_channels_select_and_order_the_output():
    rng = np.random.default_rng(9)
    W = stack(linear(100, F, L, rng), switch(100, F, L, rng), pure_gain(100, F, L, rng))
    all_values = shape_change(W)
    np.testing.assert_array_equal(shape_change(W, channels=[2, 0]), all_values[[2, 0]])
    values, details = complexity(W, channels=[1], details=True)
    assert details[0].channel == 1 and values.tolist() == [complexity(W)[1]]


def test_details_hold_the_spectrum_the_time_course_the_per_lag_tests_and_the_aligned_mean():
    rng = np.random.default_rng(10)
    W = stack(held(300, F, L, 5, rng)[0])
    (c,), (cd,) = complexity(W, details=True)
    assert cd.singular_values.sum() / cd.singular_values[0] == pytest.approx(c)
    assert np.all(np.diff(cd.singular_values) <= 0)
    _, (gd,) = gain_change(W, details=True)
    assert gd.norm.shape == gd.entry_std.shape == gd.used.shape == (300,)
    _, (hd,) = temporal_hold(W, tau_max=10, details=True)
    assert hd.taus.tolist() == list(range(1, 11))
    for a in (hd.p_values, hd.effect_sizes, hd.median_differences, hd.mean_a0, hd.mean_a1, hd.n_pairs):
        assert a.shape == (10,)
    assert (hd.mean_a1[:3] > hd.mean_a0[:3]).all() and (hd.median_differences[:3] > 0).all()
    _, (sd,) = shape_change(W, details=True)
    assert sd.aligned_mean.shape == (F, L) and sd.shifts.shape == (300,) and sd.shifts.dtype == np.int64


# --- errors ------------------------------------------------------------------------------------------------------


@pytest.fixture
def W():
    return stack(linear(30, 4, 6, np.random.default_rng(0)))


@pytest.mark.parametrize("measure", [complexity, gain_change, temporal_hold, shape_change])
def test_bad_shapes_and_values_are_refused_with_what_is_wrong(measure, W):
    with pytest.raises(ValueError, match=r"W must be a dSTRF \(T, N, F, L\).*shape \(30, 4, 6\).*W\[:, None\]"):
        measure(W[:, 0])
    bad = W.copy()
    bad[7, 0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="W has nan at frame 7, channel 0"):
        measure(bad)
    bad[7, 0, 1, 2] = np.inf
    with pytest.raises(ValueError, match="W has inf at frame 7"):
        measure(bad)
    with pytest.raises(ValueError, match=r"channels \[5\] are not in W"):
        measure(W, channels=[5])
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1; got 0"):
        measure(W, chunk_size=0)
    with pytest.raises(TypeError, match="got list"):
        measure([[1.0]])
    with pytest.raises(ValueError, match="W is empty"):
        measure(W[:0])


def test_bad_parameters_are_refused_naming_the_value(W):
    with pytest.raises(ValueError, match="tau_max must be an integer >= 1; got 0"):
        temporal_hold(W, tau_max=0)
    with pytest.raises(ValueError, match="tau_max must be at most L - 1 = 5.*got 6"):
        temporal_hold(W, tau_max=6)
    for alpha in (0, 1, 1.5, -0.1, "0.05"):
        with pytest.raises(ValueError, match=f"alpha must be .* in \\(0, 1\\).*got {alpha!r}"):
            temporal_hold(W, alpha=alpha)
    with pytest.raises(ValueError, match=r"unknown gain-change variant 'frobenius'; valid: \["):
        gain_change(W, "frobenius")
    with pytest.raises(ValueError, match="max_shift must be an integer >= 0; got -1"):
        shape_change(W, max_shift=-1)
    with pytest.raises(ValueError, match="max_shift must be at most L - 1 = 5; got 6"):
        shape_change(W, max_shift=6)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1; got 0"):
        shape_change(W, max_iter=0)
    with pytest.raises(ValueError, match="only 1 lag"):
        temporal_hold(W[..., :1])
    with pytest.raises(TypeError, match="must be real"):
        complexity(torch.from_numpy(W).to(torch.complex64))


# --- dSTRFs of fitted models ------------------------------------------------------------------------------------


def fit(model, stimuli, responses, steps, lr):
    """Plain full-batch Adam on MSE, all trials at once."""
    x = torch.as_tensor(np.stack(stimuli))
    y = torch.as_tensor(np.stack(responses))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.mark.slow
def test_dstrfs_of_models_fitted_to_synthetic_neurons():
    from dstrf.data.synthetic import make_synthetic
    from dstrf.estimate import dstrf
    from dstrf.models import LNSTRF, DeepEncoder, LinearSTRF

    torch.manual_seed(0)
    data = make_synthetic(
        n_trials=4,
        n_frames=600,
        n_freqs=12,
        neurons=["linear", "ln", "temporal_hold"],
        lags=20,
        hold=5,
        snr=4.0,
        seed=0,
    )
    stimuli = [
        (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True) for x in (t.stimulus.numpy() for t in data.trials)
    ]
    responses = [t.response.numpy() for t in data.trials]
    linear = fit(LinearSTRF(12, 3, lags=20), stimuli, responses, 200, 1e-2)
    ln = fit(LNSTRF(12, 3, lags=20), stimuli, responses, 200, 1e-2)
    deep = fit(DeepEncoder(12, 3, hidden=16, kernel_size=3, dilations=(1, 2, 4)), stimuli, responses, 300, 3e-3)
    x = torch.as_tensor(stimuli[0])
    times = range(20, 420)
    # a linear model applies one filter: complexity 1, no gain change, no hold, no shape change
    W = dstrf(linear, x, times=times)
    np.testing.assert_allclose(complexity(W), 1.0, atol=1e-6)
    np.testing.assert_allclose(gain_change(W), 0.0, atol=1e-6)
    np.testing.assert_array_equal(temporal_hold(W), 0.0)
    np.testing.assert_allclose(shape_change(W), 1.0, atol=1e-6)
    # an LN model scales its one filter by the slope of its output nonlinearity: a pure gain change
    W = dstrf(ln, x, times=times)
    np.testing.assert_allclose(complexity(W), 1.0, atol=1e-4)
    assert (gain_change(W) > 0.01).all()
    np.testing.assert_allclose(shape_change(W), 1.0, atol=1e-4)
    # a deep network fitted to the nonlinear neurons switches between filters
    W = dstrf(deep, x, times=times, channels=[1, 2])
    assert (complexity(W) > 1.5).all()
