"""Checks of scalar parameters shared by every layer: one definition each, so a value means the same thing to
a model, the dSTRF engine, the analysis and the command line.

Whole numbers are ``int`` (numpy integers too) or a float with no fractional part (``5.0``: YAML and Hydra
overrides such as ``1e3`` arrive as floats); never a bool or a string.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["DTYPES", "dtype_named", "memory_bytes", "option", "positive_int"]

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


_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def memory_bytes(value: object, name: str = "memory") -> int:
    """A memory budget in bytes: a positive whole number of bytes, or a string with a unit (``"512MB"``,
    ``"2 GB"``, ``"1.5GiB"``; k/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{name} must be a number of bytes or a size such as '512MB' or '2GB'; got {value!r}")
        value = round(float(match.group(1)) * _UNITS[unit])
    return positive_int(value, name, "bytes")
