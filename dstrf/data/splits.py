"""Trial-wise splits into training, validation and test trials, with optional jackknife replicates.

Splits are always whole trials, never time samples: temporal autocorrelation makes within-trial splits leak.
A split is deterministic in (number of trials, scheme, arguments, seed), so every process (DDP ranks, cluster
jobs, the inspector) recomputes the same one.

Schemes (each ``(n_trials, ..., fold=0, jackknife=None, seed=0) -> Split``):

* :func:`holdout` -- one fixed split (fold 0 only).
* :func:`kfold` -- trials permuted by ``seed`` and cut into ``n_folds`` contiguous near-equal test folds.
* :func:`leave_one_out` -- fold ``k`` tests trial ``k``.
* :func:`pairs` -- naplab/DSTRF's pairing: one fold per unordered pair {i, j}; the model is test trial i's
  jackknife replicate without j and vice versa, so it takes no further ``jackknife``.

Sizes (``test_size``, ``val_size``): a float in (0, 1) is a fraction of all trials (at least one trial), an
int >= 1 a count; the float 1.0 is an error (100% of the trials, or one trial?). Explicit id lists (holdout's
``test`` / ``val``) must name each trial once.

Validation trials come only from the non-test trials and depend on (seed, fold) alone, so every jackknife
replicate of a fold has the same test and validation trials. The jackknife *pool* of a fold is its remaining
training trials in sorted order; ``jackknife=j`` trains without ``pool[j]`` (recorded as ``Split.left_out``).

:func:`n_folds`, :func:`n_jackknife` and :func:`split_grid` enumerate every (fold, jackknife) job of a scheme,
validating each, so a sweep fails before any training starts.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SCHEMES",
    "Split",
    "holdout",
    "kfold",
    "leave_one_out",
    "n_folds",
    "n_jackknife",
    "pairs",
    "split_grid",
]


@dataclass(frozen=True)
class Split:
    """Trial ids of each role. Validation trials choose the epoch (early stopping); test trials only score.

    ``fold``, ``jackknife``, ``left_out`` and ``scheme`` say where the split sits in its scheme's grid:
    ``jackknife`` is the replicate index (None: no jackknife) and ``left_out`` the training trial that
    replicate trains without.
    """

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    fold: int = 0
    jackknife: int | None = None
    left_out: int | None = None
    scheme: str = "holdout"

    def __post_init__(self) -> None:
        for role in ("train", "val", "test"):
            object.__setattr__(self, role, tuple(int(i) for i in getattr(self, role)))
        object.__setattr__(self, "fold", int(self.fold))
        for name in ("jackknife", "left_out"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))
        if not self.train:
            raise ValueError(f"split has no training trials: {self}")
        for role in ("train", "val", "test"):
            twice = sorted(i for i, c in Counter(getattr(self, role)).items() if c > 1)
            if twice:
                raise ValueError(f"{role} lists trial(s) {twice} more than once: {self}")
        overlap = (
            (set(self.train) & set(self.val)) | (set(self.train) & set(self.test)) | (set(self.val) & set(self.test))
        )
        if overlap:
            raise ValueError(f"trials {sorted(overlap)} are in more than one of train/val/test: {self}")
        if (self.jackknife is None) != (self.left_out is None):
            raise ValueError(f"jackknife and left_out must both be set or both be None: {self}")
        if self.left_out is not None and self.left_out in (*self.train, *self.val, *self.test):
            raise ValueError(f"left-out trial {self.left_out} is still in train/val/test: {self}")

    def check(self, n_trials: int) -> Split:
        extra = () if self.left_out is None else (self.left_out,)
        bad = sorted(i for i in (*self.train, *self.val, *self.test, *extra) if not 0 <= i < n_trials)
        if bad:
            raise ValueError(f"split names trials {bad} but there are only {n_trials} trials (ids 0..{n_trials - 1})")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "fold": self.fold,
            "jackknife": self.jackknife,
            "left_out": self.left_out,
            "scheme": self.scheme,
        }


# ----------------------------------------------------------------------------------------------------------- helpers


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _refuse_float_one(size: Any, what: str) -> None:
    """1.0 reads both as "100% of the trials" and as "one trial": refuse it rather than guess."""
    if isinstance(size, (float, np.floating)) and size == 1.0:
        raise ValueError(f"{what}={size!r} is ambiguous: use {what}=1 for one trial or a fraction < 1 of all trials")


def _count(size: float | int, n: int, what: str) -> int:
    """holdout's sizes: 0 (none), a fraction in (0, 1) of n trials (at least one trial), or a count >= 1."""
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what}={size!r} is invalid: {what} must be a fraction in [0, 1) or a whole number of trials")
    _refuse_float_one(size, what)
    if isinstance(size, (float, np.floating)) and 0 <= size < 1:
        return max(1, round(float(size) * n)) if size > 0 else 0
    if not float(size).is_integer() or size < 0:
        raise ValueError(f"{what}={size!r} is invalid: {what} must be a fraction in [0, 1) or a whole number of trials")
    return int(size)


