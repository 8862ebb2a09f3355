"""Loaders from the formats labs keep their data in into :class:`~dstrf.data.trials.Trials`.

- :func:`load_mat`: MATLAB ``.mat`` files, v4-v7 through :func:`scipy.io.loadmat`, v7.3 (an HDF5 file) through
  h5py. Per-trial arrays are cell arrays (1 x n or n x 1) of ``(F, T_i)`` stimuli and ``(N, T_i)`` responses,
  or one 2-D array for a single trial.
- :func:`from_mne`: EEG/MEG recordings as MNE objects: a continuous :class:`mne.io.Raw` cut at event onsets, or
  :class:`mne.Epochs` (one epoch per trial).
- :func:`from_naplib`: naplib ``Data`` objects, through their duck-typed interface (a list of dicts).

The loaders only read and cut; every array goes through :class:`Trials`, the one place data are validated, and
its errors and warnings are repeated with the source (file, object) in front.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from .trials import Trials

__all__ = ["load_mat", "from_mne", "from_naplib", "load_naplib_demo", "naplib_demo_path"]


def _build(source: str, make: Callable[[], Trials]) -> Trials:
    """Run ``make`` (which builds a :class:`Trials`); its errors and warnings come back prefixed by ``source``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trials = make()
        except (ValueError, TypeError) as error:
            raise type(error)(f"{source}: {error}") from None
    for warning in caught:
        warnings.warn(f"{source}: {warning.message}", warning.category, stacklevel=3)
    return trials


# ---------------------------------------------------------------------------------------------------------------
# MATLAB files
# ---------------------------------------------------------------------------------------------------------------
class _Cell(list):
    """The elements of a MATLAB cell array in MATLAB's linear (column-major) order, with the cell's shape."""

    def __init__(self, items: Iterable, shape: tuple[int, ...]) -> None:
        super().__init__(items)
        self.shape = shape


class _MatFile:
    """Variables of a ``.mat`` file, read on demand as ``np.ndarray`` (numbers, in MATLAB's orientation),
    ``str`` (a char row) or :class:`_Cell` (a cell array)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hdf5 = h5py.is_hdf5(path)
        if self.hdf5:
            try:
                self._file = h5py.File(path, "r")
            except OSError as error:
                raise ValueError(f"{path} is not a readable MATLAB v7.3 (HDF5) file (truncated?): {error}") from None
            self.names = sorted(k for k in self._file.keys() if not k.startswith("#"))  # #refs#, #subsystem#
        else:
            try:
                self.names = sorted(name for name, _, _ in scipy.io.whosmat(path))
            except (ValueError, OSError, TypeError) as error:
                raise ValueError(f"{path} is not a readable MATLAB file (truncated, or not a .mat?): {error}") from None
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> _MatFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, name: str, argument: str) -> Any:
        """Variable ``name`` (given as ``argument``); a missing one is an error listing the file's variables."""
        if name not in self.names:
            raise KeyError(
                f"{self.path}: no variable {name!r} (argument {argument}); the file has variables {self.names}"
            )
        if self.hdf5:
            return self._from_hdf5(self._file[name], name)
        try:
            value = scipy.io.loadmat(self.path, variable_names=[name], squeeze_me=False, chars_as_strings=True)[name]
        except (ValueError, OSError, TypeError, NotImplementedError) as error:
            raise ValueError(f"{self.path}: variable {name!r} could not be read: {error}") from None
        return self._from_scipy(value, name)

    # v4-v7: scipy already gives MATLAB's orientation; cells are object arrays, char rows arrays of str.
    def _from_scipy(self, value: np.ndarray, name: str) -> Any:
        if value.dtype == object:
            return _Cell(
                (self._from_scipy(v, f"{name}{{{i + 1}}}") for i, v in enumerate(value.flatten(order="F"))), value.shape
            )
        if value.dtype.names is not None:
            raise TypeError(
                f"{self.path}: variable {name!r} is a struct (fields {list(value.dtype.names)}); "
                "expected a numeric array or a cell array"
            )
        if value.dtype.kind == "U":  # a char matrix: one string per row
            strings = [str(s) for s in value.reshape(-1)] or [""]
            return strings[0] if len(strings) == 1 else _Cell(strings, value.shape)
        return value

    # v7.3: h5py sees MATLAB's column-major arrays with their axes reversed; cells are arrays of references.
    def _from_hdf5(self, item: h5py.Dataset | h5py.Group, name: str) -> Any:
        if not isinstance(item, h5py.Dataset):
            what = "a sparse matrix (store it full)" if "MATLAB_sparse" in item.attrs else "a struct or object"
            raise TypeError(f"{self.path}: variable {name!r} is {what}; expected a numeric array or a cell array")
        kind = item.attrs.get("MATLAB_class", b"double")
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if item.attrs.get("MATLAB_empty", 0):  # an empty array stores its MATLAB dims as data
            return np.zeros(tuple(int(d) for d in np.asarray(item[()]).reshape(-1)))
        data = item[()]
        if kind == "cell":
            refs = np.asarray(data).T  # MATLAB's shape
            return _Cell(
                (
                    self._from_hdf5(self._file[ref], f"{name}{{{i + 1}}}")
                    for i, ref in enumerate(refs.flatten(order="F"))
                ),
                refs.shape,
            )
        if kind == "struct":
            raise TypeError(f"{self.path}: variable {name!r} is a struct; expected a numeric array or a cell array")
        if kind == "char":  # uint16 code units, (L, n) in h5py for n rows of L characters
            rows = ["".join(map(chr, row)) for row in np.atleast_2d(data).T]
            return rows[0] if len(rows) == 1 else _Cell(rows, (len(rows), 1))
        return np.asarray(data).T


