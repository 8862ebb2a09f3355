"""Noise ceilings from repeated presentations: signal power and normalised correlation.

With R repeats ``y_r(t)`` of one channel, the Sahani-Linden signal power is

    SP = (Var(sum_r y_r) - sum_r Var(y_r)) / (R (R - 1)),

an unbiased estimate of the variance of the stimulus-locked part of the response. Schoppe et al. (2016):

    CC_norm = Cov(ybar, yhat) / sqrt(Var(yhat) SP),      CC_max = sqrt(SP / Var(ybar)),

with ``ybar`` the mean over repeats. All variances are taken over the same frames (concatenate trials along
time first): a perfect predictor then scores 1 within sampling error even when mean rates differ between
stimuli, because those differences enter SP and the covariance alike.
"""

from __future__ import annotations

import torch

__all__ = ["signal_power", "cc_norm", "cc_max"]


def _check_repeats(repeats: torch.Tensor) -> torch.Tensor:
    if repeats.ndim != 3:
        raise ValueError(f"repeats must be (repeats, channels, time); got shape {tuple(repeats.shape)}")
    if repeats.shape[0] < 2:
        raise ValueError(f"a noise ceiling needs at least 2 repeats; got {repeats.shape[0]}")
    return repeats.double()


def signal_power(repeats: torch.Tensor) -> torch.Tensor:
    """Sahani-Linden signal power per channel. ``repeats``: ``(R, N, T)`` -> ``(N,)``; may be negative by noise."""
    y = _check_repeats(repeats)
    n_repeats = y.shape[0]
    var_of_sum = y.sum(0).var(dim=-1, unbiased=False)
    sum_of_var = y.var(dim=-1, unbiased=False).sum(0)
    return (var_of_sum - sum_of_var) / (n_repeats * (n_repeats - 1))


def cc_max(repeats: torch.Tensor) -> torch.Tensor:
    """The highest correlation with ``ybar`` a noise-free predictor can reach, ``(N,)``; NaN where SP <= 0."""
    y = _check_repeats(repeats)
    sp = signal_power(y)
    var_mean = y.mean(0).var(dim=-1, unbiased=False)
    return torch.where(sp > 0, torch.sqrt(sp.clamp_min(0) / var_mean), torch.full_like(sp, float("nan")))


def cc_norm(pred: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    """Noise-ceiling-normalised correlation per channel. ``pred`` ``(N, T)``, ``repeats`` ``(R, N, T)`` -> ``(N,)``.

    NaN where the signal power is not positive (no measurable stimulus-locked signal) or the prediction is
    constant.
    """
    y = _check_repeats(repeats)
    p = pred.double()
    if p.shape != y.shape[1:]:
        raise ValueError(f"pred must be (channels, time) = {tuple(y.shape[1:])} to match repeats; got {tuple(p.shape)}")
    ybar = y.mean(0)
    cov = ((p - p.mean(-1, keepdim=True)) * (ybar - ybar.mean(-1, keepdim=True))).mean(-1)
    denom = torch.sqrt(p.var(dim=-1, unbiased=False) * signal_power(y))
    return torch.where(denom > 0, cov / denom, torch.full_like(cov, float("nan")))
