"""Building blocks shared by the encoders: input checks, argument coercion, the output nonlinearity.

Padding convention used by every convolutional encoder in :mod:`dstrf.models`: frames before the start of
a trial are filled with **zeros**. The stimuli are standardized per frequency band with training-set
statistics, so zero is the training mean of each band, a neutral "nothing unusual" input rather than
silence. Those frames are never data: they only let output frame t exist for t < receptive_field - 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import positive_int

__all__ = ["ParametricSoftplus", "check_dropout", "check_input", "int_tuple"]


def check_input(x: torch.Tensor, n_freqs: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(batch, n_freqs, time)`` tensor."""
    if x.dim() != 3 or x.shape[1] != n_freqs:
        raise ValueError(f"{name} expects input (batch, {n_freqs} freqs, time); got shape {tuple(x.shape)}")


def int_tuple(values: Iterable[object] | int, name: str, length: int | None = None) -> tuple[int, ...]:
    """A tuple of positive ints from a list, tuple or OmegaConf ``ListConfig`` (what Hydra passes)."""
    if isinstance(values, (int, str)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of positive integers; got {values!r}")
    out = tuple(positive_int(v, f"every entry of {name}") for v in values)
    if not out:
        raise ValueError(f"{name} must not be empty")
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries; got {list(out)}")
    return out


def check_dropout(p: float, name: str = "dropout") -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {p}")
    return p


class ParametricSoftplus(nn.Module):
    """Per-channel learnable smooth rectifier.

    ``y[b, n, t] = alpha_n * softplus(beta_n * z[b, n, t]) / beta_n`` with ``alpha_n, beta_n > 0``.

    ``alpha`` is the slope for large ``z`` (the gain), ``beta`` the sharpness of the knee (beta -> inf is
    ``alpha * relu(z)``). Both are stored as logarithms so that gradient steps can never make them
    non-positive; they start at 1, i.e. the plain softplus with unit slope.

    Input and output ``(B, N, T)``; ``y > 0`` always.
    """

    def __init__(self, n_outputs: int) -> None:
        super().__init__()
        self.n_outputs = positive_int(n_outputs, "n_outputs")
        self.log_alpha = nn.Parameter(torch.zeros(self.n_outputs))
        self.log_beta = nn.Parameter(torch.zeros(self.n_outputs))

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @property
    def beta(self) -> torch.Tensor:
        return self.log_beta.exp()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 3 or z.shape[1] != self.n_outputs:
            raise ValueError(
                f"ParametricSoftplus expects input (batch, {self.n_outputs} channels, time); got shape {tuple(z.shape)}"
            )
        alpha = self.alpha[:, None]
        beta = self.beta[:, None]
        return alpha * F.softplus(beta * z) / beta

    def extra_repr(self) -> str:
        return f"n_outputs={self.n_outputs}"
