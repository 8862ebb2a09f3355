"""The trials container: the single place where input data is validated.

A *trial* is one stimulus presentation: a spectrogram ``stimulus`` of shape ``(F, T)`` (F frequency bands,
T frames at ``sfreq`` Hz), the trial-averaged neural ``response`` ``(N, T)`` (N channels: electrodes,
neurons) and optionally the single ``repeats`` ``(R, N, T)`` it was averaged from, for noise ceilings.
Trials may differ in length but not in F or N. Trial ids are the integer positions in the container;
every split, file name and table refers to trials by them.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
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
        source = value.detach().cpu()
        if source.dtype == torch.bool or source.is_complex():
            raise TypeError(f"{what} must be real numbers; got a tensor of dtype {source.dtype}")
        tensor = source.to(torch.float32)
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as error:  # ragged nested lists
            raise TypeError(f"{what} must be a numeric array; could not convert it ({error})") from None
        if array.dtype == bool or not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        ):
            raise TypeError(f"{what} must be a numeric array of real numbers; got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        n_bad = int((~finite).sum())
        kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
        raise ValueError(f"{what} contains {n_bad} non-finite value(s) ({kind}), the first at index {tuple(bad)}")
    return tensor


def _frame_rate(sfreq) -> float:
    """``sfreq`` as a float: a number, or an array of size 1 (e.g. read from a file as shape (1,))."""
    array = sfreq.detach().cpu().numpy() if isinstance(sfreq, torch.Tensor) else np.asarray(sfreq, dtype=object)
    if array.size != 1:
        raise ValueError(f"sfreq must be one number (the frame rate in Hz); got an array of shape {array.shape}")
    value = array.reshape(()).item()
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        rate = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"sfreq must be a number of frames per second; got {sfreq!r}") from None
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"sfreq must be a positive frame rate in Hz; got {sfreq!r}")
    return rate


def _unique_names(names: Sequence[str], what: str, items: str) -> None:
    """Raise naming every name that occurs more than once and the ``items`` (trials, channels) it names."""
    repeated = {name: [i for i, n in enumerate(names) if n == name] for name, c in Counter(names).items() if c > 1}
    if repeated:
        listed = "; ".join(f"{name!r} names {items} {where}" for name, where in repeated.items())
        raise ValueError(f"{what} must be unique: {listed}")


def _band_frequencies(freqs, n_freqs: int) -> np.ndarray:
    """``freqs`` as float64 ``(F,)``: one finite centre frequency per band, strictly increasing (low to high
    band), so a band index and its frequency can never be confused in tables and figures."""
    try:
        array = np.asarray(freqs, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"freqs must be numbers (centre frequencies in Hz); got {freqs!r}") from None
    if array.shape != (n_freqs,):
        raise ValueError(f"freqs must give one centre frequency per band ({n_freqs}); got {array.shape[0]}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"freqs must be finite; freqs[{bad[0]}] is {array[bad[0]]} ({bad.size} non-finite value(s))")
    down = np.flatnonzero(np.diff(array) <= 0)
    if down.size:
        k = int(down[0])
        raise ValueError(
            f"freqs must be strictly increasing (band 0 the lowest); freqs[{k + 1}]={array[k + 1]:g} is not above "
            f"freqs[{k}]={array[k]:g}. If the bands run from high to low, reverse both: stimulus[::-1], freqs[::-1]"
        )
    return array


def _transpose_hint(x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> str:
    """For a stimulus ``(F, T)`` / response ``(N, T)`` frame mismatch: which array looks transposed, if any."""
    if x_shape[0] == y_shape[1]:
        return "; the stimulus looks transposed (frames, bands): pass stimulus.T"
    if y_shape[0] == x_shape[1]:
        return "; the response looks transposed (frames, channels): pass response.T"
    if x_shape[0] == y_shape[0]:
        return "; both look transposed (frames first): pass stimulus.T and response.T"
    return ""


class Trials(Sequence):
    """A validated, ordered collection of trials.

    Parameters
    ----------
    stimuli : sequence of array-like ``(F, T_i)``
        One spectrogram per trial (F bands, T_i frames). F must be the same for every trial.
    responses : sequence of array-like ``(N, T_i)``
        Trial-averaged responses, the same number of frames as the trial's stimulus.
    sfreq : float
        Frame rate in Hz (a number, or an array holding one number).
    freqs : array-like ``(F,)``, optional
        Centre frequency of each band in Hz, finite and strictly increasing (defaults to band indices 0..F-1).
    channel_names : sequence of str ``(N,)``, optional
        Unique names; defaults to ``"ch0", "ch1", ...``.
    repeats : sequence of array-like ``(R_i, N, T_i)``, optional
        Single-repeat responses, for noise ceilings.
    names : sequence of str, optional
        Unique human-readable trial names (defaults to ``"trial0", ...``); errors name both id and name.

    F and N must be at least 1. Implausible shapes only warn: a stimulus with more bands than frames (F > T)
    is usually one stored as (frames, bands), so the warning suggests the transpose; a frame-count mismatch
    that a transpose would fix says so in its error.
    """

    def __init__(
        self,
        stimuli: Sequence,
        responses: Sequence,
        sfreq: float | np.ndarray,
        freqs: Sequence[float] | np.ndarray | None = None,
        channel_names: Sequence[str] | None = None,
        repeats: Sequence | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if stimuli is None or len(stimuli) == 0:
            raise ValueError("no trials: at least one (stimulus, response) pair is needed")
        if len(responses) != len(stimuli):
            raise ValueError(
                f"got {len(stimuli)} stimuli but {len(responses)} responses; one response per trial is needed"
            )
        if repeats is not None and len(repeats) != len(stimuli):
            raise ValueError(f"got {len(stimuli)} trials but {len(repeats)} repeat arrays; give one per trial or none")
        if names is not None and len(names) != len(stimuli):
            raise ValueError(f"got {len(stimuli)} trials but {len(names)} trial names")
        self.sfreq = _frame_rate(sfreq)
        self.names = [str(n) for n in names] if names is not None else [f"trial{i}" for i in range(len(stimuli))]
        _unique_names(self.names, "trial names", "trials")

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
            if x.shape[0] == 0:
                raise ValueError(
                    f"stimulus of {label} has no frequency bands (shape {tuple(x.shape)}); it must be (freqs, frames)"
                )
            if y.shape[0] == 0:
                raise ValueError(
                    f"response of {label} has no channels (shape {tuple(y.shape)}); it must be (channels, frames)"
                )
            if x.shape[1] != y.shape[1]:
                raise ValueError(
                    f"{label}: stimulus has {x.shape[1]} frames but response has {y.shape[1]} "
                    f"(stimulus {tuple(x.shape)}, response {tuple(y.shape)}); they must have the same length"
                    + _transpose_hint(tuple(x.shape), tuple(y.shape))
                )
            if i > 0 and x.shape[0] != self.stimuli[0].shape[0]:
                n_freqs = self.stimuli[0].shape[0]
                looks_transposed = x.shape[1] == n_freqs
                hint = f"; its stimulus {tuple(x.shape)} looks transposed: pass stimulus.T" if looks_transposed else ""
                raise ValueError(
                    f"{label}: stimulus has {x.shape[0]} frequency bands but trial 0 has "
                    f"{n_freqs}; every trial needs the same bands{hint}"
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
                assert self.repeats is not None  # a list whenever repeats is given (above)
                self.repeats.append(r)
        self._warn_wide_stimuli()

        n_freqs, n_channels = self.n_freqs, self.n_channels
        self.freqs = np.arange(n_freqs, dtype=np.float64) if freqs is None else _band_frequencies(freqs, n_freqs)
        if channel_names is None:
            self.channel_names = [f"ch{n}" for n in range(n_channels)]
        else:
            self.channel_names = [str(c) for c in channel_names]
            if len(self.channel_names) != n_channels:
                raise ValueError(f"channel_names must name every channel ({n_channels}); got {len(self.channel_names)}")
            _unique_names(self.channel_names, "channel_names", "channels")

    def _warn_wide_stimuli(self) -> None:
        """Warn (not raise: a short trial with many bands is possible) when stimuli have more bands than frames,
        the usual sign of a stimulus stored as (frames, bands)."""
        wide = [i for i, x in enumerate(self.stimuli) if x.shape[0] > x.shape[1]]
        if wide:
            first = tuple(self.stimuli[wide[0]].shape)
            warnings.warn(
                f"stimulus of trial(s) {wide} has more frequency bands than frames (trial {wide[0]}: shape {first}, "
                f"read as {first[0]} bands x {first[1]} frames); a stimulus is (freqs, frames): if it was stored as "
                "(frames, freqs), pass stimulus.T (and the response as (channels, frames))",
                UserWarning,
                stacklevel=3,
            )

    # -- Sequence protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitem__(self, i: int) -> Trial:  # type: ignore[override]  # by design no slices (TypeError: use .subset)
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
        """Return ``ids`` as a list of ints, or raise naming the ids that are not trials of this container or
        that occur more than once (a trial counted twice would weigh double in statistics and files)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"{what} {bad} out of range: there are {len(self)} trials (ids 0..{len(self) - 1})")
        twice = sorted(i for i, c in Counter(ids).items() if c > 1)
        if twice:
            raise ValueError(f"{what} {ids} list trial(s) {twice} more than once; give each trial id once")
        return ids

    def window(self, trial: int, frame: int, n_frames: int) -> torch.Tensor:
        """The stimulus ``(F, n_frames)`` of ``trial`` ending at ``frame`` (included): a reference window, e.g.
        for a gradient map. Raises naming the trial and the valid frames if it does not fit in the trial."""
        (trial,) = self.check_ids([trial], "trial")
        frame, length = int(frame), self.lengths[trial]
        if not n_frames - 1 <= frame < length:
            raise ValueError(
                f"frame {frame} of trial {trial} cannot end a window of {n_frames} frames "
                f"(valid {n_frames - 1}..{length - 1})"
            )
        return self.stimuli[trial][:, frame - n_frames + 1 : frame + 1]

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


