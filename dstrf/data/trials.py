"""The trials container: the single place where input data is validated.

A *trial* is one stimulus presentation: a spectrogram ``stimulus`` of shape ``(F, T)`` (F frequency bands,
T frames at ``sfreq`` Hz), the trial-averaged neural ``response`` ``(N, T)`` (N channels: electrodes,
neurons) and optionally the single ``repeats`` ``(R, N, T)`` it was averaged from, for noise ceilings.
Trials may differ in length but not in F or N. Trial ids are the integer positions in the container;
every split, file name and table refers to trials by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Trial", "Trials", "Standardization"]


@dataclass(frozen=True)
class Trial:
    """One validated trial: float32 tensors ``stimulus (F, T)``, ``response (N, T)``, ``repeats (R, N, T)``."""

    stimulus: torch.Tensor
    response: torch.Tensor
    repeats: torch.Tensor | None
    name: str

    @property
    def n_frames(self) -> int:
        return self.stimulus.shape[-1]


def _as_float_tensor(value, what: str) -> torch.Tensor:
    """Convert array-like data to a float32 tensor; refuse non-numeric data and NaN/Inf with a clear message."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu()
        if array.dtype == torch.bool or array.is_complex():
            raise TypeError(f"{what} must be real numbers; got a tensor of dtype {array.dtype}")
        tensor = array.to(torch.float32)
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as error:  # ragged nested lists
            raise TypeError(f"{what} must be a numeric array; could not convert it ({error})") from None
        if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise TypeError(f"{what} must be a numeric array of real numbers; got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        n_bad = int((~finite).sum())
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
        raise ValueError(f"{what} contains {n_bad} non-finite value(s) ({kind}), the first at index {tuple(bad)}")
    return tensor


class Trials(Sequence):
    """A validated, ordered collection of trials.

    Parameters
    ----------
    stimuli : sequence of array-like ``(F, T_i)``
        One spectrogram per trial (F bands, T_i frames). F must be the same for every trial.
    responses : sequence of array-like ``(N, T_i)``
        Trial-averaged responses, the same number of frames as the trial's stimulus.
    sfreq : float
        Frame rate in Hz.
    freqs : array-like ``(F,)``, optional
        Centre frequency of each band in Hz (defaults to band indices 0..F-1).
    channel_names : sequence of str ``(N,)``, optional
        Defaults to ``"ch0", "ch1", ...``.
    repeats : sequence of array-like ``(R_i, N, T_i)``, optional
        Single-repeat responses, for noise ceilings.
    names : sequence of str, optional
        Human-readable trial names (defaults to ``"trial0", ...``); errors name both id and name.
    """

    def __init__(
        self,
        stimuli: Sequence,
        responses: Sequence,
        sfreq: float,
        freqs: Sequence[float] | np.ndarray | None = None,
        channel_names: Sequence[str] | None = None,
        repeats: Sequence | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if stimuli is None or len(stimuli) == 0:
            raise ValueError("no trials: at least one (stimulus, response) pair is needed")
        if len(responses) != len(stimuli):
            raise ValueError(f"got {len(stimuli)} stimuli but {len(responses)} responses; one response per trial is needed")
        if repeats is not None and len(repeats) != len(stimuli):
            raise ValueError(f"got {len(stimuli)} trials but {len(repeats)} repeat arrays; give one per trial or none")
        if names is not None and len(names) != len(stimuli):
            raise ValueError(f"got {len(stimuli)} trials but {len(names)} trial names")
        try:
            self.sfreq = float(sfreq)
        except (TypeError, ValueError):
            raise TypeError(f"sfreq must be a number of frames per second; got {sfreq!r}") from None
        if not np.isfinite(self.sfreq) or self.sfreq <= 0:
            raise ValueError(f"sfreq must be a positive frame rate in Hz; got {sfreq!r}")
        self.names = [str(n) for n in names] if names is not None else [f"trial{i}" for i in range(len(stimuli))]

        self.stimuli: list[torch.Tensor] = []
        self.responses: list[torch.Tensor] = []
        self.repeats: list[torch.Tensor] | None = [] if repeats is not None else None
        for i, (stimulus, response) in enumerate(zip(stimuli, responses)):
            label = f"trial {i} ({self.names[i]!r})"
            x = _as_float_tensor(stimulus, f"stimulus of {label}")
            y = _as_float_tensor(response, f"response of {label}")
            if x.ndim != 2:
                raise ValueError(f"stimulus of {label} must be 2-D (freqs, frames); got shape {tuple(x.shape)}")
            if y.ndim != 2:
                raise ValueError(f"response of {label} must be 2-D (channels, frames); got shape {tuple(y.shape)}")
            if x.shape[1] != y.shape[1]:
                raise ValueError(
                    f"{label}: stimulus has {x.shape[1]} frames but response has {y.shape[1]} "
                    f"(stimulus {tuple(x.shape)}, response {tuple(y.shape)}); they must have the same length"
                )
            if i > 0 and x.shape[0] != self.stimuli[0].shape[0]:
                raise ValueError(
                    f"{label}: stimulus has {x.shape[0]} frequency bands but trial 0 has "
                    f"{self.stimuli[0].shape[0]}; every trial needs the same bands"
                )
            if i > 0 and y.shape[0] != self.responses[0].shape[0]:
                raise ValueError(
                    f"{label}: response has {y.shape[0]} channels but trial 0 has {self.responses[0].shape[0]}"
                )
            if x.shape[1] == 0:
                raise ValueError(f"{label} has no frames")
            self.stimuli.append(x)
            self.responses.append(y)
            if repeats is not None:
                r = _as_float_tensor(repeats[i], f"repeats of {label}")
                if r.ndim != 3 or tuple(r.shape[1:]) != tuple(y.shape):
                    raise ValueError(
                        f"repeats of {label} must have shape (repeats, {y.shape[0]}, {y.shape[1]}); got {tuple(r.shape)}"
                    )
                self.repeats.append(r)

        n_freqs, n_channels = self.n_freqs, self.n_channels
        if freqs is None:
            self.freqs = np.arange(n_freqs, dtype=np.float64)
        else:
            self.freqs = np.asarray(freqs, dtype=np.float64).reshape(-1)
            if self.freqs.shape != (n_freqs,):
                raise ValueError(f"freqs must give one centre frequency per band ({n_freqs}); got {self.freqs.shape[0]}")
        if channel_names is None:
            self.channel_names = [f"ch{n}" for n in range(n_channels)]
        else:
            self.channel_names = [str(c) for c in channel_names]
            if len(self.channel_names) != n_channels:
                raise ValueError(f"channel_names must name every channel ({n_channels}); got {len(self.channel_names)}")

    # -- Sequence protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitem__(self, i: int) -> Trial:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"trials are indexed by integer trial id; got {type(i).__name__} (use .subset for several)")
        if not -len(self) <= i < len(self):
            raise IndexError(f"trial id {i} out of range: there are {len(self)} trials (ids 0..{len(self) - 1})")
        i = int(i) % len(self)
        repeats = self.repeats[i] if self.repeats is not None else None
        return Trial(self.stimuli[i], self.responses[i], repeats, self.names[i])

    def __repr__(self) -> str:
        return (
            f"Trials({len(self)} trials, {self.n_freqs} bands, {self.n_channels} channels, "
            f"{self.sfreq:g} Hz, {sum(self.lengths)} frames{', with repeats' if self.repeats is not None else ''})"
        )

    # -- shape information -------------------------------------------------------------------------------------
    @property
    def n_trials(self) -> int:
        return len(self)

    @property
    def n_freqs(self) -> int:
        return self.stimuli[0].shape[0]

    @property
    def n_channels(self) -> int:
        return self.responses[0].shape[0]

    @property
    def lengths(self) -> list[int]:
        return [x.shape[1] for x in self.stimuli]

    def check_ids(self, ids: Sequence[int], what: str = "trial ids") -> list[int]:
        """Return ``ids`` as a list of ints, or raise naming the ids that are not trials of this container."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"{what} {bad} out of range: there are {len(self)} trials (ids 0..{len(self) - 1})")
        return ids

    def window(self, trial: int, frame: int, n_frames: int) -> torch.Tensor:
        """The stimulus ``(F, n_frames)`` of ``trial`` ending at ``frame`` (included): a reference window, e.g.
        for a gradient map. Raises naming the trial and the valid frames if it does not fit in the trial."""
        (trial,) = self.check_ids([trial], "trial")
        frame, length = int(frame), self.lengths[trial]
        if not n_frames - 1 <= frame < length:
            raise ValueError(f"frame {frame} of trial {trial} cannot end a window of {n_frames} frames "
                             f"(valid {n_frames - 1}..{length - 1})")
        return self.stimuli[trial][:, frame - n_frames + 1: frame + 1]

    def check_receptive_field(self, receptive_field: int | None, ids: Sequence[int] | None = None) -> None:
        """Raise if a trial is shorter than the model's receptive field (it would hold no valid output frame)."""
        if receptive_field is None:
            return
        for i in self.check_ids(range(len(self)) if ids is None else ids):
            if self.lengths[i] < receptive_field:
                raise ValueError(
                    f"trial {i} ({self.names[i]!r}) has {self.lengths[i]} frames, fewer than the model's receptive "
                    f"field of {receptive_field} frames: no output frame of it would see a full input window. "
                    "Drop the trial or use a model with a shorter receptive field."
                )

    def subset(self, ids: Sequence[int]) -> Trials:
        """A new container with the trials ``ids`` (in that order); names are kept so errors stay traceable."""
        ids = self.check_ids(ids)
        return Trials(
            [self.stimuli[i] for i in ids],
            [self.responses[i] for i in ids],
            self.sfreq,
            freqs=self.freqs,
            channel_names=self.channel_names,
            repeats=[self.repeats[i] for i in ids] if self.repeats is not None else None,
            names=[self.names[i] for i in ids],
        )


@dataclass(frozen=True)
class Standardization:
    """Per-band stimulus and per-channel response z-scoring with statistics of the training trials only.

    ``x' = (x - stimulus_mean[:, None]) / stimulus_std[:, None]`` and likewise for responses. After it, zero is
    the training mean of every band, which is what the causal models pad the frames before a trial with.
    A band or channel with zero variance in the training trials gets std 1 (it carries no information, and
    dividing by zero would create NaNs).
    """

    stimulus_mean: torch.Tensor  # (F,)
    stimulus_std: torch.Tensor  # (F,)
    response_mean: torch.Tensor  # (N,)
    response_std: torch.Tensor  # (N,)

    @classmethod
    def fit(cls, trials: Trials, ids: Sequence[int]) -> Standardization:
        ids = trials.check_ids(ids, "standardisation trial ids")
        if not ids:
            raise ValueError("standardisation needs at least one training trial")
        x = torch.cat([trials.stimuli[i] for i in ids], dim=1).double()
        y = torch.cat([trials.responses[i] for i in ids], dim=1).double()

        def std(z: torch.Tensor) -> torch.Tensor:
            s = z.std(dim=1, unbiased=False)
            return torch.where(s > 0, s, torch.ones_like(s))

        return cls(x.mean(1).float(), std(x).float(), y.mean(1).float(), std(y).float())

    @classmethod
    def identity(cls, n_freqs: int, n_channels: int) -> Standardization:
        return cls(torch.zeros(n_freqs), torch.ones(n_freqs), torch.zeros(n_channels), torch.ones(n_channels))

    def stimulus(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.stimulus_mean[:, None]) / self.stimulus_std[:, None]

    def response(self, y: torch.Tensor) -> torch.Tensor:
        """Standardise ``(N, T)`` or repeats ``(R, N, T)``."""
        return (y - self.response_mean[:, None]) / self.response_std[:, None]

    def apply(self, trials: Trials) -> Trials:
        return Trials(
            [self.stimulus(x) for x in trials.stimuli],
            [self.response(y) for y in trials.responses],
            trials.sfreq,
            freqs=trials.freqs,
            channel_names=trials.channel_names,
            repeats=[self.response(r) for r in trials.repeats] if trials.repeats is not None else None,
            names=trials.names,
        )
