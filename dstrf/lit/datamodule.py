"""Trial-wise train / validation / test data for Lightning, with padding and masks for variable-length trials."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data.splits import Split
from ..data.trials import Standardization, Trials

__all__ = ["TrialDataModule", "TrialDataset", "EvalShardSampler", "collate_trials"]


class TrialDataset(Dataset):
    """Whole standardized trials ``ids`` of ``trials``; item ``k`` is a dict with ``stimulus (F, T)``,
    ``response (N, T)`` and the integer ``trial`` id (its position in the full container)."""

    def __init__(self, trials: Trials, ids: tuple[int, ...], standardization: Standardization) -> None:
        self.trials, self.ids, self.standardization = trials, tuple(ids), standardization

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int | tuple[int, bool]) -> dict:
        k, pad = k if isinstance(k, tuple) else (k, False)
        trial = self.trials[self.ids[k]]
        return {
            "stimulus": self.standardization.stimulus(trial.stimulus),
            "response": self.standardization.response(trial.response),
            "trial": self.ids[k],
            "pad": pad,
        }


class EvalShardSampler(DistributedSampler):
    """Validation/test trials shared out over DDP ranks, each scored exactly once.

    Every rank must run the same number of batches, so the shards are evened out with repeated trials, as
    Lightning's default sampler does, but here each repeat is flagged ``pad`` and left out of every metric
    and prediction: the scores equal those of a single process.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self):
        n = len(self.dataset)
        padded = [(k % n, k >= n) for k in range(self.total_size)]
        return iter(padded[self.rank : self.total_size : self.num_replicas])


def collate_trials(items: list[dict]) -> dict:
    """Right-pad trials of different lengths with zeros into ``stimulus (B, F, T)`` and ``response (B, N, T)``.

    ``lengths (B,)`` says how many frames of each row are data; the padding never enters a loss or a metric
    (the module masks frames ``t >= lengths[b]``). Right padding cannot affect earlier outputs of a causal model.
    """
    lengths = torch.tensor([item["stimulus"].shape[-1] for item in items])
    n_frames = int(lengths.max())

    def pad(key: str) -> torch.Tensor:
        return torch.stack([torch.nn.functional.pad(item[key], (0, n_frames - item[key].shape[-1])) for item in items])

    return {
        "stimulus": pad("stimulus"),
        "response": pad("response"),
        "lengths": lengths,
        "trial": torch.tensor([item["trial"] for item in items]),
        "pad": torch.tensor([bool(item.get("pad", False)) for item in items]),
    }


class TrialDataModule(L.LightningDataModule):
    """Splits ``trials`` by whole trials and serves standardized, padded batches.

    Parameters
    ----------
    trials : Trials
        All trials of the experiment (validated on construction).
    split : Split or callable ``n_trials -> Split``
        Which trials train, validate (early stopping) and test. A callable (e.g. a Hydra ``_partial_`` of
        :func:`dstrf.data.holdout`) is called with the number of trials.
    batch_size : int
        Trials per batch.
    standardize : bool
        Z-score each stimulus band with the mean and std of the *training* trials only (test trials never
        inform any choice). After it, zero is the training mean: the value causal models pad with.
    standardize_response : bool
        Z-score each response channel likewise (turn off for count data with a Poisson loss).
    num_workers : int
        DataLoader workers (trials are in memory already; 0 is usually fastest).
    """

    def __init__(
        self,
        trials: Trials,
        split: Split | Callable[[int], Split],
        batch_size: int = 4,
        standardize: bool = True,
        standardize_response: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(trials, Trials):
            raise TypeError(f"trials must be a dstrf.data.Trials; got {type(trials).__name__}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive number of trials; got {batch_size}")
        self.trials = trials
        self.split = (split if isinstance(split, Split) else split(len(trials))).check(len(trials))
        if not self.split.val:
            raise ValueError(
                f"the split has no validation trials (needed for early stopping and checkpoints): {self.split}"
            )
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.standardize, self.standardize_response = bool(standardize), bool(standardize_response)
        fitted = Standardization.fit(trials, self.split.train)
        identity = Standardization.identity(trials.n_freqs, trials.n_channels)
        self.standardization = Standardization(
            fitted.stimulus_mean if standardize else identity.stimulus_mean,
            fitted.stimulus_std if standardize else identity.stimulus_std,
            fitted.response_mean if standardize_response else identity.response_mean,
            fitted.response_std if standardize_response else identity.response_std,
        )

    @property
    def n_freqs(self) -> int:
        return self.trials.n_freqs

    @property
    def n_channels(self) -> int:
        return self.trials.n_channels

    def _loader(self, ids: tuple[int, ...], shuffle: bool) -> DataLoader:
        dataset = TrialDataset(self.trials, ids, self.standardization)
        trainer = self.trainer
        sampler = None
        if not shuffle and trainer is not None and trainer.world_size > 1:
            sampler = EvalShardSampler(dataset, trainer.world_size, trainer.global_rank)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate_trials,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split.val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split.test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test trials, for ``trainer.predict`` (:meth:`EncoderModule.predict_step`)."""
        return self._loader(self.split.test, shuffle=False)
