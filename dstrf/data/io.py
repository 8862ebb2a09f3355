"""Reading and writing trials on disk: HDF5 (``.h5``/``.hdf5``) or NumPy (``.npz``).

Layout (both formats): per trial i the arrays ``stimulus_{i}`` ``(F, T_i)``, ``response_{i}`` ``(N, T_i)`` and
optionally ``repeats_{i}`` ``(R, N, T_i)`` (for every trial or none); plus ``sfreq`` (scalar, or size-1 array),
``freqs`` ``(F,)``, ``channel_names`` and ``trial_names`` (string arrays). Other members are ignored with a
warning. Everything read goes through :class:`~dstrf.data.trials.Trials`, so a file with a bad trial fails with
the same message as data built in memory (with the file name in front).
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np

from .trials import Trials

__all__ = ["load_trials", "save_trials"]

_HDF5 = (".h5", ".hdf5")


def save_trials(trials: Trials, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``trials`` to ``path`` (format from the suffix). Refuses to replace an existing file unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    arrays: dict[str, np.ndarray] = {
        "sfreq": np.asarray(trials.sfreq),
        "freqs": np.asarray(trials.freqs),
        "channel_names": np.asarray(trials.channel_names, dtype=object if path.suffix in _HDF5 else str),
        "trial_names": np.asarray(trials.names, dtype=object if path.suffix in _HDF5 else str),
    }
    for i, trial in enumerate(trials):
        arrays[f"stimulus_{i}"] = trial.stimulus.numpy()
        arrays[f"response_{i}"] = trial.response.numpy()
        if trial.repeats is not None:
            arrays[f"repeats_{i}"] = trial.repeats.numpy()
    if path.suffix in _HDF5:
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                if value.dtype == object:
                    f.create_dataset(key, data=value.astype(str).tolist(), dtype=h5py.string_dtype())
                else:
                    f.create_dataset(key, data=value)
    elif path.suffix == ".npz":
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub: a ** dict could hold allow_pickle
    else:
        raise ValueError(f"unknown trials file type {path.suffix!r} for {path}; use .h5, .hdf5 or .npz")
    return path


_TRIAL_KEY = re.compile(r"(stimulus|response|repeats)_(0|[1-9][0-9]*)")
_METADATA = ("sfreq", "freqs", "channel_names", "trial_names")
_LAYOUT = (
    "a trials file holds stimulus_<i>, response_<i> and optionally repeats_<i> for trials i = 0, 1, ..., plus "
    "sfreq, freqs, channel_names and trial_names (see dstrf.data.save_trials)"
)


def _read_hdf5(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The top-level datasets of an HDF5 file by name, and the names of its other members (groups, links)."""
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated, or not HDF5?): {error}") from None
    data: dict[str, np.ndarray] = {}
    others: list[str] = []
    with f:
        for key in f.keys():
            item = f.get(key)  # None for a dangling link
            if not isinstance(item, h5py.Dataset):
                others.append(key)
                continue
            try:
                data[key] = item[()]
            except (OSError, ValueError, TypeError) as error:
                raise ValueError(f"{path}: dataset {key!r} could not be read (truncated file?): {error}") from None
    return data, others


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays of an ``.npz`` archive by name (and no other members: an archive holds only arrays)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz file (truncated?): {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path} holds a single array (written by np.save), not an .npz archive of named arrays; {_LAYOUT}"
        )
    data: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                data[key] = archive[key]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise ValueError(f"{path}: array {key!r} could not be read (truncated file?): {error}") from None
    return data, []


def _trial_count(path: Path, data: dict[str, np.ndarray], others: list[str]) -> tuple[int, bool]:
    """Number of trials and whether they have repeats; raises naming the file and the missing arrays, warns
    naming the keys that are ignored."""
    numbered: dict[str, set[int]] = {"stimulus": set(), "response": set(), "repeats": set()}
    unknown = []
    for key in data:
        match = _TRIAL_KEY.fullmatch(key)
        if match:
            numbered[match[1]].add(int(match[2]))
        elif key not in _METADATA:
            unknown.append(key)
    trial_ids = numbered["stimulus"] | numbered["response"]
    if not trial_ids:
        raise ValueError(
            f"{path}: no stimulus_0, response_0, ... arrays found; {_LAYOUT}; it has keys {sorted([*data, *others])}"
        )
    n_trials = max(trial_ids) + 1
    missing = [f"response_{i}" for i in range(n_trials) if i not in numbered["response"]]
    missing += [f"stimulus_{i}" for i in range(n_trials) if i not in numbered["stimulus"]]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; trials must be numbered 0..{n_trials - 1}")
    repeats = numbered["repeats"]
    beyond = sorted(i for i in repeats if i >= n_trials)
    if beyond:
        raise ValueError(f"{path}: repeats given for trials {beyond} but the trials are 0..{n_trials - 1}")
    if repeats and len(repeats) < n_trials:
        lacking = [i for i in range(n_trials) if i not in repeats]
        raise ValueError(
            f"{path}: repeats given for trials {sorted(repeats)} but not for {lacking}; "
            "give repeats for every trial or none"
        )
    if unknown or others:
        ignored = [f"arrays {sorted(unknown)}"] if unknown else []
        ignored += [f"groups/links {sorted(others)}"] if others else []
        warnings.warn(
            f"{path}: ignoring {' and '.join(ignored)}: not part of the trials layout; {_LAYOUT}",
            UserWarning,
            stacklevel=3,
        )
    if "sfreq" not in data:
        raise ValueError(f"{path}: no 'sfreq' (frame rate in Hz) stored; {_LAYOUT}")
    return n_trials, bool(repeats)


def load_trials(path: str | os.PathLike) -> Trials:
    """Read trials written by :func:`save_trials` (or laid out the same way by any other tool).

    Every error names the file. Members that are not part of the layout (other arrays, HDF5 groups) are ignored
    with a warning naming them. ``sfreq`` may be a scalar or an array of size 1. The data are validated by
    :class:`Trials`, whose errors and warnings are repeated here with the file name in front.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"trials file {path} is a directory; give an .h5, .hdf5 or .npz file")
    if not path.is_file():
        raise FileNotFoundError(f"trials file {path} does not exist")
    if path.suffix in _HDF5:
        data, others = _read_hdf5(path)
    elif path.suffix == ".npz":
        data, others = _read_npz(path)
    else:
        raise ValueError(f"unknown trials file type {path.suffix!r} for {path}; use .h5, .hdf5 or .npz")
    n_trials, has_repeats = _trial_count(path, data, others)

    def strings(key: str) -> list[str] | None:
        if key not in data:
            return None
        return [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(data[key]).reshape(-1)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trials = Trials(
                [data[f"stimulus_{i}"] for i in range(n_trials)],
                [data[f"response_{i}"] for i in range(n_trials)],
                data["sfreq"],
                freqs=data.get("freqs"),
                channel_names=strings("channel_names"),
                repeats=[data[f"repeats_{i}"] for i in range(n_trials)] if has_repeats else None,
                names=strings("trial_names"),
            )
        except (ValueError, TypeError) as error:
            raise (TypeError if isinstance(error, TypeError) else ValueError)(f"{path}: {error}") from None
    for warning in caught:  # Trials' shape warnings, with the file they are about
        warnings.warn(f"{path}: {warning.message}", warning.category, stacklevel=2)
    return trials
