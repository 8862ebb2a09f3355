"""Per-channel Pearson correlation over time, with frames masked out (padding, causal warm-up).

Where r is undefined it is NaN, never 0, and a :class:`UndefinedCorrelationWarning` says which channel and
why: fewer than 2 scored frames, a non-finite prediction or target (a diverged fit), or a constant target or
prediction (zero variance). A 0 would be indistinguishable from "no correlation" and would let a diverged fit
win model selection over one with a negative r; NaN propagates into every mean that includes the channel, and
callers that want to skip such channels must do so explicitly (``nanmean``) and say so.
"""

from __future__ import annotations

import warnings

import torch
from torchmetrics import Metric

__all__ = ["pearson_r", "PearsonR", "UndefinedCorrelationWarning"]


#: Variances below this fraction of the sum of squares they were computed from are rounding noise (see
#: _r_from_moments): the cancellation error of float64 sums is ~1e-15 of the sum of squares.
_ROUNDING = 1e-12


class UndefinedCorrelationWarning(RuntimeWarning):
    """Some channel's correlation is undefined and was returned as NaN (the message says which and why)."""


def _expand_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A bool mask broadcast to ``like`` ``(..., N, T)``; accepts ``(..., T)`` or ``(..., N, T)``."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    mask = mask.to(like.device) != 0
    if mask.ndim == like.ndim - 1:
        mask = mask.unsqueeze(-2)
    return mask.expand_as(like)


