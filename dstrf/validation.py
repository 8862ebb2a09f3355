"""Checks of scalar parameters shared by every layer: one definition each, so a value means the same thing to
a model, the dSTRF engine, the analysis and the command line.

Whole numbers are ``int`` (numpy integers too) or a float with no fractional part (``5.0``: YAML and Hydra
overrides such as ``1e3`` arrive as floats); never a bool or a string.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["DTYPES", "dtype_named", "option", "positive_int"]

#: The storage types dSTRF arrays may have, by the name configs and the command line use.
DTYPES: dict[str, tuple[torch.dtype, type[np.floating]]] = {
    "float32": (torch.float32, np.float32),
    "float16": (torch.float16, np.float16),
    "float64": (torch.float64, np.float64),
}


def positive_int(value: object, name: str, unit: str | None = None, *, minimum: int = 1) -> int:
    """``value`` as an int, checked to be a whole number >= ``minimum``; the ValueError names ``name`` (and
    ``unit``, e.g. ``"frames"``)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or int(value) < minimum:  # type: ignore[call-overload]
        if unit is not None and minimum == 1:
            what = f"a positive whole number of {unit}"
        else:
            what = f"an integer >= {minimum}" + (f" ({unit})" if unit else "")
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return int(value)  # type: ignore[call-overload]


def option(value: object, name: str, options: Sequence[str]) -> str:
    """``value``, checked to be one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")
    return str(value)


def dtype_named(name: str, what: str = "dtype") -> tuple[torch.dtype, type[np.floating]]:
    """``(torch dtype, numpy dtype)`` for a name in :data:`DTYPES`."""
    return DTYPES[option(name, what, tuple(DTYPES))]
