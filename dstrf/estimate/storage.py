"""Chunked on-disk dSTRFs: written chunk by chunk, read in part.

One HDF5 file per trial holds the dataset ``dstrf`` ``(T', N', F, L)`` (chunked per block of frames and one
channel, so a slice of time or a channel reads only its chunks), the output frames ``times`` ``(T',)`` and
channels ``channels`` ``(N',)`` it covers, and attributes: ``lags``, ``receptive_field``, ``model`` and
``fingerprint``. The fingerprint is a hash of the model's weights, the stimulus and the selection, so the same
request finds its finished file again and a different one never overwrites it. A file is written as
``<name>.partial`` and renamed only when complete: a reader never sees half a result. Every chunk carries a
checksum (HDF5's fletcher32 filter), so a file damaged later (a bad copy, a bad disk) is a
:class:`DSTRFFileError` naming it when read, never wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from ..validation import DTYPES

__all__ = [
    "DSTRFFile",
    "DSTRFFileError",
    "GradmapFile",
    "JackknifeWriter",
    "MASK_MEANING",
    "open_dstrf",
    "open_gradmap",
    "fingerprint",
]

_DTYPES = dict(DTYPES.values())  # torch dtype -> the numpy dtype stored on disk

#: What ``mask`` == True means in every jackknife file dstrf writes (its attribute ``mask_meaning``).
MASK_MEANING = "True: the models agree in sign (significant, kept)"


def fingerprint(
    model: nn.Module, x: torch.Tensor, lags: int, channels: np.ndarray, times: np.ndarray, dtype: torch.dtype
) -> str:
    """A hash of everything that determines a dSTRF result."""
    h = hashlib.sha256()
    h.update(type(model).__qualname__.encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(np.asarray([lags], dtype=np.int64).tobytes())
    h.update(np.asarray(channels, dtype=np.int64).tobytes())
    h.update(np.asarray(times, dtype=np.int64).tobytes())
    h.update(str(dtype).encode())
    return h.hexdigest()[:32]


class DSTRFFileError(OSError):
    """A dSTRF file is there but cannot be read (truncated, damaged, not a dSTRF file); ``.path`` names it."""

    def __init__(self, path: Path, cause: BaseException | str) -> None:
        self.path = Path(path)
        cause = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause
        super().__init__(f"cannot read dSTRF file {self.path}: {cause}; remove it and compute it again")


class DSTRFFile:
    """A finished dSTRF file, read lazily: ``f[10:20]``, ``f[:, 3]`` or ``f.read(times=..., channels=...)``
    return torch tensors of just that part. ``f.times`` / ``f.channels`` say which frames and channels the
    rows and columns are. A jackknife file (:class:`JackknifeWriter`) opens too (``f.kind == "jackknife"``):
    its ``mean`` is the dSTRF read this way, and ``f.dataset("se")`` / ``f.dataset("mask")`` the rest;
    ``f.attrs`` holds the file's and the dataset's attributes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            partial = self.path.with_name(self.path.name + ".partial")
            hint = f" ({partial.name} exists: its computation did not finish)" if partial.exists() else ""
            raise FileNotFoundError(f"no dSTRF file at {self.path}{hint}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:  # h5py's message does not name the file
            raise DSTRFFileError(self.path, err) from err
        if "dstrf" in self._file:
            self.kind, name = "dstrf", "dstrf"
        elif {"mean", "se", "mask", "times"} <= set(self._file):  # a jackknife file: its mean is the dSTRF
            self.kind, name = "jackknife", "mean"
        else:
            self._file.close()
            raise ValueError(
                f"{self.path} is not a dSTRF file (no 'dstrf' dataset, nor a jackknife file's 'mean', 'se', "
                "'mask' and 'times'; a gradient-map file has no frames: open it with open_gradmap)"
            )
        try:
            self._data = self._file[name]
            self.times = self._file["times"][()]
            self.channels = self._file["channels"][()]
            self.attrs = {**dict(self._file.attrs), **dict(self._data.attrs)}
        except (OSError, KeyError) as err:
            self._file.close()
            raise DSTRFFileError(self.path, err) from err

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self._block(index)))

    def _block(self, index) -> np.ndarray:
        """``self._data[index]``; a chunk that fails its checksum or cannot be read names the file."""
        try:
            return self._data[index]
        except OSError as err:
            raise DSTRFFileError(self.path, err) from err

    def dataset(self, name: str, index=()) -> torch.Tensor:
        """Part ``index`` of another dataset of the file: a jackknife file's ``"se"`` or ``"mask"`` (True = the
        models agree in sign: significant), e.g. ``f.dataset("mask", (slice(10, 20), 3))``."""
        if name not in self._file or not isinstance(self._file[name], h5py.Dataset):
            raise KeyError(f"{self.path} has no dataset {name!r}; it has {sorted(self._file)}")
        try:
            return torch.from_numpy(np.asarray(self._file[name][index]))
        except OSError as err:
            raise DSTRFFileError(self.path, err) from err

    def read(self, times: Sequence[int] | None = None, channels: Sequence[int] | None = None) -> torch.Tensor:
        """Rows of the given output frames and channels (frame and channel numbers, not positions)."""
        rows = self._positions(self.times, times, "times")
        cols = self._positions(self.channels, channels, "channels")
        block = self._block(rows if isinstance(rows, slice) else np.sort(rows))
        if not isinstance(rows, slice):  # h5py reads increasing rows; restore the order asked for
            block = block[np.argsort(np.argsort(rows))]
        return torch.from_numpy(np.asarray(block[:, cols]))

    @staticmethod
    def _positions(stored: np.ndarray, wanted, what: str):
        if wanted is None:
            return slice(None)
        lookup = {int(v): i for i, v in enumerate(stored)}
        missing = [int(w) for w in wanted if int(w) not in lookup]
        if missing:
            raise KeyError(f"{what} {missing[:5]} are not in this file (it has {what} {stored[:3].tolist()}...)")
        return np.asarray([lookup[int(w)] for w in wanted])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DSTRFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DSTRFFile({self.path}, shape={self.shape}, dtype={self._data.dtype})"