def _moments(p: torch.Tensor, y: torch.Tensor, w: torch.Tensor, dims: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Per-channel sums over ``dims`` of the scored frames (``w`` true), and the range of ``p`` and ``y`` there.

    Frames that do not count are set to 0 (sums) or +-inf (range) *before* any arithmetic, so a NaN in padding
    or warm-up (not data) cannot reach the result, while a NaN in a scored frame does. The ranges detect a
    constant series exactly; ``sxx - sx^2 / n`` alone leaves a rounding residue of a few ulp of ``sxx``.
    """
    zero = torch.zeros((), dtype=p.dtype, device=p.device)
    pw, yw = torch.where(w, p, zero), torch.where(w, y, zero)
    return {
        "n": w.to(p.dtype).sum(dims),
        "sx": pw.sum(dims),
        "sy": yw.sum(dims),
        "sxx": (pw * pw).sum(dims),
        "syy": (yw * yw).sum(dims),
        "sxy": (pw * yw).sum(dims),
        "min_x": _extreme(p, w, dims, "min"),
        "max_x": _extreme(p, w, dims, "max"),
        "min_y": _extreme(y, w, dims, "min"),
        "max_y": _extreme(y, w, dims, "max"),
    }


def _extreme(x: torch.Tensor, w: torch.Tensor, dims: tuple[int, ...], which: str) -> torch.Tensor:
    """Min or max of ``x`` over ``dims`` among the scored frames; +inf (min) / -inf (max) where there are none."""
    start = float("inf") if which == "min" else float("-inf")
    if any(x.shape[d] == 0 for d in dims):  # amin/amax refuse empty reductions
        kept = [s for d, s in enumerate(x.shape) if d not in dims]
        return torch.full(kept, start, dtype=x.dtype, device=x.device)
    filled = torch.where(w, x, torch.full((), start, dtype=x.dtype, device=x.device))
    return filled.amin(dims) if which == "min" else filled.amax(dims)


def _channels(idx: list[int]) -> str:
    """``"channel 3"``, ``"channels 0, 2, 5"``, or the first ten and a count."""
    if len(idx) == 1:
        return f"channel {idx[0]}"
    shown = ", ".join(str(i) for i in idx[:10])
    return f"channels {shown}" + (f", ... ({len(idx)} in all)" if len(idx) > 10 else "")


def warn_channels(idx: list[int], what: str, plural: str, result: str, stacklevel: int = 3) -> None:
    """One :class:`UndefinedCorrelationWarning` naming the channels ``idx``: ``"channel 3 <what>; its <result>
    is NaN"`` (``<plural>`` and "their" for several channels). Nothing when ``idx`` is empty."""
    if not idx:
        return
    single = len(idx) == 1
    warnings.warn(
        f"{_channels(idx)} {what if single else plural}; {'its' if single else 'their'} {result} is NaN",
        UndefinedCorrelationWarning,
        stacklevel=stacklevel,
    )


def _frames(n: torch.Tensor, idx: list[int]) -> str:
    """``"400 scored frames"``, ``"1 scored frame"`` or, when the channels differ, ``"380-400 scored frames"``."""
    counts = sorted({int(n[i]) for i in idx})
    if len(counts) > 1:
        return f"{counts[0]}-{counts[-1]} scored frames"
    return f"{counts[0]} scored frame" + ("" if counts[0] == 1 else "s")


def _r_from_moments(m: dict[str, torch.Tensor], stacklevel: int = 3) -> torch.Tensor:
    """``r = cov / sqrt(var_x var_y)`` per channel from the running sums of :func:`_moments`; NaN (with one
    warning per reason) where r is undefined. ``x`` is the prediction, ``y`` the target."""
    n, sx, sy, sxx, syy, sxy = (m[k] for k in ("n", "sx", "sy", "sxx", "syy", "sxy"))
    cov = sxy - sx * sy / n
    var_x = sxx - sx * sx / n
    var_y = syy - sy * sy / n
    r = cov / torch.sqrt(var_x * var_y)
    # Why r is undefined, checked in this order (each channel is named once, under its first reason).
    few = n < 2
    bad_x = ~few & ~(torch.isfinite(sx) & torch.isfinite(sxx))
    bad_y = ~few & ~bad_x & ~(torch.isfinite(sy) & torch.isfinite(syy))
    ok = ~(few | bad_x | bad_y)
    const_y = ok & (m["max_y"] <= m["min_y"])
    const_x = ok & ~const_y & (m["max_x"] <= m["min_x"])
    ok = ok & ~const_x & ~const_y
    # sxx - sx^2 / n cancels: its rounding error is a few ulp of sxx. A series that is not constant but whose
    # variance is below _ROUNDING * sxx (it varies by less than ~1e-6 of its root mean square) has an r
    # that is mostly rounding noise. pearson_r centres first (sxx ~ variance), so this can bite only the
    # streaming PearsonR on data far from zero mean.
    lost_y = ok & ~(var_y > _ROUNDING * syy)
    lost_x = ok & ~lost_y & ~(var_x > _ROUNDING * sxx)
    ok = ok & ~lost_x & ~lost_y
    r = torch.where(ok, r, torch.full_like(r, float("nan")))
    reasons = [
        (few, "has {n} (a correlation needs at least 2)", "have {n} (a correlation needs at least 2)"),
        (
            bad_x,
            "of the prediction is not finite (NaN or inf) over the {n}",
            "of the prediction are not finite (NaN or inf) over the {n}",
        ),
        (
            bad_y,
            "of the target is not finite (NaN or inf) over the {n}",
            "of the target are not finite (NaN or inf) over the {n}",
        ),
        (const_y, "of the target is constant over the {n}", "of the target are constant over the {n}"),
        (const_x, "of the prediction is constant over the {n}", "of the prediction are constant over the {n}"),
        (
            lost_y,
            "of the target varies too little around its mean over the {n} for its variance to survive rounding",
            "of the target vary too little around their means over the {n} for their variances to survive rounding",
        ),
        (
            lost_x,
            "of the prediction varies too little around its mean over the {n} for its variance to survive rounding",
            "of the prediction vary too little around their means over the {n} for their variances to survive rounding",
        ),
    ]
    for flags, what, plural in reasons:
        idx = torch.nonzero(flags.reshape(-1)).reshape(-1).tolist()
        if idx:
            frames = _frames(n.reshape(-1), idx)
            warn_channels(idx, what.format(n=frames), plural.format(n=frames), "r", stacklevel=stacklevel + 1)
    return r


def pearson_r(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson r per channel between prediction and target over all unmasked frames.

    ``pred``, ``target``: ``(N, T)`` or ``(B, N, T)`` (frames of all batch rows are pooled); ``mask``: ``(T,)``,
    ``(B, T)`` or the full shape, true where a frame counts. Returns ``(N,)`` float64:
    ``r_n = sum (p - mean p)(y - mean y) / sqrt(sum (p - mean p)^2 sum (y - mean y)^2)``.

    NaN, with an :class:`UndefinedCorrelationWarning` naming the channel and the reason, where r is undefined:
    fewer than 2 scored frames, a non-finite value in a scored frame, or a constant prediction or target.
    Values in frames that do not count never matter, NaN included.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, y = pred.double(), target.double().to(pred.device)
    w = _expand_mask(mask, p)
    dims = tuple(i for i in range(p.ndim) if i != p.ndim - 2)
    # Centre on the mean of the scored frames first: the sums then hold no large common offset to cancel, so
    # data in raw units (a response of 50 +- 0.01) are scored as accurately as standardized data.
    return _r_from_moments(_moments(_centred(p, w, dims), _centred(y, w, dims), w, dims))


def _centred(x: torch.Tensor, w: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x`` minus its per-channel mean over the scored frames (0 where a channel has none)."""
    total = torch.where(w, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dims, keepdim=True)
    return x - total / w.sum(dims, keepdim=True).clamp_min(1)


class PearsonR(Metric):
    """Streaming per-channel Pearson r over masked frames of many batches (sums kept in float64).

    ``update(pred, target, mask)`` with ``pred``, ``target`` ``(B, N, T)`` and ``mask`` ``(B, T)``;
    ``compute()`` returns ``(N,)``. Accumulating moments (rather than averaging per-batch r) makes the result
    the correlation over all frames, independent of how trials were batched. NaN where r is undefined, with a
    warning, as :func:`pearson_r`; the per-channel ranges kept besides the sums detect constant series exactly
    (they reduce over DDP ranks by min/max as the sums do by sum).
    """

    full_state_update = False
    higher_is_better = True
    min_x: torch.Tensor  # states (add_state in __init__)
    max_x: torch.Tensor
    min_y: torch.Tensor
    max_y: torch.Tensor

    def __init__(self, n_channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("n", "sx", "sy", "sxx", "syy", "sxy"):
            self.add_state(name, default=torch.zeros(n_channels, dtype=torch.float64), dist_reduce_fx="sum")
        for name, start, reduce in (
            ("min_x", float("inf"), "min"),
            ("max_x", float("-inf"), "max"),
            ("min_y", float("inf"), "min"),
            ("max_y", float("-inf"), "max"),
        ):
            self.add_state(name, default=torch.full((n_channels,), start, dtype=torch.float64), dist_reduce_fx=reduce)

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(
                f"pred and target must both be (batch, channels, time); got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        p, y = pred.detach().double(), target.detach().double()
        m = _moments(p, y, _expand_mask(mask, p), (0, 2))
        for name in ("n", "sx", "sy", "sxx", "syy", "sxy"):
            setattr(self, name, getattr(self, name) + m[name])
        self.min_x, self.min_y = torch.minimum(self.min_x, m["min_x"]), torch.minimum(self.min_y, m["min_y"])
        self.max_x, self.max_y = torch.maximum(self.max_x, m["max_x"]), torch.maximum(self.max_y, m["max_y"])

    def compute(self) -> torch.Tensor:
        names = ("n", "sx", "sy", "sxx", "syy", "sxy", "min_x", "max_x", "min_y", "max_y")
        return _r_from_moments({k: getattr(self, k) for k in names})