def _pooled_moments(arrays: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and population std ``(K,)`` over the frames of all ``(K, T_i)`` arrays pooled, without
    concatenating them: peak extra memory is one float64 copy of the longest array, not of all of them.

    Each array contributes (count n_i, mean m_i, M2_i = sum_t (z_t - m_i)^2) computed in float64 around its own
    mean; they are merged with Chan et al.'s (1979) pairwise update

        n = n_a + n_b,  d = m_b - m_a,  m = m_a + d n_b / n,  M2 = M2_a + M2_b + d^2 n_a n_b / n,

    which, unlike sum(z^2) - n m^2, loses no precision when the mean is large against the spread. A row whose
    values are all equal (min == max) gets std 1 exactly: rounding of the means must not turn "no variance"
    into a tiny std that the standardization would divide by.
    """
    count, mean, m2, low, high = 0, None, None, None, None
    for tensor in arrays:
        z = tensor.detach().cpu().numpy()  # a view of the float32 data, no copy
        n = z.shape[1]
        m = z.mean(axis=1, dtype=np.float64)
        deviation = np.subtract(z, m[:, None], dtype=np.float64)  # (K, T_i) float64: the one trial-sized buffer
        np.square(deviation, out=deviation)
        m2_i = deviation.sum(axis=1)
        del deviation
        if mean is None or m2 is None or low is None or high is None:  # the first array (sets all four at once)
            count, mean, m2, low, high = n, m, m2_i, z.min(axis=1), z.max(axis=1)
            continue
        delta = m - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + m2_i + delta**2 * (count * n / total)
        count = total
        low, high = np.minimum(low, z.min(axis=1)), np.maximum(high, z.max(axis=1))
    assert mean is not None and m2 is not None and low is not None and high is not None  # callers pass >= 1 array
    std = np.sqrt(m2 / count)
    std = np.where((high > low) & (std > 0), std, 1.0)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))


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
        """Means and population stds of the trials ``ids`` (all their frames pooled), streamed trial by trial."""
        ids = trials.check_ids(ids, "standardization trial ids")
        if not ids:
            raise ValueError("standardization needs at least one training trial")
        x_mean, x_std = _pooled_moments(trials.stimuli[i] for i in ids)
        y_mean, y_std = _pooled_moments(trials.responses[i] for i in ids)
        return cls(x_mean, x_std, y_mean, y_std)

    @classmethod
    def identity(cls, n_freqs: int, n_channels: int) -> Standardization:
        return cls(torch.zeros(n_freqs), torch.ones(n_freqs), torch.zeros(n_channels), torch.ones(n_channels))

    def stimulus(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.stimulus_mean[:, None]) / self.stimulus_std[:, None]

    def response(self, y: torch.Tensor) -> torch.Tensor:
        """Standardize ``(N, T)`` or repeats ``(R, N, T)``."""
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