def open_dstrf(path: str | os.PathLike) -> DSTRFFile:
    """Open a dSTRF file written by :func:`dstrf.estimate.dstrf` with ``out=``, or a jackknife dSTRF file
    (:func:`dstrf.estimate.jackknife_dstrf` with ``out=``, ``dstrf-estimate``)."""
    return DSTRFFile(path)


@dataclass
class GradmapFile:
    """The gradient maps of a file dstrf wrote, read whole (they are ``(N, F, L)``, small).

    ``maps``: the maps (a run's ``gradmaps.npz``) or the jackknife mean over a fold's models (a
    ``dstrf-estimate --gradmap`` file); ``se`` and ``mask`` (True: the models agree in sign) for the latter,
    else None; ``channels`` (output numbers), ``channel_names``, ``sfreq``, ``freqs`` (band centres, or None),
    ``lags`` and every other stored attribute in ``attrs`` (``reference``, ``readout``, ``convention``, ...).
    ``masked`` is the mean where significant, else 0 (the maps themselves without a mask).
    """

    path: Path
    maps: torch.Tensor
    channels: np.ndarray
    channel_names: list[str]
    sfreq: float
    freqs: np.ndarray | None
    se: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "gradmap" if self.mask is None else "jackknife"

    @property
    def masked(self) -> torch.Tensor:
        return self.maps if self.mask is None else self.maps * self.mask

    @property
    def lags(self) -> int:
        return int(self.maps.shape[-1])


