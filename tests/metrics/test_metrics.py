import warnings

import numpy as np
import pytest
import torch

from dstrf.metrics import (
    NoiseCeilingWarning,
    PearsonR,
    UndefinedCorrelationWarning,
    cc_max,
    cc_norm,
    pearson_r,
    signal_power,
)


def test_pearson_r_matches_numpy_per_channel_and_honours_the_mask():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 200, generator=g), torch.randn(3, 200, generator=g)
    target[1] += 2 * pred[1]
    mask = torch.arange(200) >= 50
    r = pearson_r(pred, target, mask)
    expected = [np.corrcoef(pred[n, 50:], target[n, 50:])[0, 1] for n in range(3)]
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-10)
    assert not np.allclose(pearson_r(pred, target).numpy(), expected)  # the mask changes the result


def test_streaming_metric_equals_pooled_correlation_independent_of_batching():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(4, 2, 100, generator=g), torch.randn(4, 2, 100, generator=g)
    target = target + pred
    lengths = torch.tensor([100, 80, 60, 90])
    mask = torch.arange(100)[None] < lengths[:, None]
    pooled_p = torch.cat([pred[b, :, : lengths[b]] for b in range(4)], dim=-1)
    pooled_y = torch.cat([target[b, :, : lengths[b]] for b in range(4)], dim=-1)
    expected = pearson_r(pooled_p, pooled_y)
    metric = PearsonR(2)
    metric.update(pred[:1], target[:1], mask[:1])
    metric.update(pred[1:], target[1:], mask[1:])
    torch.testing.assert_close(metric.compute(), expected)


def _messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_a_constant_target_or_prediction_is_nan_with_a_warning_naming_the_channel():
    """Not 0: a 0 would rank a dead or diverged model above one with a negative r."""
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(4, 60, generator=g), torch.randn(4, 60, generator=g)
    mask = torch.arange(60) >= 10
    target[3, 10:] = 2.5  # constant over the scored frames only: the warm-up frames do not count
    pred[1] = 0.0
    with pytest.warns(UndefinedCorrelationWarning) as record:
        r = pearson_r(pred, target, mask)
    assert _messages(record) == [
        "channel 3 of the target is constant over the 50 scored frames; its r is NaN",
        "channel 1 of the prediction is constant over the 50 scored frames; its r is NaN",
    ]
    assert torch.isnan(r[[1, 3]]).all()
    expected = [np.corrcoef(pred[n, 10:], target[n, 10:])[0, 1] for n in (0, 2)]
    np.testing.assert_allclose(r[[0, 2]].numpy(), expected, rtol=1e-10)


def test_non_finite_values_in_scored_frames_give_nan_and_in_masked_frames_do_not_matter():
    g = torch.Generator().manual_seed(4)
    pred, target = torch.randn(3, 40, generator=g), torch.randn(3, 40, generator=g)
    pred[0, 20] = float("nan")  # a diverged prediction
    target[2, 30] = float("inf")
    pred[1, :5] = float("nan")  # frames before the warm-up ends are not data
    mask = torch.arange(40) >= 5
    with pytest.warns(UndefinedCorrelationWarning) as record:
        r = pearson_r(pred, target, mask)
    assert _messages(record) == [
        "channel 0 of the prediction is not finite (NaN or inf) over the 35 scored frames; its r is NaN",
        "channel 2 of the target is not finite (NaN or inf) over the 35 scored frames; its r is NaN",
    ]
    assert torch.isnan(r[0]) and torch.isnan(r[2])
    assert r[1].item() == pytest.approx(np.corrcoef(pred[1, 5:], target[1, 5:])[0, 1], rel=1e-10)


def test_too_few_frames_and_many_channels_are_named_in_one_warning():
    with pytest.warns(
        UndefinedCorrelationWarning,
        match=r"^channel 0 has 1 scored frame \(a correlation needs at "
        r"least 2\); its r is NaN$",
    ):
        assert torch.isnan(pearson_r(torch.randn(1, 5), torch.randn(1, 5), torch.arange(5) == 2)).all()
    with pytest.warns(UndefinedCorrelationWarning) as record:
        r = pearson_r(torch.ones(12, 8), torch.randn(12, 8))
    assert _messages(record) == [
        "channels 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (12 in all) of the prediction are "
        "constant over the 8 scored frames; their r is NaN"
    ]
    assert torch.isnan(r).all()


