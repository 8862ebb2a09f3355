import numpy as np
import pytest
import torch

from dstrf.estimate import dstrf, jackknife_dstrf, jackknife_se, quantile, sign_consistency_mask
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
