"""Encoders: plain ``torch.nn.Module``s mapping a stimulus ``(B, F, T)`` to responses ``(B, N, T)``.

Every encoder is constructed as ``Cls(n_freqs, n_outputs, **hyperparameters)``, is causal (output frame
t depends on input frames <= t only) and has ``.receptive_field``: the number of frames (current one
included) that output t depends on, or ``None`` for recurrent models. Frames before the start of a trial
are zeros, i.e. the training mean of the per-band standardized stimulus.

=============  =========================================================  ======================
model          what                                                       receptive field
=============  =========================================================  ======================
LinearSTRF     b + sum_{f,k} W[n,f,k] x_f(t-k)                            lags (65)
LNSTRF         LinearSTRF -> ParametricSoftplus                           lags (65)
DeepEncoder    bias-free dilated causal 1-D CNN, exact dSTRF              1 + (k-1)*sum(dil) (65)
ConvNet2D      deepSTRF 2-D CNN over (freq, time) -> per-frame MLP        1 + n_layers*(kt-1) (25)
StateNet       locally connected spectral encoder -> GRU/LSTM             None
RidgeSTRF      LinearSTRF fitted in closed form, alpha per channel by CV  lags (65)
=============  =========================================================  ======================

What every encoder provides, and the optional capabilities it declares (``windowed``, ``window_output``,
``stateful``, ``positive_output``, ``padding_value``), is the :class:`Encoder` protocol
(:mod:`dstrf.models.protocol`); the estimators ask :func:`encoder_capabilities` rather than probing a model.

Most encoders are trained by gradient descent. Those fitted in closed form (:class:`ClosedFormEncoder`:
RidgeSTRF) are fitted once on the training trials by ``fit`` and then used like any other.
"""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from .cnn import ConvNet2D, DeepEncoder
from .layers import ParametricSoftplus
from .linear import LNSTRF, LinearSTRF
from .protocol import Encoder, EncoderBase, EncoderCapabilities, encoder_capabilities
from .recurrent import LocallyConnected1d, StateNet
from .ridge import RidgeSTRF


@runtime_checkable
class ClosedFormEncoder(Protocol):
    """An encoder fitted in closed form on whole training trials instead of by gradient descent."""

    closed_form: bool

    @property
    def fitted(self) -> bool: ...

    def fit(
        self, stimuli: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], warmup: int | None = None
    ) -> torch.nn.Module: ...


__all__ = [
    "ClosedFormEncoder",
    "ConvNet2D",
    "DeepEncoder",
    "Encoder",
    "EncoderBase",
    "EncoderCapabilities",
    "encoder_capabilities",
    "LinearSTRF",
    "LNSTRF",
    "LocallyConnected1d",
    "ParametricSoftplus",
    "RidgeSTRF",
    "StateNet",
]