def _val_count(val_size: float | int, n_trials: int) -> int:
    """Validation trials of kfold / leave_one_out / pairs: a count >= 1, or a fraction in (0, 1) of all trials."""
    _refuse_float_one(val_size, "val_size")
    if isinstance(val_size, (float, np.floating)) and 0 < val_size < 1:
        return max(1, round(float(val_size) * n_trials))
    whole = _is_int(val_size) or (isinstance(val_size, (float, np.floating)) and float(val_size).is_integer())
    if whole and val_size >= 1:
        return int(val_size)
    raise ValueError(
        f"val_size={val_size!r} is invalid: give a whole number of validation trials >= 1, "
        f"or a fraction in (0, 1) of all trials (at least one trial)"
    )


def _explicit_ids(ids: Any, what: str, size_arg: str) -> list[int] | None:
    """holdout's explicit ``test`` / ``val`` trial ids as a list of ints (None stays None); each id once."""
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{what}={ids!r} must be a list of integer trial ids (e.g. {what}=[0, 3]), not a string")
    if _is_int(ids) or isinstance(ids, (float, np.floating)):
        raise ValueError(
            f"{what}={ids!r} must be a list of trial ids (e.g. {what}=[{ids}]); to draw a number or fraction of "
            f"trials, use {size_arg}={ids}"
        )
    ids = list(ids)
    bad = [i for i in ids if not _is_int(i)]
    if bad:
        raise ValueError(f"{what}={ids!r} must hold integer trial ids; got {bad}")
    ids = [int(i) for i in ids]
    twice = sorted(i for i, c in Counter(ids).items() if c > 1)
    if twice:
        raise ValueError(f"{what}={ids} lists trial(s) {twice} more than once; give each trial id once")
    return ids


def _check_n_trials(n_trials: Any, scheme: str, minimum: int) -> int:
    if not _is_int(n_trials) or n_trials < minimum:
        raise ValueError(f"n_trials={n_trials!r}: {scheme} needs at least {minimum} trials")
    return int(n_trials)


def _check_seed(seed: Any) -> int:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: give a non-negative integer")
    return int(seed)


def _check_index(name: str, value: Any, n: int, where: str) -> int:
    """``value`` must be an int in 0..n-1; ``where`` completes the message (e.g. 'for kfold with n_folds=5')."""
    valid = f"valid {name}s are 0..{n - 1}" if n > 0 else f"there are no valid {name}s"
    if not _is_int(value):
        raise ValueError(f"{name}={value!r} is not an integer {where}: {valid}")
    if value < 0:
        raise ValueError(f"{name}={value} is negative {where}: {valid}")
    if value >= n:
        raise ValueError(f"{name}={value} is out of range {where}: {valid}")
    return int(value)


def _finish(
    scheme: str,
    n_trials: int,
    fold: int,
    test: Sequence[int],
    order: Sequence[int],
    n_val: int,
    jackknife: int | None,
    val: Sequence[int] | None = None,
) -> Split:
    """Validation trials (the first ``n_val`` of ``order``, a permutation of the non-test trials, unless
    ``val`` is given), the jackknife pool (the rest, sorted) and the replicate ``jackknife`` of it."""
    test = sorted(int(i) for i in test)
    where = f"{scheme} fold {fold} of {n_trials} trials ({len(test)} test"
    if val is None:
        if n_val >= len(order):
            raise ValueError(
                f"too few trials: {where}, {len(order)} others); val_size asks for {n_val} validation trials "
                f"and leaves no training trial: at most {len(order) - 1} validation trials fit"
            )
        val = order[:n_val]
    val = sorted(int(i) for i in val)
    exclude = set(test) | set(val)
    pool = [i for i in range(n_trials) if i not in exclude]
    if not pool:
        raise ValueError(f"too few trials: {where}, {len(val)} validation) leaves no training trial")
    left_out = None
    if jackknife is not None:
        _check_jackknife_arg(jackknife, scheme, fold, n_trials, test, len(val))
        jackknife = int(jackknife)
        if len(pool) < 2:
            raise ValueError(
                f"too few trials: {where}, {len(val)} validation) has 1 training trial; jackknife={jackknife} "
                f"would leave no training trial (a jackknife needs at least 2 training trials)"
            )
        left_out = pool[jackknife]
    train = [i for i in pool if i != left_out]
    split = Split(
        tuple(train), tuple(val), tuple(test), fold=fold, jackknife=jackknife, left_out=left_out, scheme=scheme
    )
    return split.check(n_trials)


