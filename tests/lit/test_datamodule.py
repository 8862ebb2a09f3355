import pytest
import torch

from dstrf.data import Split, holdout
from dstrf.lit import TrialDataModule, collate_trials


def test_batches_are_padded_standardized_trials_with_lengths(small_trials):
    dm = TrialDataModule(small_trials, Split([0, 1, 2], [3], [4]), batch_size=3)
    batch = next(iter(dm.val_dataloader()))
    assert batch["trial"].tolist() == [3] and batch["lengths"].tolist() == [90]
    train = [b for b in dm.train_dataloader()]
    assert sorted(sum((b["trial"].tolist() for b in train), [])) == [0, 1, 2]
    b = train[0]
    assert b["stimulus"].shape == (len(b["trial"]), 8, int(b["lengths"].max()))
    for row, (trial, length) in enumerate(zip(b["trial"].tolist(), b["lengths"].tolist())):
        expected = dm.standardization.stimulus(small_trials[trial].stimulus)
        assert torch.equal(b["stimulus"][row, :, :length], expected)
        assert torch.all(b["stimulus"][row, :, length:] == 0) and torch.all(b["response"][row, :, length:] == 0)


def test_standardization_comes_from_training_trials_only(small_trials):
    dm = TrialDataModule(small_trials, Split([0, 1], [2], [3, 4]))
    x = torch.cat([small_trials[0].stimulus, small_trials[1].stimulus], dim=1)
    torch.testing.assert_close(dm.standardization.stimulus_mean, x.mean(1))
    raw = TrialDataModule(small_trials, Split([0, 1], [2], [3, 4]), standardize=False, standardize_response=False)
    assert torch.equal(raw.standardization.stimulus_mean, torch.zeros(8))
    assert torch.equal(raw.standardization.response_std, torch.ones(2))


def test_split_from_a_partial_and_errors(small_trials):
    dm = TrialDataModule(small_trials, lambda n: holdout(n, test=[4], val=[0]))
    assert dm.split == Split([1, 2, 3], [0], [4])
    with pytest.raises(ValueError, match="no validation trials"):
        TrialDataModule(small_trials, Split([0, 1, 2], [], [3]))
    with pytest.raises(ValueError, match=r"split names trials \[7\] but there are only 5"):
        TrialDataModule(small_trials, Split([0, 1, 2], [3], [7]))
    with pytest.raises(TypeError, match="dstrf.data.Trials"):
        TrialDataModule([1, 2], Split([0], [1], []))
    with pytest.raises(ValueError, match="batch_size"):
        TrialDataModule(small_trials, Split([0], [1], [2]), batch_size=0)


def test_collate_keeps_trial_ids():
    items = [
        {"stimulus": torch.ones(2, 3), "response": torch.ones(1, 3), "trial": 7},
        {"stimulus": torch.ones(2, 5), "response": torch.ones(1, 5), "trial": 2},
    ]
    batch = collate_trials(items)
    assert batch["trial"].tolist() == [7, 2] and batch["lengths"].tolist() == [3, 5]
    assert batch["stimulus"].shape == (2, 2, 5) and batch["stimulus"][0, :, 3:].abs().sum() == 0