def _per_trial(value: Any, path: Path, name: str) -> list:
    """A variable's per-trial arrays: the elements of a 1 x n / n x 1 cell, or a single (non-cell) array."""
    if isinstance(value, _Cell):
        if len(value.shape) != 2 or min(value.shape) > 1:
            raise ValueError(
                f"{path}: variable {name!r} is a {' x '.join(map(str, value.shape))} cell; expected a "
                "1 x n or n x 1 cell array with one array per trial"
            )
        nested = [i for i, v in enumerate(value) if not isinstance(v, np.ndarray)]
        if nested:
            raise TypeError(
                f"{path}: element {{{nested[0] + 1}}} of cell {name!r} is a "
                f"{'cell' if isinstance(value[nested[0]], _Cell) else 'text'}; expected one numeric "
                "array per trial"
            )
        return list(value)
    if isinstance(value, str):
        raise TypeError(f"{path}: variable {name!r} is text ({value!r}); expected numeric per-trial arrays")
    return [value]


def _strings(value: Any, path: Path, name: str) -> list[str]:
    """A cell of char rows, or a char matrix, as a list of str."""
    if isinstance(value, str):  # one name, a char row
        return [value.rstrip()]
    if not isinstance(value, _Cell) or not all(isinstance(s, str) for s in value):
        raise TypeError(f"{path}: variable {name!r} must be a cell array of strings (or a char matrix)")
    return [s.rstrip() for s in value]


