"""Trials, their validation and standardization, loaders, splits and the built-in synthetic ground truth.

Audio front-ends are in :mod:`dstrf.data.audio` (imported on its own: it loads scipy.signal and librosa)."""

from .formats import from_mne, from_naplib, load_mat, load_naplib_demo
from .io import load_trials, save_trials
from .splits import SCHEMES, Split, holdout, kfold, leave_one_out, n_folds, n_jackknife, pairs, split_grid
from .trials import Standardization, Trial, Trials

__all__ = [
    "Trial",
    "Trials",
    "Standardization",
    "load_trials",
    "save_trials",
    "load_mat",
    "from_mne",
    "from_naplib",
    "load_naplib_demo",
    "Split",
    "holdout",
    "kfold",
    "leave_one_out",
    "pairs",
    "n_folds",
    "n_jackknife",
    "split_grid",
    "SCHEMES",
]
