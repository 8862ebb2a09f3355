"""Linear and linear-nonlinear (LN) spectrotemporal receptive field models.

Frames before the start of a trial are zeros, i.e. the training mean of the per-band standardized
stimulus (see :mod:`dstrf.models.layers`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import positive_int
from .layers import ParametricSoftplus, check_input
from .protocol import EncoderBase

__all__ = ["LinearSTRF", "LNSTRF"]

# Small but nonzero: an untrained model then has a well-defined, nondegenerate STRF/dSTRF and gradient,
# while the initial predictions stay near the bias.
_INIT_STD = 0.01


class LinearSTRF(EncoderBase):
    """The classic STRF: a causal linear filter with a bias per output channel.

    ``yhat[b, n, t] = bias[n] + sum_{f, k} weight[n, f, k] * x[b, f, t - k]`` for ``k = 0 .. lags - 1``,
    with ``x[b, f, t'] = 0`` for ``t' < 0``.

    ``weight`` is stored in lag order ``(N, F, L)`` (``k = 0`` is the current frame), so it *is* the STRF.

    Args:
        n_freqs: F, number of frequency bands of the input.
        n_outputs: N, number of response channels.
        lags: L, number of frames (current one included) the filter spans.

    Shapes: input ``(B, F, T)`` -> output ``(B, N, T)``.
    """

    positive_output = False  # any real value: MSE loss only
    windowed = True  # forward(x, causal_padding=False)

    def __init__(self, n_freqs: int, n_outputs: int, lags: int = 65) -> None:
        super().__init__()
        self.n_freqs = positive_int(n_freqs, "n_freqs")
        self.n_outputs = positive_int(n_outputs, "n_outputs")
        self.lags = positive_int(lags, "lags")
        self.weight = nn.Parameter(torch.randn(self.n_outputs, self.n_freqs, self.lags) * _INIT_STD)
        self.bias = nn.Parameter(torch.zeros(self.n_outputs))

    @property
    def receptive_field(self) -> int:
        return self.lags

    @property
    def strf(self) -> torch.Tensor:
        """The kernel ``(N, F, L)`` in lag order (a view of ``weight``, gradients included)."""
        return self.weight

    def forward(self, x: torch.Tensor, causal_padding: bool = True) -> torch.Tensor:
        """``(B, F, T) -> (B, N, T)``; with ``causal_padding=False`` only the ``T - L + 1`` outputs whose whole
        window lies in the input (the dSTRF engine runs windows this way, computing nothing it discards)."""
        check_input(x, self.n_freqs, type(self).__name__)
        # conv1d is a cross-correlation running forward in time; flipping the lag axis turns it into
        # the causal convolution sum_k W[k] x[t - k] once L - 1 zeros are padded on the left.
        if causal_padding:
            x = F.pad(x, (self.lags - 1, 0))
        return F.conv1d(x, self.weight.flip(-1), self.bias)

    def extra_repr(self) -> str:
        return f"n_freqs={self.n_freqs}, n_outputs={self.n_outputs}, lags={self.lags}"


class LNSTRF(EncoderBase):
    """Linear-nonlinear model: a :class:`LinearSTRF` followed by a per-channel :class:`ParametricSoftplus`.

    ``yhat[b, n, t] = alpha_n * softplus(beta_n * z[b, n, t]) / beta_n``, ``z = LinearSTRF(x)``.

    Its dSTRF at t is ``s'(z_n(t)) * W_n``: the STRF scaled by the slope of the output nonlinearity.

    Shapes: input ``(B, F, T)`` -> output ``(B, N, T)``, positive.
    """

    positive_output = True  # ends in a parametric softplus: a positive rate, so the Poisson loss applies
    windowed = True  # forward(x, causal_padding=False)

    def __init__(self, n_freqs: int, n_outputs: int, lags: int = 65) -> None:
        super().__init__()
        self.linear = LinearSTRF(n_freqs, n_outputs, lags=lags)
        self.nonlinearity = ParametricSoftplus(self.linear.n_outputs)

    @property
    def n_freqs(self) -> int:
        return self.linear.n_freqs

    @property
    def n_outputs(self) -> int:
        return self.linear.n_outputs

    @property
    def lags(self) -> int:
        return self.linear.lags

    @property
    def receptive_field(self) -> int:
        return self.linear.receptive_field

    @property
    def strf(self) -> torch.Tensor:
        """The linear stage's kernel ``(N, F, L)`` in lag order."""
        return self.linear.strf

    def forward(self, x: torch.Tensor, causal_padding: bool = True) -> torch.Tensor:
        check_input(x, self.n_freqs, type(self).__name__)
        return self.nonlinearity(self.linear(x, causal_padding))
