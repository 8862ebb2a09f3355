"""Per-channel Pearson correlation over time, with frames masked out (padding, causal warm-up)."""

from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["pearson_r", "PearsonR"]


def _expand_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A float mask broadcast to ``like`` ``(..., N, T)``; accepts ``(..., T)`` or ``(..., N, T)``."""
    if mask is None:
        return torch.ones_like(like)
    mask = mask.to(like.dtype)
    if mask.ndim == like.ndim - 1:
        mask = mask.unsqueeze(-2)
    return mask.expand_as(like)


def _r_from_moments(n, sx, sy, sxx, syy, sxy) -> torch.Tensor:
    # r = cov / sqrt(var_x var_y) from running sums; a constant prediction or target has no correlation and is
    # reported as 0 (not NaN) so that model selection treats it as uninformative instead of crashing.
    cov = sxy - sx * sy / n
    var_x = sxx - sx * sx / n
    var_y = syy - sy * sy / n
    denom = torch.sqrt(var_x.clamp_min(0) * var_y.clamp_min(0))
    ok = (denom > 0) & (n > 1)
    return torch.where(ok, cov / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(cov))


def pearson_r(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson r per channel between prediction and target over all unmasked frames.

    ``pred``, ``target``: ``(N, T)`` or ``(B, N, T)`` (frames of all batch rows are pooled); ``mask``: ``(T,)``,
    ``(B, T)`` or the full shape, true where a frame counts. Returns ``(N,)`` float64:
    ``r_n = sum (p - mean p)(y - mean y) / sqrt(sum (p - mean p)^2 sum (y - mean y)^2)``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, y = pred.double(), target.double()
    w = _expand_mask(mask, p)
    dims = tuple(i for i in range(p.ndim) if i != p.ndim - 2)
    return _r_from_moments(
        w.sum(dims), (w * p).sum(dims), (w * y).sum(dims), (w * p * p).sum(dims), (w * y * y).sum(dims), (w * p * y).sum(dims)
    )


class PearsonR(Metric):
    """Streaming per-channel Pearson r over masked frames of many batches (sums kept in float64).

    ``update(pred, target, mask)`` with ``pred``, ``target`` ``(B, N, T)`` and ``mask`` ``(B, T)``;
    ``compute()`` returns ``(N,)``. Accumulating moments (rather than averaging per-batch r) makes the result
    the correlation over all frames, independent of how trials were batched.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, n_channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("n", "sx", "sy", "sxx", "syy", "sxy"):
            self.add_state(name, default=torch.zeros(n_channels, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(f"pred and target must both be (batch, channels, time); got {tuple(pred.shape)} and {tuple(target.shape)}")
        p, y = pred.detach().double(), target.detach().double()
        w = _expand_mask(mask, p)
        self.n += w.sum((0, 2))
        self.sx += (w * p).sum((0, 2))
        self.sy += (w * y).sum((0, 2))
        self.sxx += (w * p * p).sum((0, 2))
        self.syy += (w * y * y).sum((0, 2))
        self.sxy += (w * p * y).sum((0, 2))

    def compute(self) -> torch.Tensor:
        return _r_from_moments(self.n, self.sx, self.sy, self.sxx, self.syy, self.sxy)
