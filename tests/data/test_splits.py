from collections import Counter
from itertools import combinations
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from dstrf.data import Split, holdout
from dstrf.data.splits import SCHEMES, kfold, leave_one_out, n_folds, n_jackknife, pairs, split_grid

CONF = Path(__file__).resolve().parents[2] / "conf" / "split"


@pytest.mark.parametrize("n_trials", [3, 5, 10, 37])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holdout_partitions_trials_deterministically(n_trials, seed):
    split = holdout(n_trials, seed=seed)
    assert split == holdout(n_trials, seed=seed)
    assert sorted(split.train + split.val + split.test) == list(range(n_trials))
    assert not set(split.test) & (set(split.train) | set(split.val))
    assert len(split.test) == max(1, round(0.2 * n_trials)) and len(split.val) == max(1, round(0.1 * n_trials))


def test_holdout_explicit_trials_and_counts():
    split = holdout(10, test=[9, 8], val=[0])
    assert split.test == (9, 8) and split.val == (0,) and split.train == tuple(range(1, 8))
    split = holdout(10, test_size=3, val_size=2, seed=4)
    assert (len(split.test), len(split.val), len(split.train)) == (3, 2, 5)
    assert holdout(10, seed=0) != holdout(10, seed=1)


def test_holdout_errors():
    with pytest.raises(ValueError, match=r"split names trials \[12\] but there are only 10 trials"):
        holdout(10, test=[12])
    with pytest.raises(ValueError, match=r"trials \[3\] are in more than one"):
        holdout(10, test=[3], val=[3])
    with pytest.raises(ValueError, match="leaves no training trial"):
        holdout(3, test=[0, 1], val=[2])
    with pytest.raises(ValueError, match="at least 2 trials"):
        holdout(1)
    with pytest.raises(ValueError, match="test_size must be a fraction"):
        holdout(10, test_size=-2)


def test_split_roles_are_ints_and_serialisable():
    split = Split([2, 3], [1], [0])
    assert split.as_dict() == {
        "train": [2, 3],
        "val": [1],
        "test": [0],
        "fold": 0,
        "jackknife": None,
        "left_out": None,
        "scheme": "holdout",
    }
    with pytest.raises(ValueError, match="no training trials"):
        Split([], [1], [0])


# ----------------------------------------------------------------------------------------- folds and jackknife


def _test_size(name, n, fold, kwargs):
    """Independent expectation of the number of test trials of a fold."""
    if name == "kfold":
        k = kwargs["n_folds"]
        return n // k + (fold < n % k)
    return {"leave_one_out": 1, "pairs": 2}[name]


def _cases():
    for n in range(3, 16):
        for seed in (0, 1, 2):
            for val_size in (1, 2):
                for k in sorted({2, min(5, n), n}):
                    yield "kfold", n, {"n_folds": k, "val_size": val_size, "seed": seed}
                yield "leave_one_out", n, {"val_size": val_size, "seed": seed}
                yield "pairs", n, {"val_size": val_size, "seed": seed}


