"""Recurrent encoder: a deepSTRF-style per-frame spectral encoder feeding a GRU or LSTM."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..validation import positive_int
from .layers import ParametricSoftplus, check_input
from .protocol import EncoderBase

__all__ = ["LocallyConnected1d", "StateNet"]

_RNNS = {"gru": nn.GRU, "lstm": nn.LSTM}


class LocallyConnected1d(nn.Module):
    """A convolution over frequency whose weights are NOT shared between output positions.

    For ``P = (F - kernel_size) // stride + 1`` positions ``p``::

        y[b, c, p, t] = bias[c, p] + sum_j weight[p, c, j] * x[b, p * stride + j, t]

    Each frame is processed on its own (nothing mixes time). Input ``(B, F, T)`` -> output ``(B, C, P, T)``.
    """

    def __init__(self, n_freqs: int, channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.n_freqs = positive_int(n_freqs, "n_freqs")
        self.channels = positive_int(channels, "channels")
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        self.stride = positive_int(stride, "stride")
        if self.n_freqs < self.kernel_size:
            raise ValueError(f"LocallyConnected1d needs n_freqs >= kernel_size={self.kernel_size}; got {self.n_freqs}")
        self.positions = (self.n_freqs - self.kernel_size) // self.stride + 1
        # Same fan-in scaling as PyTorch's Conv1d default, applied to each position's own filter.
        bound = 1.0 / math.sqrt(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(self.positions, self.channels, self.kernel_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(self.channels, self.positions).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x.unfold(1, self.kernel_size, self.stride)  # (B, P, T, kernel_size)
        return torch.einsum("bptj,pcj->bcpt", patches, self.weight) + self.bias[:, :, None]

    def extra_repr(self) -> str:
        return (
            f"n_freqs={self.n_freqs}, channels={self.channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, positions={self.positions}"
        )


class StateNet(EncoderBase):
    """deepSTRF-style recurrent encoder.

    Per frame t, a spectral encoder turns the spectrum ``x[:, t]`` into ``H = channels * P`` features::

        e(t) = sigmoid( LayerNorm( flatten( LocallyConnected1d(x[:, t]) ) ) )

    (a convolution over frequency with kernel ``kernel_size`` and stride ``stride`` but a separate filter
    at each of the ``P = (F - kernel_size) // stride + 1`` positions). A GRU or LSTM with hidden size H
    integrates the features over time, and a linear readout with a per-channel output nonlinearity maps
    its state to the responses::

        s(t) = RNN(e(t), s(t - 1)),   yhat(t) = PSoftplus( U s(t) + b )

    Causal by construction (nothing looks ahead; the recurrent state starts at zero at the first frame
    of each trial, so no padding frames are involved). The memory is unbounded, hence
    ``receptive_field`` is ``None``: a finite window must be given explicitly where one is needed.

    Args:
        n_freqs: F, input frequency bands; needs ``F >= kernel_size``.
        n_outputs: N, response channels.
        kernel_size: frequency extent of each locally connected filter.
        stride: frequency step between filter positions.
        channels: filters per position.
        rnn: ``"gru"`` or ``"lstm"``.

    Shapes: input ``(B, F, T)`` -> output ``(B, N, T)``, positive.
    """

    positive_output = True  # ends in a parametric softplus: a positive rate, so the Poisson loss applies
    stateful = True  # forward(x, state=None, return_state=False); no causal padding to leave out (windowed False)

    def __init__(
        self,
        n_freqs: int,
        n_outputs: int,
        kernel_size: int = 7,
        stride: int = 3,
        channels: int = 7,
        rnn: str = "gru",
    ) -> None:
        super().__init__()
        self.n_freqs = positive_int(n_freqs, "n_freqs")
        self.n_outputs = positive_int(n_outputs, "n_outputs")
        kernel_size = positive_int(kernel_size, "kernel_size")
        if self.n_freqs < kernel_size:
            raise ValueError(
                f"StateNet needs n_freqs >= kernel_size={kernel_size} for its frequency encoder; "
                f"got n_freqs={self.n_freqs}"
            )
        if rnn not in _RNNS:
            raise ValueError(f"rnn must be one of {tuple(_RNNS)}; got {rnn!r}")
        self.rnn_type = rnn

        self.encoder = LocallyConnected1d(self.n_freqs, channels, kernel_size, stride)
        self.state_size = self.encoder.channels * self.encoder.positions
        self.norm = nn.LayerNorm(self.state_size)
        self.rnn = _RNNS[rnn](self.state_size, self.state_size, batch_first=True)
        self.readout = nn.Linear(self.state_size, self.n_outputs)
        self.nonlinearity = ParametricSoftplus(self.n_outputs)

    @property
    def receptive_field(self) -> None:
        return None

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False):
        """``(B, F, T) -> (B, N, T)``. ``state``: the recurrent state to start from (default zeros), as returned
        with ``return_state=True`` (then ``(output, state)``): a trial can run in pieces, e.g. a long context
        without gradients and then the window that a gradient map needs."""
        check_input(x, self.n_freqs, type(self).__name__)
        e = self.encoder(x)  # (B, C, P, T)
        b, c, p, t = e.shape
        e = torch.sigmoid(self.norm(e.permute(0, 3, 1, 2).reshape(b, t, c * p)))  # (B, T, H)
        s, final = self.rnn(e, state)  # (B, T, H); initial state zeros unless given
        y = self.nonlinearity(self.readout(s).transpose(1, 2))
        return (y, final) if return_state else y
