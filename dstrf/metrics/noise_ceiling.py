"""Noise ceilings from repeated presentations: signal power and normalised correlation.

With R repeats ``y_r(t)`` of one channel, the Sahani-Linden signal power is

    SP = (Var(sum_r y_r) - sum_r Var(y_r)) / (R (R - 1)),

an unbiased estimate of the variance of the stimulus-locked part of the response. Schoppe et al. (2016):

    CC_norm = Cov(ybar, yhat) / sqrt(Var(yhat) SP),      CC_max = sqrt(SP / Var(ybar)),

with ``ybar`` the mean over repeats. All variances are taken over the same frames (concatenate trials along
time first): a perfect predictor then scores 1 within sampling error even when mean rates differ between
stimuli, because those differences enter SP and the covariance alike.

Where a value is undefined it is NaN, with an :class:`~dstrf.metrics.UndefinedCorrelationWarning` naming the
channel and the reason (non-finite input, no measurable signal power, a constant prediction or mean
response); never 0. CC_max cannot exceed 1 (``Var(ybar) <= mean_r Var(y_r)``); CC_norm can, by sampling
error of SP (few repeats, little signal) or by a prediction that fits the repeats' noise (e.g. ``ybar``
itself scores ``1 / CC_max``): such values are kept and a :class:`NoiseCeilingWarning` names them.
"""

from __future__ import annotations

import warnings

import torch

from .correlation import warn_channels

__all__ = ["signal_power", "cc_norm", "cc_max", "NoiseCeilingWarning"]

#: cc_norm / cc_max above 1 by at most this much are rounding of an exact 1 (identical repeats) and are set to 1.
_ROUNDING = 1e-9


class NoiseCeilingWarning(RuntimeWarning):
    """A normalised correlation above 1 (kept; the message names the channels and says why it happens)."""


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


def _nonfinite(x: torch.Tensor) -> torch.Tensor:
    """Per channel ``(N,)``: whether ``x`` ``(..., N, T)`` has a NaN or inf anywhere."""
    bad = ~torch.isfinite(x)
    return bad.reshape(-1, *bad.shape[-2:]).any(0).any(-1)


def _constant(x: torch.Tensor) -> torch.Tensor:
    """Per channel ``(N,)``: whether ``x`` ``(N, T)`` takes one value only (exactly; fewer than 2 frames too)."""
    if x.shape[-1] == 0:
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    return x.amax(-1) <= x.amin(-1)