@functools.lru_cache(maxsize=4096)
def _rest_order(n_trials: int, test: tuple[int, ...], *key: int) -> tuple[int, ...]:
    """The non-test trials in a permutation seeded by ``key`` (seed, fold or pair): the validation draw.
    Cached: every jackknife replicate of a fold reuses it."""
    excluded = set(test)
    rest = np.array([i for i in range(n_trials) if i not in excluded], dtype=int)
    return tuple(int(i) for i in np.random.default_rng(list(key)).permutation(rest))


@functools.lru_cache(maxsize=256)
def _permutation(n_trials: int, seed: int) -> tuple[int, ...]:
    """All trials permuted by ``seed`` (the kfold order). Cached: every fold and replicate reuses it."""
    return tuple(int(i) for i in np.random.default_rng(seed).permutation(n_trials))


def _check_jackknife_arg(
    jackknife: Any, scheme: str, fold: int, n_trials: int, test: Sequence[int], n_val: int
) -> None:
    """Range check of ``jackknife`` with the pool size stated in the message (pool = non-test minus val)."""
    if jackknife is None:
        return
    pool = n_trials - len(test) - n_val
    if pool <= 0:
        return  # _finish reports "too few trials"
    if not _is_int(jackknife) or not 0 <= jackknife < pool:
        word = "trial" if pool == 1 else "trials"
        raise ValueError(
            f"jackknife={jackknife!r} is out of range for {scheme}: fold {fold} has {pool} training {word} to "
            f"leave out: valid 0..{pool - 1}"
        )


# ----------------------------------------------------------------------------------------------------------- schemes


def holdout(
    n_trials: int,
    test: Sequence[int] | None = None,
    val: Sequence[int] | None = None,
    test_size: float | int = 0.2,
    val_size: float | int = 0.1,
    seed: int = 0,
    fold: int = 0,
    jackknife: int | None = None,
) -> Split:
    """Hold out fixed test and validation trials; the rest train.

    ``test`` and ``val`` give trial ids explicitly (each id once); when omitted, ``test_size`` / ``val_size``
    trials are drawn from a permutation seeded by ``seed``: a float in (0, 1) is a fraction of all trials (at
    least one trial), an int >= 1 a count, 0 none; the float 1.0 is refused as ambiguous (100% or one trial?).
    Validation trials always come from the trials that are not test trials. There is one fold (``fold`` must be
    0); ``jackknife=j`` trains without the j-th training trial (sorted).
    """
    if _is_int(n_trials) and n_trials < 2:
        raise ValueError(f"a hold-out split needs at least 2 trials (one to train, one to test); got {n_trials}")
    n_trials = _check_n_trials(n_trials, "holdout", 2)
    seed = _check_seed(seed)
    fold = _check_index("fold", fold, 1, "for holdout (one fold)")
    order = [int(i) for i in np.random.default_rng(seed).permutation(n_trials)]
    test, val = _explicit_ids(test, "test", "test_size"), _explicit_ids(val, "val", "val_size")
    if test is None:
        test = sorted(order[: _count(test_size, n_trials, "test_size")])
    rest = [i for i in order if i not in set(test)]
    if val is None:
        val = sorted(rest[: _count(val_size, n_trials, "val_size")])
    train = sorted(i for i in range(n_trials) if i not in set(test) | set(val))
    if not train:
        raise ValueError(f"hold-out split of {n_trials} trials with test={test} and val={val} leaves no training trial")
    base = Split(tuple(train), tuple(val), tuple(test)).check(n_trials)  # explicit ids are validated here
    if jackknife is None:
        return base
    _check_jackknife_arg(jackknife, "holdout", fold, n_trials, base.test, len(base.val))
    split = _finish("holdout", n_trials, fold, base.test, [], 0, jackknife, val=base.val)
    # keep the caller's order of explicit test / val ids, as without jackknife
    return Split(split.train, base.val, base.test, fold, split.jackknife, split.left_out, "holdout")


