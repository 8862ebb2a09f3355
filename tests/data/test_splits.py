import pytest

from dstrf.data import Split, holdout


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
    assert split.as_dict() == {"train": [2, 3], "val": [1], "test": [0]}
    with pytest.raises(ValueError, match="no training trials"):
        Split([], [1], [0])