def open_gradmap(path: str | os.PathLike) -> GradmapFile:
    """Read a gradient-map file: a run's ``gradmaps.npz`` (:class:`dstrf.lit.callbacks.GradmapCallback`) or a
    fold's jackknife file ``fold_<k>.h5`` (``dstrf-estimate --gradmap``); see :class:`GradmapFile`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no gradient-map file at {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path) as f:
                stored = {key: f[key] for key in f.files}
            if "maps" not in stored:
                raise ValueError(f"{path} is not a gradient-map file (no 'maps' array; it has {sorted(stored)})")
            maps, se, mask = torch.from_numpy(stored.pop("maps")), None, None
            names = [str(n) for n in stored.pop("channel_names", [])]
            attrs = {k: (v.item() if v.ndim == 0 else v) for k, v in stored.items()}
        else:
            with h5py.File(path, "r") as f:
                if not {"mean", "se", "mask"} <= set(f) or f["mean"].ndim != 3:
                    raise ValueError(
                        f"{path} is not a gradient-map file (a jackknife gradient-map file has 'mean', 'se' and "
                        f"'mask' of shape (channels, freqs, lags); it has {sorted(f)}): a dSTRF file opens with "
                        "open_dstrf"
                    )
                maps, se, mask = (torch.from_numpy(f[k][()]) for k in ("mean", "se", "mask"))
                attrs = {**dict(f.attrs), "channels": f["channels"][()]}
            names = json.loads(attrs.pop("channel_names", "[]"))
    except OSError as err:
        raise DSTRFFileError(path, err) from err
    channels = np.asarray(attrs.pop("channels", np.arange(maps.shape[0])))
    if len(names) > maps.shape[0]:  # the names of every output, and the file holds some of them
        names = [names[int(c)] for c in channels]
    freqs = np.asarray(attrs.pop("freqs", []), dtype=np.float64).reshape(-1)
    return GradmapFile(
        path=path,
        maps=maps,
        channels=channels,
        channel_names=names or [str(int(c)) for c in channels],
        sfreq=float(attrs.pop("sfreq", float("nan"))),
        freqs=freqs if freqs.size else None,
        se=se,
        mask=mask,
        attrs=attrs,
    )


class _PartialFile:
    """An HDF5 file of dSTRF-shaped datasets ``(T', N', F, L)``, written as ``<name>.partial`` and renamed by
    :meth:`finish` when complete, so a file at ``path`` is always whole (a stale ``.partial`` is an unfinished
    run of ours: replaced). Holds ``times`` and ``channels``; ``chunks`` is the chunk shape of the datasets
    (64 frames of one channel)."""

    def __init__(
        self, path: str | os.PathLike, shape: tuple[int, ...], dtype: torch.dtype, times, channels, what: str
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"{what} files store float16, float32 or float64; got {dtype}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self.partial, "w")
        self.chunks = (max(1, min(shape[0], 64)), 1, shape[2], shape[3])
        self._file.create_dataset("times", data=np.asarray(times, dtype=np.int64))
        self._file.create_dataset("channels", data=np.asarray(channels, dtype=np.int64))

    def finish(self) -> Path:
        self._file.close()
        self.partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        self._file.close()


class _Writer(_PartialFile):
    """Receives computed rows chunk by chunk into the dataset ``dstrf``; renamed when complete."""

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        times: np.ndarray,
        channels: np.ndarray,
        attrs: dict,
    ) -> None:
        super().__init__(path, shape, dtype, times, channels, "dSTRF")
        self._data = self._file.create_dataset(
            "dstrf", shape=shape, dtype=_DTYPES[dtype], chunks=self.chunks, fletcher32=True
        )
        self._data.attrs.update(attrs)

    def write(self, rows: np.ndarray, values: torch.Tensor) -> None:
        order = np.argsort(rows)
        self._data[rows[order]] = values[torch.as_tensor(order)].numpy()


class JackknifeWriter(_PartialFile):
    """Writes a jackknife dSTRF file block by block: datasets ``mean`` and ``se`` ``(T', N', F, L)`` in
    ``dtype``, ``mask`` (bool, True = significant: keep the bin) of the same shape, ``times`` and ``channels``,
    and the file attributes ``attrs``; ``mask_meaning`` says what True means. Chunked per 64 frames of one
    channel with a checksum per chunk, like a dSTRF file, and written as ``<name>.partial``, renamed by
    :meth:`finish` (:meth:`abort` on failure leaves the ``.partial`` file, never a file at ``path`` that looks
    finished)."""

    def __init__(
        self,
        path: str | os.PathLike,
        shape: tuple[int, int, int, int],
        dtype: torch.dtype,
        times: np.ndarray,
        channels: np.ndarray,
        attrs: dict,
    ) -> None:
        super().__init__(path, shape, dtype, times, channels, "jackknife")
        self._data = {
            name: self._file.create_dataset(name, shape=shape, dtype=kind, chunks=self.chunks, fletcher32=True)
            for name, kind in (("mean", _DTYPES[dtype]), ("se", _DTYPES[dtype]), ("mask", np.bool_))
        }
        self._file.attrs.update({**attrs, "mask_meaning": MASK_MEANING})

    def write(self, rows: slice, cols: slice, mean: torch.Tensor, se: torch.Tensor, mask: torch.Tensor) -> None:
        """The block ``[rows, cols]`` of the three datasets."""
        for name, values in (("mean", mean), ("se", se), ("mask", mask)):
            self._data[name][rows, cols] = values.numpy()
