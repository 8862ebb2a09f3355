"""Nonlinearity measures of dSTRFs: complexity, gain change, temporal hold, shape change (Keshishian et al. 2020).

Works on dSTRFs ``(T, N, F, L)`` as torch tensors, numpy arrays or the chunked files written by
:func:`dstrf.estimate.dstrf` (read one channel and one block of frames at a time), without Lightning or Hydra.
Every measure returns a float64 numpy array with one value per channel, and per-channel details on request;
:func:`nonlinearities` computes all four as one table. Definitions: :mod:`dstrf.analysis.measures`.
"""

from .inputs import DSTRFSource, FrameView
from .measures import (
    GAIN_VARIANTS,
    ComplexityDetails,
    GainChangeDetails,
    ShapeChangeDetails,
    TemporalHoldDetails,
    complexity,
    gain_change,
    shape_change,
    temporal_hold,
)
from .table import MEASURES, NonlinearityTable, by_channel, nonlinearities, plot_nonlinearities, stack_tables

__all__ = [
    "complexity",
    "gain_change",
    "temporal_hold",
    "shape_change",
    "nonlinearities",
    "plot_nonlinearities",
    "stack_tables",
    "by_channel",
    "NonlinearityTable",
    "MEASURES",
    "GAIN_VARIANTS",
    "DSTRFSource",
    "FrameView",
    "ComplexityDetails",
    "GainChangeDetails",
    "TemporalHoldDetails",
    "ShapeChangeDetails",
]
