"""What a dstrf encoder provides: the :class:`Encoder` protocol, the :class:`EncoderBase` that declares its
optional capabilities, and :func:`encoder_capabilities`, the one place that asks a model what it can do.

**The contract.** An encoder is an ``nn.Module`` mapping a stimulus batch ``x`` of shape ``(B, F, T)`` (F
frequency bands, T frames) to responses ``(B, N, T)``, causally: output frame t depends on input frames
``<= t`` only. ``model(x)`` always works and pads the frames before the start of ``x`` itself (zeros, i.e.
the training mean of the standardized stimulus; a recurrent model starts its state at zero instead). It has

- ``n_freqs`` (F) and ``n_outputs`` (N);
- ``receptive_field``: the number of frames (current one included) that output t depends on, or ``None`` for
  a recurrent model, whose memory is unbounded (a finite window must then be given explicitly, ``lags``).

and declares which of these optional capabilities it has (dstrf's encoders inherit the defaults from
:class:`EncoderBase` and override the ones they have):

``windowed`` (default False)
    ``forward(x, causal_padding=False)`` runs without the causal padding and returns only the
    ``T - receptive_field + 1`` outputs whose whole window lies in ``x``, so the dSTRF engine and the gradient
    maps can run one receptive-field window per output frame, computing nothing they discard.
``window_output(windows)`` (an optional method, only consulted when windowed)
    ``(B, F, receptive_field) -> (B, N)``: the output at the last frame of each window, computing only what
    that frame depends on (:class:`DeepEncoder`); otherwise ``forward(windows, causal_padding=False)[:, :, -1]``.
``window_features(windows)`` and ``readout_weight`` (optional, only consulted when windowed)
    A linear readout over H hidden units: ``window_features`` ``(B, F, receptive_field) -> (B, H)`` gives the
    hidden units at the last frame of each window and ``readout_weight`` ``(N, H)`` the readout, so that
    ``window_output(w) = window_features(w) @ readout_weight.T + bias``. The dSTRF engine then takes the
    Jacobian of the H hidden units and multiplies it by the readout, so its backward work stops growing with
    N once N > H (:class:`DeepEncoder`'s 1x1 readout).
``stateful`` (default False)
    ``forward(x, state=None, return_state=False)``: start from a recurrent state (default zeros) and with
    ``return_state=True`` return ``(output, final state)``, so a trial can run in pieces (:class:`StateNet`).
``positive_output`` (default False)
    The output is a positive rate (a final softplus), so a Poisson loss applies.
``padding_value`` (optional attribute, default 0.0)
    What the frames before a trial stand for, the model's null stimulus: a scalar or one value per band
    ``(F,)``. dstrf's encoders take standardized input and pad with zeros; a wrapper in the data's units
    (:class:`dstrf.lit.DataUnitsEncoder`) pads with the training mean. Not declared on :class:`EncoderBase`,
    so that a subclass may register a buffer of that name.

Any other ``nn.Module`` is accepted by the estimators too (a user's own model, a test's stand-in): for what it
does not declare, :func:`encoder_capabilities` falls back to what its ``forward`` accepts, as before there
was a protocol, and to the defaults above.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

import torch
from torch import nn

__all__ = ["Encoder", "EncoderBase", "EncoderCapabilities", "encoder_capabilities"]


@runtime_checkable
class Encoder(Protocol):
    """A dstrf encoder ``(B, F, T) -> (B, N, T)``; see the module docstring for the contract.

    ``isinstance(model, Encoder)`` holds when every member below exists (for dstrf's encoders, all of which
    inherit :class:`EncoderBase`); it cannot check signatures, so what ``forward`` accepts beyond ``x`` is
    what the ``windowed`` and ``stateful`` flags say.
    """

    @property
    def n_freqs(self) -> int:
        """F, the number of frequency bands of the input."""
        ...

    @property
    def n_outputs(self) -> int:
        """N, the number of response channels."""
        ...

    @property
    def receptive_field(self) -> int | None:
        """Frames (current one included) that output t depends on; ``None`` if recurrent."""
        ...

    @property
    def windowed(self) -> bool:
        """``forward(x, causal_padding=False)`` returns only the outputs whose whole window lies in x."""
        ...

    @property
    def stateful(self) -> bool:
        """``forward(x, state=None, return_state=False)`` starts from and returns the recurrent state."""
        ...

    @property
    def positive_output(self) -> bool:
        """The output is a positive rate (Poisson loss applies)."""
        ...

    def forward(self, x: torch.Tensor) -> Any:
        """``(B, F, T) -> (B, N, T)``, causal, with the model's own padding before the first frame."""
        ...


