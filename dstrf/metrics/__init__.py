"""Prediction accuracy: per-channel Pearson r (masked) and noise-ceiling-corrected correlation.

Undefined values are NaN, never 0, with a warning that names the channel and the reason.
"""

from .correlation import PearsonR, UndefinedCorrelationWarning, pearson_r
from .noise_ceiling import NoiseCeilingWarning, cc_max, cc_norm, signal_power

__all__ = [
    "pearson_r",
    "PearsonR",
    "signal_power",
    "cc_norm",
    "cc_max",
    "UndefinedCorrelationWarning",
    "NoiseCeilingWarning",
]