def _kfold_bounds(n_trials: int, n_folds: int, fold: int) -> tuple[int, int]:
    """Contiguous near-equal folds: the first ``n_trials % n_folds`` folds have one trial more."""
    size, extra = divmod(n_trials, n_folds)
    start = fold * size + min(fold, extra)
    return start, start + size + (fold < extra)


def _check_n_folds(n_folds: Any, n_trials: int) -> int:
    if not _is_int(n_folds) or n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r} is invalid: kfold needs an integer n_folds >= 2 (valid 2..{n_trials})")
    if n_folds > n_trials:
        raise ValueError(f"n_folds={n_folds} but there are only {n_trials} trials: valid n_folds are 2..{n_trials}")
    return int(n_folds)


def kfold(
    n_trials: int,
    n_folds: int = 5,
    fold: int = 0,
    jackknife: int | None = None,
    val_size: float | int = 1,
    seed: int = 0,
) -> Split:
    """K-fold over trials: trials permuted by ``seed``, cut into ``n_folds`` contiguous near-equal test folds
    (every trial is tested exactly once over the folds). Validation trials are drawn from the other trials by
    (seed, fold); ``jackknife=j`` trains without the j-th remaining training trial (sorted)."""
    n_trials = _check_n_trials(n_trials, "kfold", 2)
    n_folds = _check_n_folds(n_folds, n_trials)
    seed = _check_seed(seed)
    fold = _check_index("fold", fold, n_folds, f"for kfold with n_folds={n_folds}")
    n_val = _val_count(val_size, n_trials)
    start, stop = _kfold_bounds(n_trials, n_folds, fold)
    test = sorted(_permutation(n_trials, seed)[start:stop])
    _check_jackknife_arg(jackknife, "kfold", fold, n_trials, test, n_val)
    return _finish("kfold", n_trials, fold, test, _rest_order(n_trials, tuple(test), seed, fold), n_val, jackknife)


def leave_one_out(
    n_trials: int,
    fold: int = 0,
    jackknife: int | None = None,
    val_size: float | int = 1,
    seed: int = 0,
) -> Split:
    """Leave one trial out: fold ``k`` tests trial ``k``. Validation trials are drawn from the other trials by
    (seed, fold); ``jackknife=j`` trains without the j-th remaining training trial (sorted)."""
    n_trials = _check_n_trials(n_trials, "leave_one_out", 2)
    seed = _check_seed(seed)
    fold = _check_index("fold", fold, n_trials, f"for leave_one_out with {n_trials} trials")
    n_val = _val_count(val_size, n_trials)
    test = (fold,)
    _check_jackknife_arg(jackknife, "leave_one_out", fold, n_trials, test, n_val)
    return _finish(
        "leave_one_out", n_trials, fold, test, _rest_order(n_trials, tuple(test), seed, fold), n_val, jackknife
    )


def pair_of(n_trials: int, fold: int) -> tuple[int, int]:
    """The ``fold``-th unordered pair (i, j), i < j, of ``n_trials`` trials in lexicographic order."""
    # pairs starting with i occupy folds [c(i), c(i) + n - 1 - i) where c(i) = i*n - i*(i+1)/2
    i = 0
    while fold >= n_trials - 1 - i:
        fold -= n_trials - 1 - i
        i += 1
    return i, i + 1 + fold


def pairs(
    n_trials: int,
    fold: int = 0,
    val_size: float | int = 1,
    seed: int = 0,
    jackknife: int | None = None,
) -> Split:
    """naplab/DSTRF's pairing: fold ``k`` tests the k-th unordered pair (i, j), i < j, in lexicographic order
    (N(N-1)/2 folds). The model is test trial i's jackknife replicate without j and test trial j's without i,
    so ``jackknife`` must be None. Validation trials are drawn from the other trials by (seed, i, j)."""
    if jackknife is not None:
        raise ValueError(
            f"jackknife={jackknife!r} is not allowed for pairs: the pairing already is a jackknife (each pair "
            f"model is test trial i's replicate without j and vice versa); use jackknife=None"
        )
    n_trials = _check_n_trials(n_trials, "pairs", 2)
    seed = _check_seed(seed)
    n_pairs = n_trials * (n_trials - 1) // 2
    fold = _check_index("fold", fold, n_pairs, f"for pairs with {n_trials} trials ({n_pairs} pairs)")
    n_val = _val_count(val_size, n_trials)
    i, j = pair_of(n_trials, fold)
    return _finish("pairs", n_trials, fold, (i, j), _rest_order(n_trials, (i, j), seed, i, j), n_val, None)


