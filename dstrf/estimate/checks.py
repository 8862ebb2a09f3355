"""What the estimators check before (and after) they compute: one place for dSTRFs, gradient maps and optimal
stimuli, so a bad input gets the same error wherever it enters.

- the **model**: a ``receptive_field`` that agrees with ``lags``, and finite parameters and buffers (a fit that
  diverged has NaN weights; its Jacobian would be NaN everywhere, which the causality probe would otherwise
  report as "not causal");
- the **stimulus**: one trial ``(F, T)`` with the model's number of bands, at least one frame, finite values;
- **sizes** (lags, chunk and batch sizes): positive whole numbers;
- the **result**: finite, or an error that says where it is not (a model can overflow on finite input).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models import encoder_capabilities
from ..validation import positive_int

__all__ = ["check_model", "check_finite_parameters", "check_stimulus", "check_finite_result", "first_non_finite"]


def first_non_finite(values: torch.Tensor) -> tuple[int, tuple[int, ...]] | None:
    """``(how many, index of the first in row-major order)`` of the NaN/Inf entries of ``values``; None if
    every entry is finite."""
    values = values.detach()
    if not (values.is_floating_point() or values.is_complex()):
        return None
    # NaN and Inf propagate into a sum, which costs a fraction of an elementwise isfinite: the exact look is
    # needed only when the sum is not finite (a NaN/Inf, or a sum that overflowed)
    if bool(torch.isfinite(values.sum())):
        return None
    bad = ~torch.isfinite(values)
    count = int(bad.sum())
    if not count:
        return None
    first = int(bad.flatten().nonzero()[0, 0])
    return count, tuple(int(i) for i in np.unravel_index(first, tuple(values.shape)))


def check_finite_parameters(model: nn.Module) -> None:
    """A ValueError naming the first parameter (then buffer, e.g. standardization statistics) with NaN or Inf."""
    named = [("parameter", n, v) for n, v in model.named_parameters()] + [
        ("buffer", n, v) for n, v in model.named_buffers()
    ]
    for kind, name, value in named:
        found = first_non_finite(value)  # None for integer buffers (batch counters): finite by construction
        if found is None:
            continue
        count, _ = found
        n_nan = int(torch.isnan(value.detach()).sum())
        others = sum(first_non_finite(v) is not None for _, other, v in named if other != name)
        also = f" (and {others} more tensors)" if others else ""
        raise ValueError(
            f"model {kind} '{name}' of {type(model).__name__} has {count} non-finite values ({n_nan} NaN, "
            f"{count - n_nan} Inf) of {value.numel()}{also}: the fit diverged or the weights were damaged, so its "
            "dSTRFs and gradient maps would be meaningless. Retrain it (e.g. with a lower learning rate or "
            "gradient clipping)."
        )


def check_model(model: nn.Module, lags) -> tuple[int | None, int]:
    """(receptive field or None, lags) after checking them against each other and the weights for NaN/Inf."""
    capabilities = encoder_capabilities(model)
    receptive_field = capabilities.receptive_field
    name = type(model).__name__
    if not capabilities.has_receptive_field:
        raise TypeError(
            f"{name} has no receptive_field attribute; dstrf needs a causal encoder with one (None if recurrent)"
        )
    if receptive_field is None and lags is None:
        raise ValueError(
            f"{name} is recurrent (receptive_field is None): pass lags=L, the number of past frames to keep"
        )
    lags = positive_int(receptive_field if lags is None else lags, "lags", "frames")
    if receptive_field is not None and lags > receptive_field:
        raise ValueError(
            f"lags={lags} exceeds the receptive field of {name} ({receptive_field} frames): the output does not depend "
            f"on frames further back, so those lags would be zero by construction. Use lags <= {receptive_field}."
        )
    check_finite_parameters(model)
    return receptive_field, lags


def check_stimulus(model: nn.Module, x, what: str = "x") -> torch.Tensor:
    """``x`` as a tensor after checking that it is one trial ``(F, T)`` of the model's F bands, with at least one
    frame and only finite values (the error names the band and frame of the first NaN/Inf, in time order)."""
    x = torch.as_tensor(x)
    shape = tuple(x.shape)
    if x.ndim != 2:
        raise ValueError(f"{what} must be one trial's stimulus (freqs, frames); got shape {shape}")
    n_freqs = encoder_capabilities(model).n_freqs
    if n_freqs is not None and shape[0] != n_freqs:
        raise ValueError(
            f"{type(model).__name__} takes {n_freqs} frequency bands; {what} has {shape[0]} (shape {shape})"
        )
    if shape[1] == 0:
        raise ValueError(f"{what} has no frames (shape {shape}): give a stimulus of at least one frame")
    found = first_non_finite(x.T)  # (frames, bands): the first in time
    if found is not None:
        count, (frame, band) = found
        raise ValueError(
            f"{what} has {count} non-finite values (NaN or Inf); the first is {x[band, frame].item()} at band "
            f"{band}, frame {frame}. The stimulus must be finite: fill or cut out the missing frames first."
        )
    return x


def check_finite_result(
    values: torch.Tensor,
    model: nn.Module,
    what: str,
    axes: tuple[str, ...],
    labels: tuple[np.ndarray, ...],
    dtype: torch.dtype | None = None,
) -> None:
    """A ValueError if ``values`` holds NaN/Inf: where the first one is (``axes`` named, ``labels[i]`` the frame
    or channel numbers along axis i) and why, since the model and its input were checked finite before."""
    found = first_non_finite(values)
    if found is None:
        return
    count, index = found
    where = ", ".join(f"{axis} {int(label[i])}" for axis, label, i in zip(axes, labels, index))
    why = "the model overflows or is undefined there (e.g. a division by a zero standard deviation)"
    if dtype in (torch.float16, torch.bfloat16):
        why = f"a value too large for {dtype} (float16 ends at 65504; use dtype=float32), or " + why
    raise ValueError(
        f"{what} of {type(model).__name__} has {count} non-finite values, the first at {where}, although "
        f"its weights and input are finite: {why}"
    )
