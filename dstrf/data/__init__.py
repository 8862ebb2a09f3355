"""Trials, their validation and standardisation, loaders, splits and the built-in synthetic ground truth."""

from .io import load_trials, save_trials
from .splits import Split, holdout
from .trials import Standardization, Trial, Trials

__all__ = ["Trial", "Trials", "Standardization", "Split", "holdout", "load_trials", "save_trials"]