def _flag(flags: torch.Tensor, taken: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """The channels newly flagged (not under an earlier reason) and the updated set of flagged ones."""
    new = flags & ~taken
    return torch.nonzero(new).reshape(-1).tolist(), taken | new


def _undefined_signal(
    y: torch.Tensor, sp: torch.Tensor, result: str, taken: torch.Tensor | None = None
) -> torch.Tensor:
    """Flag (with warnings) the channels whose repeats are non-finite, whose mean response is constant or whose
    signal power is not positive: ``result`` (``"cc_max"``, ``"cc_norm"``) is undefined there. Channels in
    ``taken`` (already flagged for another reason) are not named again; the result includes them."""
    n_repeats, n_frames = y.shape[0], y.shape[-1]
    if taken is None:
        taken = torch.zeros(y.shape[1], dtype=torch.bool, device=y.device)
    idx, taken = _flag(_nonfinite(y), taken)
    warn_channels(
        idx,
        f"of the repeats is not finite (NaN or inf) over the {n_frames} frames",
        f"of the repeats are not finite (NaN or inf) over the {n_frames} frames",
        result,
        stacklevel=4,
    )
    idx, taken = _flag(_constant(y.mean(0)), taken)
    warn_channels(
        idx,
        f"has a constant mean response over the {n_frames} frames",
        f"have a constant mean response over the {n_frames} frames",
        result,
        stacklevel=4,
    )
    idx, taken = _flag(~(sp > 0), taken)
    sp_text = f"SP = {float(sp[idx[0]]):.3g}" if len(idx) == 1 else "SP"
    warn_channels(
        idx,
        f"has no measurable stimulus-locked signal (signal power {sp_text} <= 0 from {n_repeats} repeats)",
        f"have no measurable stimulus-locked signal (signal power {sp_text} <= 0 from {n_repeats} repeats)",
        result,
        stacklevel=4,
    )
    return taken


def _above_one(value: torch.Tensor, sp: torch.Tensor, n_repeats: int, result: str) -> torch.Tensor:
    """``value`` with rounding above 1 set to 1, and a :class:`NoiseCeilingWarning` for what is truly above."""
    value = torch.where((value > 1) & (value <= 1 + _ROUNDING), torch.ones_like(value), value)
    idx = torch.nonzero(value > 1).reshape(-1).tolist()
    if idx:
        shown = ", ".join(f"channel {i}: {float(value[i]):.3f} (SP = {float(sp[i]):.3g})" for i in idx[:10])
        more = f", ... ({len(idx)} in all)" if len(idx) > 10 else ""
        warnings.warn(
            f"{result} exceeds 1 for {shown}{more}. It is an estimate: the sampling error of the signal "
            f"power SP (from {n_repeats} repeats) lets a near-perfect prediction pass 1 a little; far above "
            "1, the signal is too weak for that many repeats, or the prediction fits the repeats' noise "
            "(was it fitted to these very repeats?). The values are kept; treat them as unreliable",
            NoiseCeilingWarning,
            stacklevel=3,
        )
    return value


def cc_max(repeats: torch.Tensor) -> torch.Tensor:
    """The highest correlation with ``ybar`` a noise-free predictor can reach, ``(N,)``; at most 1.

    NaN (with a warning naming the channel) where the repeats are not finite, the mean response is constant
    or SP <= 0.
    """
    y = _check_repeats(repeats)
    sp = signal_power(y)
    var_mean = y.mean(0).var(dim=-1, unbiased=False)
    undefined = _undefined_signal(y, sp, "cc_max")
    value = torch.sqrt(torch.where(undefined, torch.ones_like(sp), sp / var_mean))
    return _above_one(torch.where(undefined, torch.full_like(sp, float("nan")), value), sp, y.shape[0], "cc_max")


def cc_norm(pred: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    """Noise-ceiling-normalised correlation per channel. ``pred`` ``(N, T)``, ``repeats`` ``(R, N, T)`` -> ``(N,)``.

    NaN (with an :class:`~dstrf.metrics.UndefinedCorrelationWarning` naming the channel and the reason) where
    the prediction or the repeats are not finite, the mean response is constant, the signal power is not
    positive (no measurable stimulus-locked signal) or the prediction is constant. Values above 1 are kept,
    with a :class:`NoiseCeilingWarning` (see the module docstring).
    """
    y = _check_repeats(repeats)
    p = pred.double().to(y.device)
    if p.shape != y.shape[1:]:
        raise ValueError(f"pred must be (channels, time) = {tuple(y.shape[1:])} to match repeats; got {tuple(p.shape)}")
    ybar = y.mean(0)
    sp = signal_power(y)
    idx, undefined = _flag(_nonfinite(p), torch.zeros(p.shape[0], dtype=torch.bool, device=p.device))
    warn_channels(
        idx,
        f"of the prediction is not finite (NaN or inf) over the {p.shape[-1]} frames",
        f"of the prediction are not finite (NaN or inf) over the {p.shape[-1]} frames",
        "cc_norm",
    )
    undefined = _undefined_signal(y, sp, "cc_norm", undefined)
    idx, undefined = _flag(_constant(p), undefined)
    warn_channels(
        idx,
        f"of the prediction is constant over the {p.shape[-1]} frames",
        f"of the prediction are constant over the {p.shape[-1]} frames",
        "cc_norm",
    )
    cov = ((p - p.mean(-1, keepdim=True)) * (ybar - ybar.mean(-1, keepdim=True))).mean(-1)
    denom = torch.sqrt(torch.where(undefined, torch.ones_like(sp), p.var(dim=-1, unbiased=False) * sp))
    value = torch.where(undefined, torch.full_like(cov, float("nan")), cov / denom)
    return _above_one(value, sp, y.shape[0], "cc_norm")