SCHEMES: dict[str, Callable[..., Split]] = {
    "holdout": holdout,
    "kfold": kfold,
    "leave_one_out": leave_one_out,
    "pairs": pairs,
}


# -------------------------------------------------------------------------------------------------------------- grid


def _resolve(
    scheme: str | Callable[..., Split], kwargs: dict[str, Any]
) -> tuple[str, Callable[..., Split], dict[str, Any]]:
    """The scheme's name, function and keyword arguments (a ``functools.partial``, e.g. an instantiated
    ``conf/split`` config, contributes its keywords; explicit ``kwargs`` win)."""
    if isinstance(scheme, functools.partial):
        if scheme.args:
            raise ValueError(f"split partial {scheme!r} must bind keyword arguments only (n_trials is passed later)")
        kwargs = {**scheme.keywords, **kwargs}
        scheme = scheme.func
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme={scheme!r} is unknown: valid schemes are {sorted(SCHEMES)}")
        fn = SCHEMES[scheme]
    else:
        fn = scheme
        if fn not in SCHEMES.values():
            raise ValueError(f"scheme={scheme!r} is unknown: valid schemes are {sorted(SCHEMES)}")
    name = next(k for k, v in SCHEMES.items() if v is fn)
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params) - {"n_trials"})
    if unknown:
        raise TypeError(f"{name} has no argument(s) {unknown}; its arguments are {list(params)[1:]}")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("n_trials", "fold", "jackknife")}
    return name, fn, kwargs


def n_folds(scheme: str | Callable[..., Split], n_trials: int, **kwargs: Any) -> int:
    """Number of folds of ``scheme`` for ``n_trials`` trials: 1 (holdout), ``n_folds`` (kfold), ``n_trials``
    (leave_one_out) or N(N-1)/2 (pairs). ``kwargs`` are the scheme's arguments (``fold`` / ``jackknife`` are
    ignored)."""
    name, fn, kwargs = _resolve(scheme, kwargs)
    fn(n_trials, fold=0, **kwargs)  # validates every argument
    if name == "holdout":
        return 1
    if name == "kfold":
        return int(kwargs.get("n_folds", inspect.signature(kfold).parameters["n_folds"].default))
    if name == "leave_one_out":
        return int(n_trials)
    return int(n_trials) * (int(n_trials) - 1) // 2


def n_jackknife(scheme: str | Callable[..., Split], n_trials: int, fold: int, **kwargs: Any) -> int:
    """Number of jackknife replicates of ``fold``: its pool size (training trials without jackknife).
    0 for pairs, whose folds take no further jackknife (the pairing already is one)."""
    name, fn, kwargs = _resolve(scheme, kwargs)
    split = fn(n_trials, fold=fold, **kwargs)
    return 0 if name == "pairs" else len(split.train)


def split_grid(
    scheme: str | Callable[..., Split], n_trials: int, jackknife: bool = False, **kwargs: Any
) -> list[tuple[int, int | None]]:
    """Every (fold, jackknife) job of ``scheme``: ``(fold, None)`` per fold when ``jackknife`` is False, else
    ``(fold, j)`` for every j of every fold's pool. For pairs ``jackknife=True`` is the same as False: each pair
    model already is the jackknife replicate of both its test trials. Every job's split is built once, so any
    invalid argument raises here, before training starts."""
    name, fn, kwargs = _resolve(scheme, kwargs)
    grid: list[tuple[int, int | None]] = []
    for fold in range(n_folds(fn, n_trials, **kwargs)):
        if not jackknife or name == "pairs":
            grid.append((fold, None))
            continue
        for j in range(n_jackknife(fn, n_trials, fold, **kwargs)):
            fn(n_trials, fold=fold, jackknife=j, **kwargs)  # a 1-trial pool raises "too few trials"
            grid.append((fold, j))
    return grid
