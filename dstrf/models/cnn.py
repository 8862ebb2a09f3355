"""Convolutional encoders: naplab/DSTRF's bias-free dilated 1-D CNN and a deepSTRF-style 2-D CNN.

Both are causal with a finite receptive field. Frames before the start of a trial are zeros, i.e. the
training mean of the per-band standardized stimulus (see :mod:`dstrf.models.layers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import positive_int
from .layers import ParametricSoftplus, check_dropout, check_input, int_tuple
from .protocol import EncoderBase

__all__ = ["DeepEncoder", "ConvNet2D"]

_ACTIVATIONS = ("relu", "leaky_relu")


class DeepEncoder(EncoderBase):
    """Stack of causal dilated 1-D convolutions over time, frequency bands as input channels.

    Layer i (``i = 1 .. len(dilations)``), with ``h_0 = x``::

        h_i[c, t] = act( sum_{c', j} V_i[c, c', j] * h_{i-1}[c', t - j * d_i] ),   j = 0 .. kernel_size - 1

    followed by the readout ``yhat[n, t] = b[n] + sum_c U[n, c] * h_last[c, t]``.

    The hidden layers have **no bias** and ``act`` is ReLU or LeakyReLU, so the network is piecewise
    linear and positively homogeneous in its input: ``yhat(t) = b + <W_t, X_t>`` holds *exactly*, where
    ``X_t`` is the input window of the receptive field ending at t and ``W_t = d yhat(t) / d X_t`` is the
    Jacobian, i.e. the dSTRF (Keshishian et al. 2020). A dropout mask (training mode only) keeps this
    property, since it is a fixed linear map for one forward pass.

    Each layer is padded on the left with ``(kernel_size - 1) * d_i`` zeros. Because ``act(0) = 0`` and
    there are no biases, a zero input frame gives zero hidden frames, so this is the same as padding the
    *input* with zeros (the training mean) once.

    Receptive field: ``1 + (kernel_size - 1) * sum(dilations)`` frames (65 by default).

    Args:
        n_freqs: F, input frequency bands.
        n_outputs: N, response channels.
        hidden: channels of every hidden layer.
        kernel_size: temporal kernel size of every hidden layer.
        dilations: one dilation per hidden layer (list or tuple; its length is the depth).
        activation: ``"relu"`` or ``"leaky_relu"``.
        negative_slope: slope for negative inputs of ``"leaky_relu"`` (ignored for ``"relu"``).
        dropout: dropout probability after every hidden activation (0 disables it).

    Shapes: input ``(B, F, T)`` -> output ``(B, N, T)``.
    """

    positive_output = False  # any real value: MSE loss only
    windowed = True  # forward(x, causal_padding=False), and window_output(windows) for the last frame's cone

    def __init__(
        self,
        n_freqs: int,
        n_outputs: int,
        hidden: int = 128,
        kernel_size: int = 5,
        dilations: Sequence[int] = (1, 1, 2, 4, 8),
        activation: str = "relu",
        negative_slope: float = 0.01,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_freqs = positive_int(n_freqs, "n_freqs")
        self.n_outputs = positive_int(n_outputs, "n_outputs")
        self.hidden = positive_int(hidden, "hidden")
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        self.dilations = int_tuple(dilations, "dilations")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}; got {activation!r}")
        self.activation = activation
        self.negative_slope = float(negative_slope)
        if self.negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0; got {negative_slope}")
        self.dropout = check_dropout(dropout)

        slope = self.negative_slope if activation == "leaky_relu" else 0.0
        self.act = nn.LeakyReLU(slope) if activation == "leaky_relu" else nn.ReLU()
        self.drop = nn.Dropout(self.dropout) if self.dropout > 0 else nn.Identity()
        self.convs = nn.ModuleList()
        for i, d in enumerate(self.dilations):
            conv = nn.Conv1d(
                self.n_freqs if i == 0 else self.hidden,
                self.hidden,
                self.kernel_size,
                dilation=d,
                bias=False,
            )
            # He init: PyTorch's default shrinks the signal ~6x per ReLU layer, which would leave a
            # 5-layer stack with vanishing outputs and gradients at the start of training.
            nn.init.kaiming_normal_(conv.weight, a=slope, nonlinearity="leaky_relu")
            self.convs.append(conv)
        self.readout = nn.Conv1d(self.hidden, self.n_outputs, 1)

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    def forward(self, x: torch.Tensor, causal_padding: bool = True) -> torch.Tensor:
        """``(B, F, T) -> (B, N, T)``; with ``causal_padding=False`` only the ``T - R + 1`` outputs whose whole
        receptive field lies in the input (the dSTRF engine runs windows this way)."""
        check_input(x, self.n_freqs, type(self).__name__)
        h = x
        for conv, d in zip(self.convs, self.dilations):
            h = F.pad(h, ((self.kernel_size - 1) * d, 0)) if causal_padding else h
            h = self.drop(self.act(conv(h)))
        return self.readout(h)

    def window_output(self, windows: torch.Tensor) -> torch.Tensor:
        """The output at the last frame of each window ``(B, F, R)`` -> ``(B, N)``, computing only its cone
        (see :meth:`window_features`)."""
        return self.readout(self._window_hidden(windows))[:, :, -1]

    def window_features(self, windows: torch.Tensor) -> torch.Tensor:
        """The last hidden layer at the last frame of each window, ``(B, F, R)`` -> ``(B, H)``: with
        :attr:`readout_weight` ``U``, ``window_output(w) = window_features(w) @ U.T + b``."""
        return self._window_hidden(windows)[:, :, -1]

    @property
    def readout_weight(self) -> torch.Tensor:
        """``U`` ``(N, H)``, the 1x1 readout's weight."""
        return self.readout.weight[:, :, 0]

    def _window_hidden(self, windows: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``(B, H, n)`` ending on each window's last frame, computing only its cone.

        The last output needs layer L-1 only every d_L frames, layer L-2 every d_{L-1} frames, and so on. In
        the subsequence sampled every s frames, a convolution of dilation d becomes one of dilation d / s, with
        stride d_next / s, aligned on the window's last frame. That is about half the work of running the window
        through the network "valid" (dSTRFs need nothing else). It needs each dilation to divide the next; for
        other dilations it falls back to the valid pass.
        """
        check_input(windows, self.n_freqs, type(self).__name__)
        steps = (*self.dilations[1:], None)
        if windows.shape[-1] != self.receptive_field or any(
            nxt is not None and nxt % d for d, nxt in zip(self.dilations, steps)
        ):
            h = windows
            for conv in self.convs:
                h = self.drop(self.act(conv(h)))
            return h
        h, s = windows, 1  # h holds every s-th frame, ending on the window's last frame
        for conv, d, nxt in zip(self.convs, self.dilations, steps):
            dilation = d // s
            span = (self.kernel_size - 1) * dilation + 1
            stride = nxt // s if nxt is not None else 1
            n = h.shape[-1]
            trim = (n - span) % stride if nxt is not None else n - span  # keep outputs aligned on the end
            h = F.conv1d(h[..., trim:], cast(nn.Conv1d, conv).weight, None, stride=stride, dilation=dilation)
            h = self.drop(self.act(h))
            s = nxt if nxt is not None else s
        return h


class ConvNet2D(EncoderBase):
    """deepSTRF-style 2-D CNN over (frequency, time) with a per-frame readout and output nonlinearity.

    The spectrogram is one image ``(1, F, T)``. Each of ``n_layers`` blocks is::

        h <- LeakyReLU( LayerNorm_channels( Conv2d(h) ) )

    with kernel ``kernel_size = (kf, kt)``, no padding in frequency (F shrinks by ``kf - 1`` per block) and
    causal in time. The LayerNorm normalises the ``channels`` values at every (frequency, time) position,
    so nothing is shared across time (no batch statistics, no train/eval difference). Then, for every
    frame t, the ``channels * F_out`` features are read out by a small MLP::

        yhat[:, t] = PSoftplus( Linear( Dropout( LeakyReLU( Linear(h[:, :, t]) ) ) ) )

    Causal padding: the input is padded once on the left with ``receptive_field - 1`` zeros (the training
    mean) and the convolutions are "valid" in time. Padding every layer with zeros would not be the same:
    conv bias + LayerNorm map a zero frame to a nonzero one, so the hidden layers' padding would then be
    values the network never computes from any input.

    Receptive field: ``1 + n_layers * (kt - 1)`` frames (25 by default).

    Args:
        n_freqs: F, input frequency bands; needs ``F >= 1 + n_layers * (kf - 1)`` (7 by default).
        n_outputs: N, response channels.
        channels: feature maps of every convolutional block.
        kernel_size: ``(kf, kt)`` kernel in (frequency, time).
        n_layers: number of convolutional blocks.
        hidden: width of the per-frame readout MLP.
        negative_slope: slope of every LeakyReLU.
        dropout: dropout probability in the readout MLP (0 disables it).

    Shapes: input ``(B, F, T)`` -> output ``(B, N, T)``, positive.
    """

    positive_output = True  # ends in a parametric softplus: a positive rate, so the Poisson loss applies
    windowed = True  # forward(x, causal_padding=False)

    def __init__(
        self,
        n_freqs: int,
        n_outputs: int,
        channels: int = 10,
        kernel_size: Sequence[int] = (3, 9),
        n_layers: int = 3,
        hidden: int = 20,
        negative_slope: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_freqs = positive_int(n_freqs, "n_freqs")
        self.n_outputs = positive_int(n_outputs, "n_outputs")
        self.channels = positive_int(channels, "channels")
        self.kernel_size = int_tuple(kernel_size, "kernel_size", length=2)
        self.n_layers = positive_int(n_layers, "n_layers")
        self.hidden = positive_int(hidden, "hidden")
        self.negative_slope = float(negative_slope)
        if self.negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0; got {negative_slope}")
        self.dropout = check_dropout(dropout)

        kf, kt = self.kernel_size
        min_freqs = 1 + self.n_layers * (kf - 1)
        if self.n_freqs < min_freqs:
            raise ValueError(
                f"ConvNet2D needs n_freqs >= {min_freqs} for {self.n_layers} convolutions of "
                f"frequency size {kf} without frequency padding; got n_freqs={self.n_freqs}"
            )
        self.freqs_out = self.n_freqs - self.n_layers * (kf - 1)

        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else self.channels, self.channels, (kf, kt)) for i in range(self.n_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(self.channels) for _ in range(self.n_layers))
        self.act = nn.LeakyReLU(self.negative_slope)
        self.fc1 = nn.Linear(self.channels * self.freqs_out, self.hidden)
        self.drop = nn.Dropout(self.dropout) if self.dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(self.hidden, self.n_outputs)
        self.nonlinearity = ParametricSoftplus(self.n_outputs)

    @property
    def receptive_field(self) -> int:
        return 1 + self.n_layers * (self.kernel_size[1] - 1)

    def forward(self, x: torch.Tensor, causal_padding: bool = True) -> torch.Tensor:
        """``(B, F, T) -> (B, N, T)``; with ``causal_padding=False`` only the ``T - R + 1`` outputs whose whole
        receptive field lies in the input (the dSTRF engine runs windows this way)."""
        check_input(x, self.n_freqs, type(self).__name__)
        h = (F.pad(x, (self.receptive_field - 1, 0)) if causal_padding else x).unsqueeze(1)  # (B, 1, F, T')
        for conv, norm in zip(self.convs, self.norms):
            h = conv(h)
            h = norm(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # normalise over channels
            h = self.act(h)
        b, c, f, t = h.shape  # t == T (with causal padding)
        h = h.permute(0, 3, 1, 2).reshape(b, t, c * f)  # one feature vector per frame
        z = self.fc2(self.drop(self.act(self.fc1(h))))  # (B, T, N)
        return self.nonlinearity(z.transpose(1, 2))