def test_streaming_metric_detects_constant_channels_over_all_batches_and_merges_ranges():
    target = torch.randn(2, 2, 30, generator=torch.Generator().manual_seed(5))
    pred = torch.zeros(2, 2, 30)
    pred[0, 0], pred[1, 0] = 1.0, 2.0  # constant within each batch, not over both: r is defined
    pred[:, 1] = 7.0  # constant over everything
    metric = PearsonR(2)
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    with pytest.warns(
        UndefinedCorrelationWarning,
        match="^channel 1 of the prediction is constant over the 60 scored frames; its r is NaN$",
    ):
        r = metric.compute()
    expected = pearson_r(pred[:, 0].reshape(1, -1), target[:, 0].reshape(1, -1))
    torch.testing.assert_close(r[0], expected[0])
    assert torch.isnan(r[1])
    # the ranges reduce over processes like the sums (what DDP's sync does): min of mins, max of maxes
    a, b = PearsonR(2), PearsonR(2)
    a.update(pred[:1], target[:1])
    b.update(pred[1:], target[1:])
    a.merge_state(b)
    with pytest.warns(UndefinedCorrelationWarning):
        torch.testing.assert_close(a.compute(), r, equal_nan=True)


def test_data_far_from_zero_mean_are_scored_accurately_or_refused_never_rounding_noise():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 1000, generator=g, dtype=torch.float64)
    y = x + torch.randn(2, 1000, generator=g, dtype=torch.float64)
    reference = pearson_r(x, y)
    # a response of 5e7 +- 0.001: the uncentred sums lose it to cancellation; pearson_r centres first
    torch.testing.assert_close(pearson_r(x * 1e-3 + 1e8, y * 1e-3 + 5e7), reference, rtol=1e-5, atol=0)
    # the streaming metric keeps raw sums (they must add up over batches and ranks): it says so, with NaN
    metric = PearsonR(2)
    metric.update((x * 1e-3 + 1e8)[None], (y * 1e-3 + 5e7)[None])
    with pytest.warns(
        UndefinedCorrelationWarning,
        match="^channels 0, 1 of the target vary too little around their "
        "means over the 1000 scored frames for their variances to "
        "survive rounding; their r is NaN$",
    ):
        assert torch.isnan(metric.compute()).all()


