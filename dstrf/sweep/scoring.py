"""Scores of a sweep's saved test outputs: Pearson r per channel and the jackknife standard error, in float64
numpy, with the reasons a score is NaN kept to be reported with its job.

These wrap the torch definitions (:func:`dstrf.metrics.pearson_r`, :func:`dstrf.estimate.jackknife_se`) so the
numbers are the ones training reports; torch is imported when a score is computed, not when a sweep is listed.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["TestOutputs", "jackknife_se", "load_test_outputs", "pearson_r", "scored"]


def pearson_r(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """:func:`dstrf.metrics.pearson_r` on ``(N, T)`` numpy arrays, in float64: NaN, with an
    :class:`~dstrf.metrics.UndefinedCorrelationWarning` naming the channel, where r is undefined (a constant or
    non-finite series)."""
    import torch  # here, not at the top: listing a sweep (dstrf-inspect) should not pay for importing torch

    from ..metrics import pearson_r as torch_pearson_r

    p = np.asarray(pred, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"prediction and response shapes differ: {p.shape} and {y.shape}")
    return torch_pearson_r(torch.from_numpy(p), torch.from_numpy(y)).numpy()


def scored(pred: np.ndarray, target: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """:func:`pearson_r`, and why some of its values are NaN: the warnings it gave, each prefixed with
    ``where`` (the trial), to be reported with the job in the summary rather than as warnings without context.
    Channels in them are numbered as in the group's ``channels``, from 0."""
    from ..metrics import UndefinedCorrelationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedCorrelationWarning)
        r = pearson_r(pred, target)
    reasons = []
    for w in caught:
        if issubclass(w.category, UndefinedCorrelationWarning):
            reasons.append(f"{where}: {w.message}")
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return r, reasons


def jackknife_se(values: np.ndarray) -> np.ndarray:
    """:func:`dstrf.estimate.jackknife_se` over axis 0 of a numpy ``(M, ...)`` array; NaN when M == 1."""
    import torch

    from ..estimate.jackknife import jackknife_se as torch_jackknife_se

    return torch_jackknife_se(torch.from_numpy(np.asarray(values, dtype=np.float64))).numpy()


@dataclass
class TestOutputs:
    """What a job saved in ``test_predictions.npz``: per test trial id, the prediction and the measured response
    ``(N, T)`` in the data's units (float64 here), the channel names and the warm-up (frames not scored)."""

    __test__ = False  # not a pytest test class
    warmup: int
    channels: list[str]
    predictions: dict[int, np.ndarray]
    responses: dict[int, np.ndarray]


def load_test_outputs(job_dir: Path) -> TestOutputs:
    path = Path(job_dir) / "test_predictions.npz"
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        ids = sorted(int(k[len("trial_") :]) for k in files if re.fullmatch(r"trial_\d+", k))
        lacking = [k for k in ("warmup", "channel_names", *(f"response_{i}" for i in ids)) if k not in files]
        if lacking:
            raise ValueError(f"{path} lacks {lacking[:3]} (written by an older dstrf?); rerun the job to rescore it")
        out = TestOutputs(
            int(data["warmup"]),
            [str(c) for c in data["channel_names"]],
            {i: data[f"trial_{i}"].astype(np.float64) for i in ids},
            {i: data[f"response_{i}"].astype(np.float64) for i in ids},
        )
    for i in ids:
        if out.predictions[i].shape != out.responses[i].shape or out.predictions[i].shape[0] != len(out.channels):
            raise ValueError(
                f"{path}: trial {i} has prediction {out.predictions[i].shape}, response "
                f"{out.responses[i].shape} and {len(out.channels)} channels"
            )
    return out
