import numpy as np
import pytest
import torch

from dstrf.metrics import PearsonR, cc_max, cc_norm, pearson_r, signal_power


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


def test_constant_prediction_scores_zero_not_nan():
    r = pearson_r(torch.zeros(2, 50), torch.randn(2, 50))
    assert torch.equal(r, torch.zeros(2, dtype=torch.float64))


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