def load_mat(
    path: str | os.PathLike,
    stimulus: str = "stim",
    response: str = "resp",
    repeats: str | None = None,
    sfreq: float | str = "fs",
    freqs: Sequence[float] | np.ndarray | str | None = None,
    channel_names: Sequence[str] | str | None = None,
    trial_names: Sequence[str] | str | None = None,
) -> Trials:
    """Read trials from a MATLAB ``.mat`` file (v4-v7 via scipy, v7.3 via h5py: v7.3 files are HDF5).

    Parameters
    ----------
    path : the ``.mat`` file.
    stimulus, response : names of the variables holding the stimuli ``(F, T_i)`` and responses ``(N, T_i)``:
        each a 1 x n (or n x 1) cell array with one array per trial, or a single 2-D array for one trial.
    repeats : optional name of a variable with per-trial single repeats ``(R, N, T_i)`` (a cell, or one array).
    sfreq : the frame rate in Hz, or the name of a scalar variable holding it (default ``"fs"``).
    freqs : the band centre frequencies ``(F,)``, or the name of a variable holding them.
    channel_names, trial_names : lists of names, or the name of a variable holding a cell array of strings.

    Arrays keep MATLAB's orientation: a MATLAB ``F x T`` matrix is a ``(F, T)`` stimulus whichever the file
    version (v7.3 stores it column-major, read by h5py as ``(T, F)``; this is undone here, and cells, stored as
    HDF5 object references, are followed). A missing variable is an error listing the variables the file has.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"MATLAB file {path} is a directory; give a .mat file")
    if not path.is_file():
        raise FileNotFoundError(f"MATLAB file {path} does not exist")
    with _MatFile(path) as mat:
        stimuli = _per_trial(mat.get(stimulus, "stimulus"), path, stimulus)
        responses = _per_trial(mat.get(response, "response"), path, response)
        if len(stimuli) != len(responses):
            raise ValueError(
                f"{path}: stimulus variable {stimulus!r} holds {len(stimuli)} trial(s) but response "
                f"variable {response!r} holds {len(responses)}; one response per stimulus is needed"
            )
        reps = None
        if repeats is not None:
            reps = _per_trial(mat.get(repeats, "repeats"), path, repeats)
            if len(reps) != len(stimuli):
                raise ValueError(
                    f"{path}: repeats variable {repeats!r} holds {len(reps)} trial(s) but stimulus "
                    f"variable {stimulus!r} holds {len(stimuli)}"
                )
        rate = mat.get(sfreq, "sfreq") if isinstance(sfreq, str) else sfreq
        bands = mat.get(freqs, "freqs") if isinstance(freqs, str) else freqs
        channels = (
            _strings(mat.get(channel_names, "channel_names"), path, channel_names)
            if isinstance(channel_names, str)
            else channel_names
        )
        names = (
            _strings(mat.get(trial_names, "trial_names"), path, trial_names)
            if isinstance(trial_names, str)
            else trial_names
        )
    return _build(
        str(path),
        lambda: Trials(stimuli, responses, rate, freqs=bands, channel_names=channels, repeats=reps, names=names),
    )


# ---------------------------------------------------------------------------------------------------------------
# MNE
# ---------------------------------------------------------------------------------------------------------------
def _n_frames(stimuli: Sequence, what: str) -> list[int]:
    """Frames T_i of each stimulus ``(F, T_i)`` (just the shape; the arrays are validated by Trials)."""
    if stimuli is None or isinstance(stimuli, (str, bytes)) or not hasattr(stimuli, "__len__"):
        raise TypeError(f"stimuli must be a list of (freqs, frames) spectrograms; got {type(stimuli).__name__}")
    frames = []
    for i, stimulus in enumerate(stimuli):
        shape = np.shape(stimulus)
        if len(shape) != 2:
            raise ValueError(f"stimulus {i} must be 2-D (freqs, frames) to cut its {what}; got shape {shape}")
        frames.append(int(shape[1]))
    return frames


def _picked_names(inst: Any, picks: Any) -> tuple[list[int], list[str]]:
    """``picks`` (MNE's rules; None means the data channels) as channel indices, and those channels' names.
    Resolved on a one-sample stand-in with the same Info, so no recording data are copied."""
    import mne

    label = "picks=None (the data channels: EEG, MEG, ...)" if picks is None else f"picks {picks!r}"
    stand_in = mne.io.RawArray(np.zeros((len(inst.ch_names), 1)), inst.info.copy(), verbose="error")
    try:
        names = stand_in.pick("data" if picks is None else picks).ch_names
    except ValueError as error:
        types = sorted(set(inst.get_channel_types()))
        raise ValueError(
            f"{label} select no channels of {len(inst.ch_names)} (channel types {types}); "
            f"pass picks=... naming channels or types ({error})"
        ) from None
    return [inst.ch_names.index(n) for n in names], names


def _check_rate(inst: Any, sfreq: float | None) -> float:
    """The recording's rate, which must equal the stimuli's frame rate ``sfreq`` when given."""
    rate = float(inst.info["sfreq"])
    if sfreq is not None and not np.isclose(rate, float(sfreq), rtol=1e-9, atol=0):
        raise ValueError(
            f"the recording is sampled at {rate:g} Hz but the stimuli at {float(sfreq):g} Hz; resample it to the "
            f"stimulus frame rate first: raw.resample({float(sfreq):g}, events=events) (or epochs.resample)"
        )
    return rate


def _onsets(
    raw: Any, events: np.ndarray | None, event_id: Any, annotations: str | Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Onset samples (absolute, counting ``raw.first_samp``) of the selected events or annotations, in order, and
    a label for each naming where it came from (``events[row]``, or the annotation's description and number)."""
    import mne

    if (events is None) == (annotations is None):
        raise ValueError(
            "give exactly one of events (an (n, 3) array from mne.find_events) or annotations "
            "(the description(s) of raw.annotations marking the trial onsets)"
        )
    if annotations is not None:
        if event_id is not None:
            raise ValueError("event_id selects rows of an events array; with annotations, select by description")
        wanted = [annotations] if isinstance(annotations, str) else list(annotations)
        present = sorted(set(raw.annotations.description))
        missing = [d for d in wanted if d not in present]
        if missing:
            raise ValueError(f"no annotations described {missing}; the raw's annotation descriptions are {present}")
        events, _ = mne.events_from_annotations(
            raw, event_id={d: k + 1 for k, d in enumerate(wanted)}, regexp=None, verbose="error"
        )
        labels = [f"annotation {i} ({wanted[k - 1]!r})" for i, k in enumerate(events[:, 2])]
        return events[:, 0], labels
    events = np.asarray(events)
    if events.ndim != 2 or events.shape[1] != 3 or not np.issubdtype(events.dtype, np.integer):
        raise ValueError(
            f"events must be an integer (n, 3) array (sample, previous, id) as from mne.find_events; "
            f"got {events.dtype} array of shape {events.shape}"
        )
    if event_id is None:
        return events[:, 0], [f"events[{row}]" for row in range(len(events))]
    ids = (
        list(event_id.values())
        if isinstance(event_id, Mapping)
        else [event_id]
        if np.ndim(event_id) == 0
        else list(event_id)
    )
    keep = np.isin(events[:, 2], ids)
    if not keep.any():
        present = np.unique(events[:, 2]).tolist()
        raise ValueError(f"event_id {event_id!r} selects no events; the events have ids {present}")
    return events[keep, 0], [f"events[{row}]" for row in np.flatnonzero(keep)]


def _cut_raw(
    raw: Any, stimuli: Sequence, onsets: np.ndarray, labels: list[str], tmin: float, picks: Any
) -> tuple[list, list[str]]:
    """Per trial i the response ``raw[picks, s_i : s_i + T_i]`` with ``s_i = onset_i - first_samp +
    round(tmin * sfreq)`` (``onset_i`` absolute, as in events arrays). Out-of-recording windows are errors."""
    frames = _n_frames(stimuli, "response")
    if len(onsets) != len(frames):
        raise ValueError(
            f"{len(onsets)} event(s) selected but {len(frames)} stimuli given; one event per stimulus "
            "is needed (select the events with event_id, or the annotations by description)"
        )
    index, names = _picked_names(raw, picks)
    shift = int(round(tmin * raw.info["sfreq"])) - int(raw.first_samp)
    starts = [int(onset) + shift for onset in onsets]
    for i, (start, n) in enumerate(zip(starts, frames)):
        if start < 0 or start + n > raw.n_times:
            raise ValueError(
                f"{labels[i]} (sample {int(onsets[i])}, trial {i}): its response needs samples "
                f"{start}..{start + n - 1} of the recording (tmin {tmin:+g} s, {n} stimulus frames) but the "
                f"recording has samples 0..{raw.n_times - 1} (first_samp {raw.first_samp} subtracted)"
            )
    return [raw.get_data(picks=index, start=s, stop=s + n) for s, n in zip(starts, frames)], names


def _cut_epochs(epochs: Any, stimuli: Sequence, tmin: float, picks: Any) -> tuple[list, list[str]]:
    """Per epoch i its data from epoch time ``tmin`` for T_i samples (the stimulus starts ``tmin`` s after the
    event); stimuli are matched to the epochs kept, in order."""
    frames = _n_frames(stimuli, "epoch")
    n_epochs = len(epochs)
    if n_epochs != len(frames):
        dropped = len(epochs.drop_log) - n_epochs
        hint = (
            (
                f"; {dropped} epoch(s) were dropped: pass the stimuli of the kept ones, "
                "[stimuli[i] for i in epochs.selection]"
            )
            if dropped and len(epochs.drop_log) == len(frames)
            else ""
        )
        raise ValueError(f"{n_epochs} epoch(s) but {len(frames)} stimuli given; one stimulus per epoch is needed{hint}")
    index, names = _picked_names(epochs, picks)
    start = int(round((tmin - epochs.tmin) * epochs.info["sfreq"]))
    n_times = len(epochs.times)
    data = epochs.get_data(picks=index)
    for i, n in enumerate(frames):
        if start < 0 or start + n > n_times:
            raise ValueError(
                f"epoch {i}: its response needs samples {start}..{start + n - 1} of the epoch (from {tmin:g} s, "
                f"{n} stimulus frames) but the epoch has samples 0..{n_times - 1} ({epochs.tmin:g}..{epochs.tmax:g} s)"
            )
    return [data[i, :, start : start + n] for i, n in enumerate(frames)], names


def from_mne(
    raw_or_epochs: Any,
    stimuli: Sequence,
    events: np.ndarray | None = None,
    event_id: int | Sequence[int] | Mapping[str, int] | None = None,
    annotations: str | Sequence[str] | None = None,
    tmin: float = 0.0,
    picks: Any = None,
    *,
    sfreq: float | None = None,
    freqs: Sequence[float] | np.ndarray | None = None,
    names: Sequence[str] | None = None,
) -> Trials:
    """Trials from an EEG/MEG recording: responses cut from an MNE object at the onsets of the stimuli.

    The stimuli ``(F, T_i)`` must be at the recording's sampling rate: resample the recording to the stimulus
    frame rate first, ``raw, events = raw.resample(sfreq, events=events)`` (MNE filters before decimating).
    Given ``sfreq`` (the stimuli's frame rate) it must equal ``raw.info['sfreq']``; otherwise that rate is used.

    - :class:`mne.io.Raw` (continuous): the onsets are the events (an ``(n, 3)`` array from
      :func:`mne.find_events`, sample numbers counting ``raw.first_samp``), optionally only those whose id is in
      ``event_id`` (an id, ids, or a ``{name: id}`` dict), or the annotations whose description is
      ``annotations`` (a string or several). Trial i is ``raw[picks, s_i : s_i + T_i]``, ``s_i = onset_i -
      first_samp + round(tmin * sfreq)``: ``tmin`` is the delay in seconds from the event to the stimulus start.
    - :class:`mne.Epochs`: each epoch is a trial, matched to the stimuli by order; its response is the epoch from
      time ``tmin`` (the stimulus start relative to the event) for T_i samples.

    ``picks`` follows MNE (channel names, types, indices); None means the data channels (EEG, MEG, ...), leaving
    out stimulus/trigger channels; as in MNE, channels in ``info['bads']`` are kept (drop them first if unwanted).
    ``tmin * sfreq`` is rounded to the nearest sample. Channel names are the picked ``ch_names``. Responses are in
    MNE's units (V, T): the standardization fitted before training makes the scale irrelevant.
    Errors: a count of events (epochs) different from the number of stimuli; a trial reaching outside the
    recording (naming the event and the sample range).
    """
    import mne

    if isinstance(raw_or_epochs, mne.io.BaseRaw):
        rate = _check_rate(raw_or_epochs, sfreq)
        onsets, labels = _onsets(raw_or_epochs, events, event_id, annotations)
        responses, channels = _cut_raw(raw_or_epochs, stimuli, onsets, labels, tmin, picks)
        source = f"raw {raw_or_epochs.filenames[0] if raw_or_epochs.filenames and raw_or_epochs.filenames[0] else ''}"
    elif isinstance(raw_or_epochs, mne.BaseEpochs):
        if events is not None or annotations is not None or event_id is not None:
            raise ValueError(
                "epochs are already cut at their events: give events, event_id or annotations only with "
                "a continuous Raw (select epochs with epochs[...] instead)"
            )
        rate = _check_rate(raw_or_epochs, sfreq)
        responses, channels = _cut_epochs(raw_or_epochs, stimuli, tmin, picks)
        source = "epochs"
    else:
        raise TypeError(f"raw_or_epochs must be an mne.io.Raw or mne.Epochs; got {type(raw_or_epochs).__name__}")
    return _build(
        source.strip(), lambda: Trials(list(stimuli), responses, rate, freqs=freqs, channel_names=channels, names=names)
    )


# ---------------------------------------------------------------------------------------------------------------
# naplib
# ---------------------------------------------------------------------------------------------------------------
def from_naplib(data: Any, stimulus: str = "aud", response: str = "resp", sfreq: float | None = None) -> Trials:
    """Trials from a naplib ``Data`` object, used only through its documented duck-typed interface: an
    iterable of per-trial dicts (naplib is not a dependency, and any list of dicts with the same fields works).

    naplib stores arrays time first: ``trial[stimulus]`` is ``(T_i, F)`` (e.g. the ``'aud'`` spectrogram) and
    ``trial[response]`` ``(T_i, N)``; both are transposed to dstrf's ``(F, T_i)`` / ``(N, T_i)``. The frame rate
    is ``sfreq``, or else the trials' ``'dataf'`` (which must agree). Trial names come from ``'name'`` if every
    trial has one.
    """
    try:
        rows = list(data)
    except TypeError:
        raise TypeError(f"data must be a naplib Data or a list of per-trial dicts; got {type(data).__name__}") from None
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"naplib data trial {i} must be a dict of fields; got {type(row).__name__}")
        missing = [f for f in (stimulus, response) if f not in row]
        if missing:
            raise KeyError(f"naplib data trial {i} has no field(s) {missing}; it has fields {sorted(map(str, row))}")
    if sfreq is None:
        rates = sorted({float(row["dataf"]) for row in rows if "dataf" in row})
        if len(rates) != 1 or any("dataf" not in row for row in rows):
            raise ValueError(f"give sfreq: the trials' 'dataf' fields do not give one frame rate (found {rates})")
        sfreq = rates[0]
    names = [row["name"] for row in rows] if rows and all("name" in row for row in rows) else None
    stimuli = [np.asarray(row[stimulus]).T for row in rows]
    responses = [np.asarray(row[response]).T for row in rows]
    return _build("naplib data", lambda: Trials(stimuli, responses, sfreq, names=names))