def test_schemes_properties_over_every_fold_and_jackknife():
    checked = 0
    for name, n, kwargs in _cases():
        fn = SCHEMES[name]
        n_val = kwargs["val_size"]
        n_f = {"kfold": kwargs.get("n_folds"), "leave_one_out": n, "pairs": n * (n - 1) // 2}[name]
        tested = Counter()
        test_sets = []
        for fold in range(n_f):
            if n - _test_size(name, n, fold, kwargs) - n_val < 1:
                with pytest.raises(ValueError, match="too few trials.*leaves no training trial"):
                    fn(n, fold=fold, **kwargs)
                continue
            full = fn(n, fold=fold, **kwargs)
            assert full == fn(n, fold=fold, **kwargs)  # determinism
            assert (full.fold, full.scheme, full.jackknife, full.left_out) == (fold, name, None, None)
            train, val, test = set(full.train), set(full.val), set(full.test)
            assert len(test) == _test_size(name, n, fold, kwargs) and len(val) == n_val
            assert not (train & val or train & test or val & test)
            assert train | val | test == set(range(n))  # without jackknife every trial has a role
            assert full.train == tuple(sorted(full.train))
            tested.update(full.test)
            test_sets.append(full.test)
            pool = full.train
            if name == "pairs":
                assert n_jackknife(name, n, fold, **kwargs) == 0
                continue
            assert n_jackknife(name, n, fold, **kwargs) == len(pool)
            for j in range(len(pool)):
                if len(pool) < 2:
                    with pytest.raises(ValueError, match="too few trials.*would leave no training trial"):
                        fn(n, fold=fold, jackknife=j, **kwargs)
                    continue
                rep = fn(n, fold=fold, jackknife=j, **kwargs)
                assert rep == fn(n, fold=fold, jackknife=j, **kwargs)
                assert rep.test == full.test and rep.val == full.val
                assert rep.train == tuple(t for t in pool if t != pool[j])
                assert (rep.fold, rep.jackknife, rep.left_out, rep.scheme) == (fold, j, pool[j], name)
                assert not set(rep.train) & (val | test) and rep.left_out not in rep.val + rep.test
                checked += 1
            with pytest.raises(ValueError, match=f"jackknife={len(pool)} is out of range"):
                fn(n, fold=fold, jackknife=len(pool), **kwargs)
        if len(test_sets) < n_f:
            continue  # some folds had too few trials
        if name == "pairs":
            assert test_sets == list(combinations(range(n), 2))
            assert tested == {i: n - 1 for i in range(n)}
        else:
            assert tested == {i: 1 for i in range(n)}  # every trial tested exactly once over the folds
    assert checked > 5000


@pytest.mark.parametrize("n", range(6, 16))
def test_kfold_changes_with_seed_and_val_depends_on_seed_and_fold_only(n):
    folds = lambda seed: [kfold(n, fold=f, seed=seed).test for f in range(5)]  # noqa: E731
    assert folds(0) != folds(1)
    assert kfold(n, fold=2, jackknife=1, seed=3).val == kfold(n, fold=2, seed=3).val
    assert leave_one_out(n, fold=3, jackknife=0, val_size=2).val == leave_one_out(n, fold=3, val_size=2).val


def test_val_size_fraction_and_pairs_layout():
    assert len(kfold(10, val_size=0.25).val) == 2 and len(kfold(10, val_size=0.01).val) == 1
    assert len(leave_one_out(10, val_size=3.0).val) == 3
    split = pairs(5, fold=4)  # (0,1) (0,2) (0,3) (0,4) (1,2)
    assert split.test == (1, 2) and not set(split.val) & {1, 2}


def test_holdout_fold_and_jackknife():
    base = holdout(10, seed=3)
    assert base.as_dict()["scheme"] == "holdout" and (base.fold, base.jackknife) == (0, None)
    assert holdout(10, seed=3, fold=0) == base
    for j, t in enumerate(base.train):
        rep = holdout(10, seed=3, jackknife=j)
        assert rep.test == base.test and rep.val == base.val and rep.left_out == t
        assert rep.train == tuple(x for x in base.train if x != t)
    rep = holdout(10, test=[9, 8], val=[0], jackknife=0)
    assert rep.test == (9, 8) and rep.val == (0,) and rep.left_out == 1 and rep.train == tuple(range(2, 8))


def test_grid_sizes():
    pools = [n_jackknife("kfold", 10, f, n_folds=5) for f in range(5)]
    assert pools == [7] * 5 and n_folds("kfold", 10, n_folds=5) == 5
    assert split_grid("kfold", 10, jackknife=True, n_folds=5) == [(f, j) for f in range(5) for j in range(7)]
    assert split_grid(kfold, 10, jackknife=False) == [(f, None) for f in range(5)]
    assert (
        len(split_grid("kfold", 11, jackknife=True, n_folds=3, val_size=2))
        == sum(n_jackknife("kfold", 11, f, n_folds=3, val_size=2) for f in range(3))
        == 5 + 5 + 6
    )
    assert n_folds("leave_one_out", 8) == 8
    assert split_grid("leave_one_out", 8, jackknife=True) == [(f, j) for f in range(8) for j in range(6)]
    assert n_folds("pairs", 7) == 21
    assert (
        split_grid("pairs", 7, jackknife=True)
        == split_grid("pairs", 7, jackknife=False)
        == [(f, None) for f in range(21)]
    )
    assert split_grid("holdout", 10, jackknife=True) == [(0, j) for j in range(7)]
    # fold / jackknife from a config are ignored; a partial contributes its keywords
    from functools import partial

    assert split_grid(partial(kfold, n_folds=4, fold=3, jackknife=2), 8) == [(f, None) for f in range(4)]
    # a 1-trial pool cannot be jackknifed: the grid fails up front
    with pytest.raises(ValueError, match="too few trials"):
        split_grid("leave_one_out", 4, jackknife=True, val_size=2)
    with pytest.raises(TypeError, match="no argument"):
        split_grid("kfold", 10, n_fold=3)
    with pytest.raises(ValueError, match="scheme='lopo' is unknown"):
        n_folds("lopo", 10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kfold(10, fold=5), r"fold=5 is out of range for kfold with n_folds=5: valid folds are 0\.\.4"),
        (lambda: kfold(10, fold=-1), r"fold=-1 is negative for kfold with n_folds=5: valid folds are 0\.\.4"),
        (
            lambda: leave_one_out(6, fold=6),
            r"fold=6 is out of range for leave_one_out with 6 trials: valid folds are 0\.\.5",
        ),
        (
            lambda: pairs(4, fold=6),
            r"fold=6 is out of range for pairs with 4 trials \(6 pairs\): valid folds are 0\.\.5",
        ),
        (lambda: holdout(10, fold=1), r"fold=1 is out of range for holdout \(one fold\): valid folds are 0\.\.0"),
        (
            lambda: leave_one_out(8, jackknife=7),
            r"jackknife=7 is out of range for leave_one_out: fold 0 has 6 training trials to leave out: valid 0\.\.5",
        ),
        (
            lambda: kfold(10, jackknife=-1),
            r"jackknife=-1 is out of range for kfold: fold 0 has 7 training trials .*valid 0\.\.6",
        ),
        (
            lambda: holdout(10, jackknife=7),
            r"jackknife=7 is out of range for holdout: fold 0 has 7 training trials .*valid 0\.\.6",
        ),
        (lambda: pairs(6, jackknife=0), r"jackknife=0 is not allowed for pairs: the pairing already is a jackknife"),
        (lambda: kfold(10, n_folds=12), r"n_folds=12 but there are only 10 trials: valid n_folds are 2\.\.10"),
        (lambda: kfold(10, n_folds=1), r"n_folds=1 is invalid: kfold needs an integer n_folds >= 2"),
        (
            lambda: leave_one_out(3, val_size=2),
            r"too few trials: leave_one_out fold 0 of 3 trials .*leaves no training trial",
        ),
        (lambda: pairs(3), r"too few trials: pairs fold 0 of 3 trials .*leaves no training trial"),
        (
            lambda: kfold(6, n_folds=2, val_size=2, jackknife=0),
            r"too few trials: .*jackknife=0 would leave no training trial",
        ),
        (
            lambda: kfold(10, val_size=0),
            r"val_size=0 is invalid: give a whole number of validation trials >= 1, or a fraction in \(0, 1\)",
        ),
        (lambda: leave_one_out(10, val_size=-1), r"val_size=-1 is invalid"),
        (lambda: pairs(10, val_size=1.5), r"val_size=1\.5 is invalid"),
        (lambda: kfold(10, seed=-1), r"seed=-1 is invalid"),
        (lambda: leave_one_out(1), r"n_trials=1: leave_one_out needs at least 2 trials"),
    ],
)
def test_errors_name_argument_value_and_range(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_split_configs_instantiate(path):
    cfg = OmegaConf.load(path)
    assert cfg._target_.startswith("dstrf.data.splits.") and cfg._partial_
    make = hydra.utils.instantiate(cfg)
    split = make(10)
    assert isinstance(split, Split) and split.check(10).scheme == cfg._target_.rsplit(".", 1)[-1]
    assert split_grid(make, 10)[0] == (0, None)


def test_config_set_covers_every_scheme():
    targets = {OmegaConf.load(p)._target_.rsplit(".", 1)[-1] for p in CONF.glob("*.yaml")}
    assert targets == set(SCHEMES)


# ------------------------------------------------------------------------------- explicit ids and sizes (issue 10)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: holdout(10, test=[0, 0]),
            r"test=\[0, 0\] lists trial\(s\) \[0\] more than once; give each trial id once",
        ),
        (
            lambda: holdout(10, test=[1], val=[2, 3, 2, 3]),
            r"val=\[2, 3, 2, 3\] lists trial\(s\) \[2, 3\] more than once",
        ),
        (
            lambda: holdout(10, test=3),
            r"test=3 must be a list of trial ids \(e\.g\. test=\[3\]\); to draw a number or "
            r"fraction of trials, use test_size=3",
        ),
        (lambda: holdout(10, val=0.2), r"val=0\.2 must be a list of trial ids .*use val_size=0\.2"),
        (
            lambda: holdout(10, test="0,1"),
            r"test='0,1' must be a list of integer trial ids \(e\.g\. test=\[0, 3\]\), not a string",
        ),
        (lambda: holdout(10, test=[0, 1.5]), r"test=\[0, 1\.5\] must hold integer trial ids; got \[1\.5\]"),
        (
            lambda: holdout(10, test_size=1.0),
            r"test_size=1\.0 is ambiguous: use test_size=1 for one trial or a fraction < 1",
        ),
        (
            lambda: holdout(10, val_size=1.0),
            r"val_size=1\.0 is ambiguous: use val_size=1 for one trial or a fraction < 1",
        ),
        (lambda: holdout(10, test_size="a"), r"test_size='a' is invalid: test_size must be a fraction in \[0, 1\)"),
        (lambda: kfold(10, val_size=1.0), r"val_size=1\.0 is ambiguous: use val_size=1 for one trial"),
        (lambda: leave_one_out(10, val_size=1.0), r"val_size=1\.0 is ambiguous"),
        (lambda: pairs(10, val_size=1.0), r"val_size=1\.0 is ambiguous"),
        (lambda: Split([2, 3, 2], [1], [0]), r"train lists trial\(s\) \[2\] more than once"),
    ],
    ids=[
        "test-twice",
        "val-twice",
        "test-int",
        "val-float",
        "test-string",
        "test-float-id",
        "test_size-1.0",
        "val_size-1.0",
        "test_size-string",
        "kfold-val_size-1.0",
        "loo-val_size-1.0",
        "pairs-val_size-1.0",
        "Split-train-twice",
    ],
)
def test_explicit_ids_and_sizes_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_sizes_one_and_fractions_are_unambiguous():
    assert len(holdout(10, test_size=1, val_size=1).test) == 1
    assert len(holdout(10, test_size=0.5, val_size=0.1).test) == 5
    assert len(holdout(10, test_size=2.0).test) == 2  # a whole float above 1 is still a count
    assert len(kfold(10, val_size=1).val) == 1


def test_duplicate_ids_from_a_hydra_override_are_refused():
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "holdout.yaml"), OmegaConf.from_dotlist(["test=[0,0]"]))
    make = hydra.utils.instantiate(cfg)
    with pytest.raises(ValueError, match=r"test=\[0, 0\] lists trial\(s\) \[0\] more than once"):
        make(10)
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "holdout.yaml"), OmegaConf.from_dotlist(["test=[4,0]", "val=[7]"]))
    assert hydra.utils.instantiate(cfg)(10).test == (4, 0)
