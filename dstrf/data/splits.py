"""Trial-wise splits into training, validation and test trials.

Splits are always whole trials, never time samples: temporal autocorrelation makes within-trial splits leak.
A split is deterministic in (number of trials, scheme, arguments, seed), so every process (DDP ranks, cluster
jobs, the inspector) recomputes the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "holdout"]


@dataclass(frozen=True)
class Split:
    """Trial ids of each role. Validation trials choose the epoch (early stopping); test trials only score."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def __post_init__(self) -> None:
        for role in ("train", "val", "test"):
            object.__setattr__(self, role, tuple(int(i) for i in getattr(self, role)))
        if not self.train:
            raise ValueError(f"split has no training trials: {self}")
        overlap = (set(self.train) & set(self.val)) | (set(self.train) & set(self.test)) | (set(self.val) & set(self.test))
        if overlap:
            raise ValueError(f"trials {sorted(overlap)} are in more than one of train/val/test: {self}")

    def check(self, n_trials: int) -> Split:
        bad = sorted(i for i in (*self.train, *self.val, *self.test) if not 0 <= i < n_trials)
        if bad:
            raise ValueError(f"split names trials {bad} but there are only {n_trials} trials (ids 0..{n_trials - 1})")
        return self

    def as_dict(self) -> dict[str, list[int]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


def _count(size: float | int, n: int, what: str) -> int:
    """A fraction in [0, 1) of n trials (at least one when positive), or an absolute count."""
    if isinstance(size, float) and 0 <= size < 1:
        return max(1, round(size * n)) if size > 0 else 0
    if float(size) != int(size) or size < 0:
        raise ValueError(f"{what} must be a fraction in [0, 1) or a whole number of trials; got {size!r}")
    return int(size)


def holdout(
    n_trials: int,
    test: Sequence[int] | None = None,
    val: Sequence[int] | None = None,
    test_size: float | int = 0.2,
    val_size: float | int = 0.1,
    seed: int = 0,
) -> Split:
    """Hold out fixed test and validation trials; the rest train.

    ``test`` and ``val`` give trial ids explicitly; when omitted, ``test_size`` / ``val_size`` (a fraction of
    all trials, or a count) are drawn from a permutation seeded by ``seed``. Validation trials always come from
    the trials that are not test trials.
    """
    if n_trials < 2:
        raise ValueError(f"a hold-out split needs at least 2 trials (one to train, one to test); got {n_trials}")
    order = [int(i) for i in np.random.default_rng(seed).permutation(n_trials)]
    if test is None:
        test = sorted(order[: _count(test_size, n_trials, "test_size")])
    test = [int(i) for i in test]
    rest = [i for i in order if i not in set(test)]
    if val is None:
        val = sorted(rest[: _count(val_size, n_trials, "val_size")])
    val = [int(i) for i in val]
    train = sorted(i for i in range(n_trials) if i not in set(test) | set(val))
    if not train:
        raise ValueError(f"hold-out split of {n_trials} trials with test={test} and val={val} leaves no training trial")
    return Split(tuple(train), tuple(val), tuple(test)).check(n_trials)