# ---------------------------------------------------------------------------------------------------------------
# naplib's demo data
# ---------------------------------------------------------------------------------------------------------------
def naplib_demo_path() -> Path:
    """Where the installed naplib keeps its demo recording (``naplib/io/sample_data/demo_data.mat``), found
    without importing naplib (whose import needs compiled extensions built for numpy < 2)."""
    import importlib.util

    spec = importlib.util.find_spec("naplib")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "naplib's demo data need the naplib package: `pip install --no-deps naplib` (dstrf reads only its "
            "demo file; without --no-deps pip would downgrade numpy to < 2, which naplib pins)"
        )
    path = Path(spec.submodule_search_locations[0]) / "io" / "sample_data" / "demo_data.mat"
    if not path.is_file():
        raise FileNotFoundError(f"naplib is installed but its demo file {path} is missing")
    return path


def load_naplib_demo(path: str | os.PathLike | None = None, n_bands: int | None = None) -> Trials:
    """naplib's speech demo (``naplib.io.load_speech_task_data``) as Trials, read with h5py from its MATLAB
    v7.3 file: 10 trials of speech, the ``'aud'`` spectrogram (128 bands) and the ``'resp'`` of 10 simulated
    electrodes at ``'dataf'`` = 100 Hz (about 64 s each). ``path``: the file (default :func:`naplib_demo_path`).
    ``n_bands``: average groups of ``128 / n_bands`` adjacent bands (a divisor of 128; None keeps all 128).
    """
    path = Path(path) if path is not None else naplib_demo_path()
    if n_bands is not None and not (isinstance(n_bands, int) and 0 < n_bands <= 128 and 128 % n_bands == 0):
        raise ValueError(f"n_bands must divide naplib's 128 bands (1, 2, 4, ..., 64, 128) or be null; got {n_bands!r}")

    def text(f, ref) -> str:
        return "".join(chr(c) for c in np.asarray(f[ref][()]).ravel())

    try:
        with h5py.File(path, "r") as f:
            out = f["out"]
            refs = {key: [r for r in np.asarray(out[key]).ravel()] for key in ("aud", "resp", "dataf", "name")}
            stimuli = [np.asarray(f[r][()], dtype=np.float32).T for r in refs["aud"]]  # stored (T, F)
            responses = [np.asarray(f[r][()], dtype=np.float32).T for r in refs["resp"]]  # stored (T, N)
            # rounded: the file holds 100 and 99.99999999999999
            rates = sorted({round(float(np.asarray(f[r][()]).ravel()[0]), 6) for r in refs["dataf"]})
            names = [text(f, r) for r in refs["name"]]
    except (OSError, KeyError) as error:
        raise ValueError(
            f"{path} is not naplib's demo file (a MATLAB v7.3 struct 'out' with fields aud, resp, dataf, name): {error}"
        ) from None
    if len(rates) != 1:
        raise ValueError(f"{path}: the trials have different frame rates {rates}")
    if n_bands is not None and n_bands != stimuli[0].shape[0]:
        stimuli = [x.reshape(n_bands, -1, x.shape[1]).mean(axis=1) for x in stimuli]
    return _build(
        str(path),
        lambda: Trials(
            stimuli, responses, rates[0], names=names, channel_names=[f"elec{n}" for n in range(responses[0].shape[0])]
        ),
    )
