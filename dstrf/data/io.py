"""Reading and writing trials on disk: HDF5 (``.h5``/``.hdf5``) or NumPy (``.npz``).

Layout (both formats): per trial i the arrays ``stimulus_{i}`` ``(F, T_i)``, ``response_{i}`` ``(N, T_i)`` and
optionally ``repeats_{i}`` ``(R, N, T_i)``; plus ``sfreq`` (scalar), ``freqs`` ``(F,)``, ``channel_names`` and
``trial_names`` (string arrays). Everything read goes through :class:`~dstrf.data.trials.Trials`, so a file
with a bad trial fails with the same message as data built in memory.
"""

from __future__ import annotations

import os
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
        np.savez(path, **arrays)
    else:
        raise ValueError(f"unknown trials file type {path.suffix!r} for {path}; use .h5, .hdf5 or .npz")
    return path


def load_trials(path: str | os.PathLike) -> Trials:
    """Read trials written by :func:`save_trials` (or laid out the same way by any other tool)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"trials file {path} does not exist")
    if path.suffix in _HDF5:
        with h5py.File(path, "r") as f:
            data = {key: f[key][()] for key in f.keys()}
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            data = {key: f[key] for key in f.files}
    else:
        raise ValueError(f"unknown trials file type {path.suffix!r} for {path}; use .h5, .hdf5 or .npz")

    def strings(key: str) -> list[str] | None:
        if key not in data:
            return None
        return [s.decode() if isinstance(s, bytes) else str(s) for s in np.asarray(data[key]).reshape(-1)]

    n_trials = sum(1 for key in data if key.startswith("stimulus_"))
    missing = [f"response_{i}" for i in range(n_trials) if f"response_{i}" not in data]
    missing += [f"stimulus_{i}" for i in range(n_trials) if f"stimulus_{i}" not in data]
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; trials must be numbered 0..{n_trials - 1}")
    if "sfreq" not in data:
        raise ValueError(f"{path}: no 'sfreq' (frame rate in Hz) stored")
    has_repeats = any(key.startswith("repeats_") for key in data)
    return Trials(
        [data[f"stimulus_{i}"] for i in range(n_trials)],
        [data[f"response_{i}"] for i in range(n_trials)],
        float(np.asarray(data["sfreq"])),
        freqs=data.get("freqs"),
        channel_names=strings("channel_names"),
        repeats=[data[f"repeats_{i}"] for i in range(n_trials)] if has_repeats else None,
        names=strings("trial_names"),
    )