@pytest.mark.filterwarnings("ignore::dstrf.metrics.NoiseCeilingWarning")  # 1 within sampling error: above, a little
def test_noise_ceiling_of_a_perfect_predictor_is_one_even_with_mean_rate_changes():
    g = torch.Generator().manual_seed(2)
    n_frames = 20000
    signal = torch.randn(3, n_frames, generator=g)
    signal[:, : n_frames // 2] += 4.0  # the first "stimulus" drives a much higher mean rate
    repeats = signal + torch.randn(5, 3, n_frames, generator=g) * torch.tensor([0.5, 1.0, 2.0])[:, None]
    torch.testing.assert_close(cc_norm(signal, repeats), torch.ones(3, dtype=torch.float64), atol=0.02, rtol=0)
    # SP estimates the signal variance; CC_max is the correlation of the signal with the mean of the repeats.
    torch.testing.assert_close(signal_power(repeats), signal.double().var(-1, unbiased=False), rtol=0.03, atol=0)
    expected_max = torch.stack([torch.corrcoef(torch.stack([signal[n], repeats.mean(0)[n]]))[0, 1] for n in range(3)])
    torch.testing.assert_close(cc_max(repeats), expected_max.double(), atol=0.01, rtol=0)
    # a worse predictor scores less than 1, and the ceiling orders the channels by noise
    assert (cc_norm(signal + 2 * torch.randn(3, n_frames, generator=g), repeats) < 0.8).all()
    assert cc_max(repeats)[0] > cc_max(repeats)[1] > cc_max(repeats)[2]


def test_noise_ceiling_input_errors():
    with pytest.raises(ValueError, match="at least 2 repeats"):
        signal_power(torch.randn(1, 2, 10))
    with pytest.raises(ValueError, match=r"\(repeats, channels, time\)"):
        cc_norm(torch.randn(2, 10), torch.randn(2, 10))
    with pytest.raises(ValueError, match=r"pred must be \(channels, time\) = \(2, 10\)"):
        cc_norm(torch.randn(3, 10), torch.randn(4, 2, 10))


def test_undefined_noise_ceilings_are_nan_with_the_reason():
    g = torch.Generator().manual_seed(7)
    signal = torch.randn(5, 300, generator=g, dtype=torch.float64)
    repeats = signal + 0.5 * torch.randn(4, 5, 300, generator=g, dtype=torch.float64)
    noise = torch.randn(2, 300, generator=g, dtype=torch.float64)
    repeats[:, 2] = torch.cat([noise, -noise])  # repeats that cancel: Var(sum) = 0, so SP < 0
    repeats[:, 3] = 1.5  # a silent channel
    repeats[1, 4, 17] = float("nan")
    pred = signal.clone()
    pred[0, 3] = float("inf")
    pred[1] = 0.25
    with pytest.warns(UndefinedCorrelationWarning) as record:
        value = cc_norm(pred, repeats)
    sp = float(signal_power(repeats)[2])
    assert sp <= 0
    assert _messages(record) == [
        "channel 0 of the prediction is not finite (NaN or inf) over the 300 frames; its cc_norm is NaN",
        "channel 4 of the repeats is not finite (NaN or inf) over the 300 frames; its cc_norm is NaN",
        "channel 3 has a constant mean response over the 300 frames; its cc_norm is NaN",
        f"channel 2 has no measurable stimulus-locked signal (signal power SP = {sp:.3g} <= 0 from 4 repeats); "
        "its cc_norm is NaN",
        "channel 1 of the prediction is constant over the 300 frames; its cc_norm is NaN",
    ]
    assert torch.isnan(value).all()
    with pytest.warns(UndefinedCorrelationWarning) as record:
        ceiling = cc_max(repeats)
    assert [m.split(";")[0] for m in _messages(record)] == [
        "channel 4 of the repeats is not finite (NaN or inf) over the 300 frames",
        "channel 3 has a constant mean response over the 300 frames",
        f"channel 2 has no measurable stimulus-locked signal (signal power SP = {sp:.3g} <= 0 from 4 repeats)",
    ]
    assert torch.isnan(ceiling[2:]).all() and (torch.isfinite(ceiling[:2]) & (ceiling[:2] < 1)).all()


def test_a_noise_ceiling_above_one_is_kept_and_named():
    """The mean of the repeats predicts itself: cc_norm(ybar) = 1 / cc_max > 1, which must not pass silently."""
    g = torch.Generator().manual_seed(8)
    repeats = torch.randn(1, 2, 400, generator=g, dtype=torch.float64) + torch.randn(
        4, 2, 400, generator=g, dtype=torch.float64
    )
    ceiling = cc_max(repeats)
    with pytest.warns(NoiseCeilingWarning) as record:
        value = cc_norm(repeats.mean(0), repeats)
    torch.testing.assert_close(value, 1 / ceiling)
    assert (value > 1).all()
    sp = signal_power(repeats)
    assert _messages(record)[0].startswith(
        f"cc_norm exceeds 1 for channel 0: {float(value[0]):.3f} (SP = "
        f"{float(sp[0]):.3g}), channel 1: {float(value[1]):.3f} (SP = "
        f"{float(sp[1]):.3g}). It is an estimate"
    )


def test_identical_repeats_give_a_ceiling_of_exactly_one_without_warnings():
    # seed 3: the float64 arithmetic gives 1 + 2.2e-16 for channels 0 and 2 of cc_max and channel 1 of cc_norm
    response = torch.randn(1, 3, 200, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    repeats = response.expand(5, 3, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rounding of an exact 1 is neither above 1 nor undefined
        ceiling, value = cc_max(repeats), cc_norm(response[0], repeats)
    for result in (ceiling, value):
        torch.testing.assert_close(result, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
        assert (result <= 1).all()