class EncoderBase(nn.Module):
    """The base of dstrf's encoders: the defaults of the optional capabilities, overridden where a model has
    them. A subclass sets ``n_freqs``, ``n_outputs`` and ``receptive_field`` (attributes or properties); one
    that changes what ``forward`` accepts (e.g. drops ``causal_padding``) sets the flags to match."""

    windowed: bool = False
    stateful: bool = False
    positive_output: bool = False


@dataclass(frozen=True)
class EncoderCapabilities:
    """What a model can do, as :func:`encoder_capabilities` found it.

    Attributes
    ----------
    n_freqs, n_outputs : int or None
        Bands F and channels N; None where the model does not say.
    has_receptive_field : bool
        Whether the model has a ``receptive_field`` at all (every encoder does; dstrf refuses a model without).
    receptive_field : int or None
        Its value (None: recurrent, or ``has_receptive_field`` is False).
    causal_padding : bool
        ``forward(x, causal_padding=False)`` is supported.
    windowed : bool
        The estimators may run receptive-field windows without causal padding (through ``window_output`` if
        there is one, else ``forward(x, causal_padding=False)``).
    window_output : bool
        Windows are run through the model's ``window_output`` (only when windowed).
    linear_readout : int or None
        H, when the model has ``window_features`` and a ``readout_weight`` ``(N, H)`` (only when windowed).
    stateful : bool
        ``forward(x, state=..., return_state=True)`` is supported.
    positive_output : bool
        The output is a positive rate.
    padding_value : float or torch.Tensor
        The model's null stimulus, a scalar or ``(F,)`` (not compared: it may be a tensor).
    """

    n_freqs: int | None
    n_outputs: int | None
    has_receptive_field: bool
    receptive_field: int | None
    causal_padding: bool
    windowed: bool
    window_output: bool
    stateful: bool
    linear_readout: int | None
    positive_output: bool
    padding_value: float | torch.Tensor = field(default=0.0, compare=False)


_MISSING = object()


def _forward_parameters(model: nn.Module) -> frozenset[str]:
    """The names ``model.forward`` takes (none where Python cannot tell, e.g. a compiled forward)."""
    try:
        return frozenset(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def encoder_capabilities(model: nn.Module) -> EncoderCapabilities:
    """What ``model`` provides: the declared members of the :class:`Encoder` protocol, and for a module that does
    not declare them (any ``nn.Module`` is accepted), what its ``forward`` accepts and the defaults.

    - ``windowed``: the model's own flag if it has one (a wrapper such as :class:`dstrf.lit.DataUnitsEncoder`
      says so itself, since its ``window_output`` exists whatever the encoder it wraps); otherwise whether it
      has a ``window_output`` or its ``forward`` takes ``causal_padding``. ``causal_padding`` likewise: the flag,
      else ``forward``'s signature.
    - ``stateful``: the model's flag, else whether ``forward`` takes both ``state`` and ``return_state``.
    - ``linear_readout``: H where ``window_features`` exists and ``readout_weight`` is an ``(N, H)`` tensor
      (a wrapper whose encoder has none returns None there).
    - ``positive_output`` False, ``padding_value`` 0.0 unless the model says otherwise.
    """
    receptive_field = getattr(model, "receptive_field", _MISSING)
    has_window_output = callable(getattr(model, "window_output", None))
    declared_windowed = getattr(model, "windowed", None)
    declared_stateful = getattr(model, "stateful", None)
    parameters = _forward_parameters(model) if declared_windowed is None or declared_stateful is None else frozenset()
    if declared_windowed is not None:
        causal_padding = windowed = bool(declared_windowed)
    else:
        causal_padding = "causal_padding" in parameters
        windowed = has_window_output or causal_padding
    if declared_stateful is not None:
        stateful = bool(declared_stateful)
    else:
        stateful = "state" in parameters and "return_state" in parameters
    readout = getattr(model, "readout_weight", None) if callable(getattr(model, "window_features", None)) else None
    return EncoderCapabilities(
        n_freqs=getattr(model, "n_freqs", None),
        n_outputs=getattr(model, "n_outputs", None),
        has_receptive_field=receptive_field is not _MISSING,
        receptive_field=None if receptive_field is _MISSING else cast("int | None", receptive_field),
        causal_padding=causal_padding,
        windowed=windowed,
        window_output=windowed and has_window_output,
        stateful=stateful,
        linear_readout=int(readout.shape[1]) if windowed and isinstance(readout, torch.Tensor) else None,
        positive_output=bool(getattr(model, "positive_output", False)),
        padding_value=getattr(model, "padding_value", 0.0),
    )
