"""Jackknife aggregation of dSTRFs over the M models of one test fold (each trained without one more trial).

With the M replicates ``W_j`` of a bin (t, n, f, k):

    mean = (1/M) sum_j W_j
    SE   = sqrt((M-1)/M * sum_j (W_j - mean)^2)                      (the jackknife standard error)
    mask = not (Q_q(W) > 0 and Q_{1-q}(W) < 0)                       (the models agree in sign)

where ``Q_p`` is the p-quantile across the M models (linear interpolation, as ``numpy.quantile``). A bin
whose replicates straddle zero is not significant and is zeroed in the masked mean; q = 0.95 reproduces
Keshishian et al.'s "95% jackknife significance".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..validation import positive_int
from .checks import check_model, check_stimulus
from .jacobian import _select, dstrf

__all__ = ["JackknifeDSTRF", "jackknife_dstrf", "jackknife_se", "sign_consistency_mask", "quantile"]


def jackknife_se(replicates: torch.Tensor) -> torch.Tensor:
    """``sqrt((M-1)/M * sum_j (theta_j - mean)^2)`` over dim 0 of ``(M, ...)``; NaN where M == 1."""
    m = replicates.shape[0]
    if m < 2:
        return torch.full(replicates.shape[1:], float("nan"), dtype=replicates.dtype)
    deviation = replicates - replicates.mean(0)
    return torch.sqrt((m - 1) / m * (deviation**2).sum(0))


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile over dim 0 with linear interpolation (``numpy.quantile``'s default), for any size
    (``torch.quantile`` refuses large inputs)."""
    ordered = values.sort(dim=0).values
    position = q * (values.shape[0] - 1)
    below, fraction = int(np.floor(position)), position - np.floor(position)
    above = min(below + 1, values.shape[0] - 1)
    return ordered[below] + fraction * (ordered[above] - ordered[below])


def sign_consistency_mask(replicates: torch.Tensor, q: float = 0.95) -> torch.Tensor:
    """True where the replicates ``(M, ...)`` agree in sign at quantile q (see the module docstring)."""
    if not 0.5 < q < 1:
        raise ValueError(f"q must be in (0.5, 1) (e.g. 0.95 for 95% jackknife significance); got {q}")
    return ~((quantile(replicates, q) > 0) & (quantile(replicates, 1 - q) < 0))


@dataclass
class JackknifeDSTRF:
    """``mean``, ``se`` ``(T, N, F, L)`` and the boolean ``mask``; ``masked`` = mean where significant, else 0."""

    mean: torch.Tensor
    se: torch.Tensor
    mask: torch.Tensor
    n_models: int
    q: float

    @property
    def masked(self) -> torch.Tensor:
        return self.mean * self.mask


def jackknife_dstrf(
    models: Sequence[nn.Module],
    x: torch.Tensor | np.ndarray,
    lags: int | None = None,
    q: float = 0.95,
    channels: Sequence[int] | None = None,
    times: Sequence[int] | slice | None = None,
    chunk_size: int = 256,
    dtype: torch.dtype = torch.float32,
) -> JackknifeDSTRF:
    """Mean, jackknife SE and sign-consistency mask of the dSTRFs of ``models`` on one stimulus ``x`` (F, T).

    The models are the jackknife replicates of one test fold, and ``x`` a trial none of them trained on. The
    work goes chunk by chunk over time, with every model evaluated on the chunk, so memory holds M chunks,
    never M full dSTRFs. Other arguments as in :func:`dstrf.estimate.dstrf`.
    """
    models = list(models)
    if not models:
        raise ValueError("jackknife_dstrf needs at least one model")
    chunk_size = positive_int(chunk_size, "chunk_size", "output frames")
    lag_counts: dict[int, int] = {}
    for k, model in enumerate(models):  # every model checked (finite weights too) before any is computed
        try:
            lag_counts.setdefault(check_model(model, lags)[1], k)
        except ValueError as error:
            raise ValueError(f"models[{k}] (of {len(models)}): {error}") from error
    if len(lag_counts) != 1:
        raise ValueError(f"the models give different numbers of lags {sorted(lag_counts)}; pass lags= explicitly")
    lags = next(iter(lag_counts))
    n_frames = check_stimulus(models[0], x).shape[-1]
    times_ = _select(times, n_frames, "times")
    if not len(times_):
        raise ValueError("no output frames selected (times is empty)")
    mean = se = mask = None
    for start in range(0, len(times_), chunk_size):
        rows = slice(start, start + chunk_size)
        stack = torch.stack(
            [dstrf(m, x, lags=lags, channels=channels, times=times_[rows], dtype=torch.float64) for m in models]
        )
        if mean is None or se is None or mask is None:  # the first chunk (sets all three at once)
            shape = (len(times_), *stack.shape[2:])
            mean, se = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
            mask = torch.zeros(shape, dtype=torch.bool)
        mean[rows] = stack.mean(0).to(dtype)
        se[rows] = jackknife_se(stack).to(dtype)
        mask[rows] = sign_consistency_mask(stack, q)
    assert mean is not None and se is not None and mask is not None  # times_ is not empty: one chunk at least
    return JackknifeDSTRF(mean, se, mask, len(models), q)
