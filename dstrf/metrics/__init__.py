"""Prediction accuracy: per-channel Pearson r (masked) and noise-ceiling-corrected correlation."""

from .correlation import PearsonR, pearson_r
from .noise_ceiling import cc_max, cc_norm, signal_power

__all__ = ["pearson_r", "PearsonR", "signal_power", "cc_norm", "cc_max"]
