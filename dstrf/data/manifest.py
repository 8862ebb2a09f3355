"""A manifest of trials (audio file + neural response per row) to :class:`~dstrf.data.trials.Trials`.

The manifest is a CSV file (``.csv``, read with ``pandas.read_csv``; ``.tsv`` is tab-separated) or a YAML file
(``.yaml``/``.yml``: a list of mappings), one row per trial, rows in trial order (row i becomes trial i). Columns:

=============== ========= =====================================================================================
``audio``       required  the stimulus: an audio file (WAV, FLAC, OGG: :func:`dstrf.data.audio.load_audio`)
``response``    required  the trial-averaged response ``(N, T)``: a ``.npy`` file, or an ``.npz``/``.h5``/``.hdf5``
                          file whose array is named by ``key`` (optional when the file holds exactly one array);
                          a 1-D ``(T,)`` array is one channel
``key``         optional  the array in an ``.npz`` archive, or the dataset (``"group/name"``) in an HDF5 file
``repeats``     optional  single repeats ``(R, N, T)``, the same file types; ``repeats_key`` names the array
``name``        optional  the trial's name (default: the audio file's name without its suffix)
``sfreq``       optional  the response's sampling rate in Hz, when it differs from ``frame_rate``
=============== ========= =====================================================================================

Relative paths are relative to the manifest's folder. Empty cells count as absent. Rows are numbered from 0,
as the trials they become; errors about a CSV row also give its line in the file.

**Stimuli.** Each audio file becomes a causal spectrogram ``(F, T)`` at ``frame_rate`` by
:func:`dstrf.data.audio.spectrogram` (see there for the framing: frame t covers ``[t, t+1) / frame_rate`` s).

**Response rates.** Without ``sfreq`` a response is taken to be at ``frame_rate`` already. With ``sfreq`` it (and
its repeats) are resampled along time to ``frame_rate`` by ``scipy.signal.resample_poly`` with
``up / down = frame_rate / sfreq`` (a ratio of integers up to 1000): a zero-phase (linear-phase, delay
compensated) anti-aliasing FIR, so the response is smoothed symmetrically in time but not shifted; the output
has ``ceil(T * up / down)`` frames.

**Lengths.** A response whose length differs from its spectrogram's by at most ``tolerance`` seconds is
trimmed, with the spectrogram, to the shorter of the two by dropping frames *at the end* (frame 0 of both is
the start of the audio; only the tail is cut). A larger difference is an error naming the row, both lengths in
frames and seconds and the tolerance.

**Cache.** Spectrograms are cached on disk, one ``.npz`` per audio file and front-end, in ``cache_dir``
(default ``<manifest folder>/.dstrf_cache``). The file is named by the SHA-256 of the audio file's *content*
(not its name or date) together with every parameter of :func:`~dstrf.data.audio.spectrogram` (defaults
filled in) and a format version, so changing the audio or any parameter computes a new spectrogram. The key is
also stored inside the file and checked on reading; a file that cannot be read or does not match is
recomputed and replaced (with a warning), never trusted. Files are written to a temporary name in the same
folder and moved into place with ``os.replace``, so a crash or a concurrent run never leaves a half-written
cache file under the final name. An unwritable cache folder only warns.

**Fingerprints.** A run's data fingerprint hashes the manifest itself (its ``path``); :func:`manifest_files`
lists the audio, response and repeats files it refers to, so they can be hashed too.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import audio as _audio
from .formats import _build
from .trials import Trials

__all__ = ["load_manifest", "manifest_files", "CACHE_VERSION"]

CACHE_VERSION = 1  # bump when spectrogram()'s output or the cache layout changes: old cache files then miss
_CSV = {".csv": ",", ".tsv": "\t"}
_YAML = (".yaml", ".yml")
_REQUIRED = ("audio", "response")
_OPTIONAL = ("key", "repeats", "repeats_key", "name", "sfreq")
_HDF5 = (".h5", ".hdf5")
_ARRAY_SUFFIXES = (".npy", ".npz", *_HDF5)
_MAX_RATE_TERM = 1000  # largest up/down of the response resampling ratio
# spectrogram()'s parameters other than the waveform, with their defaults: the front-end part of the cache key.
# Taken at import, so that a wrapped spectrogram (e.g. a test counting calls) does not change the keys.
_FRONT_END_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(_audio.spectrogram).parameters.items()
    if name not in ("waveform", "sample_rate")
}


@dataclass(frozen=True)
class _Row:
    """One validated manifest row: absolute paths, optional ``key``/``repeats``/``sfreq``, and its ``label``
    (manifest, row number, line, name) that every error about the row starts with."""

    label: str
    name: str
    audio: Path
    response: Path
    key: str | None
    repeats: Path | None
    repeats_key: str | None
    sfreq: float | None


# -- reading and validating the manifest: the one place rows are checked ------------------------------------------
def _read_records(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """The manifest's rows as mappings (column -> cell), and the file line of row 0 (CSV: 2, after the header;
    YAML: None). Raises naming the file when it is missing, of an unknown type, unreadable or not a table."""
    if path.is_dir():
        raise IsADirectoryError(f"manifest {path} is a directory; give a .csv, .tsv, .yaml or .yml file")
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in _CSV:
        import pandas  # a dependency; imported here so that YAML manifests do not pay for it

        try:  # every cell as text (names like "007" stay names), empty cells as ""; utf-8-sig: a BOM is dropped
            table = pandas.read_csv(
                path, sep=_CSV[suffix], dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig"
            )
        except (pandas.errors.ParserError, pandas.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise ValueError(f"manifest {path} could not be read as {suffix[1:].upper()}: {error}") from None
        table.columns = [str(c).strip() for c in table.columns]
        return table.to_dict("records"), 2
    if suffix in _YAML:
        import yaml

        try:
            records = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise ValueError(f"manifest {path} is not valid YAML: {error}") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            got = type(records).__name__ if not isinstance(records, list) else "a list with non-mapping items"
            raise ValueError(
                f"manifest {path} must be a YAML list of mappings, one per trial (- audio: a.wav\\n  response: a.npy); "
                f"got {got}"
            )
        return [{str(k): v for k, v in r.items()} for r in records], None
    raise ValueError(f"unknown manifest type {path.suffix!r} for {path}; use .csv, .tsv, .yaml or .yml")


def _cell(record: dict[str, Any], column: str) -> str | None:
    """A cell as stripped text; ``None`` for an absent column, an empty cell or a YAML null."""
    value = record.get(column)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _resolve(value: str, base: Path) -> Path:
    """A path from the manifest: ``~`` expanded, relative paths taken relative to the manifest's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _row(path: Path, i: int, record: dict[str, Any], first_line: int | None) -> _Row:
    """Validate row ``i``: the required columns are present and non-empty, ``sfreq`` is a positive number."""
    where = f"{path}, row {i}" + (f" (line {first_line + i})" if first_line is not None else "")
    required: dict[str, str] = {}
    for column in _REQUIRED:
        if column not in record:
            raise ValueError(
                f"{where}: no {column!r} column; a manifest needs columns {list(_REQUIRED)} (optional "
                f"{list(_OPTIONAL)}); the columns present are {list(record)}"
            )
        value = _cell(record, column)
        if value is None:
            raise ValueError(f"{where}: the {column!r} cell is empty; give the path of the trial's {column} file")
        required[column] = value
    audio = _resolve(required["audio"], path.parent)
    name = _cell(record, "name") or audio.stem
    label = f"{where} ({name!r})"
    sfreq = _cell(record, "sfreq")
    rate: float | None = None
    if sfreq is not None:
        try:
            rate = float(sfreq)
        except ValueError:
            raise ValueError(f"{label}: sfreq must be the response's sampling rate in Hz; got {sfreq!r}") from None
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"{label}: sfreq must be a positive sampling rate in Hz; got {sfreq!r}")
    repeats = _cell(record, "repeats")
    return _Row(
        label=label,
        name=name,
        audio=audio,
        response=_resolve(required["response"], path.parent),
        key=_cell(record, "key"),
        repeats=_resolve(repeats, path.parent) if repeats is not None else None,
        repeats_key=_cell(record, "repeats_key"),
        sfreq=rate,
    )


def _read_manifest(path: str | os.PathLike) -> tuple[Path, list[_Row]]:
    """The manifest's absolute path and its validated rows; warns naming columns it does not know (typos)."""
    path = Path(path).expanduser().absolute()
    records, first_line = _read_records(path)
    if not records:
        raise ValueError(f"manifest {path} has no rows; give one row per trial with columns {list(_REQUIRED)}")
    known = {*_REQUIRED, *_OPTIONAL}
    unknown = sorted({c for r in records for c in r} - known)
    if unknown:
        warnings.warn(
            f"manifest {path}: ignoring unknown column(s) {unknown}; the columns read are {sorted(known)}",
            UserWarning,
            stacklevel=3,
        )
    return path, [_row(path, i, r, first_line) for i, r in enumerate(records)]


def manifest_files(path: str | os.PathLike) -> list[Path]:
    """Every file the manifest at ``path`` refers to, absolute, in row order, each once: per row the audio, the
    response and the repeats file (if any). The manifest itself is not included; the files are not opened
    (a missing one is listed all the same), so this is cheap enough to hash them for a run's fingerprint."""
    _, rows = _read_manifest(path)
    files = [f for row in rows for f in (row.audio, row.response, row.repeats) if f is not None]
    return list(dict.fromkeys(files))


# -- arrays: responses and repeats ----------------------------------------------------------------------------------
def _one_array(names: list[str], key: str | None, where: str, column: str) -> str:
    """The array ``key`` (from the manifest's ``column``) names, or the only array when ``key`` is None; else an
    error listing the arrays."""
    if key is None:
        if len(names) == 1:
            return names[0]
        raise ValueError(f"{where} holds arrays {names}; name the one to use in the manifest's {column} column")
    if key not in names:
        raise ValueError(f"{where} has no array {key!r} (from the {column} column); it holds {names}")
    return key


def _load(file: Path, key: str | None, where: str, column: str) -> np.ndarray:
    """Read the array (see :func:`_read_array`); numpy's and h5py's own read errors propagate."""
    suffix = file.suffix.lower()
    if suffix in _HDF5:
        import h5py

        with h5py.File(file, "r") as f:
            datasets: list[str] = []
            f.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
            return f[_one_array(datasets, key, where, column)][()]
    loaded = np.load(file, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file (whatever its suffix)
        if key is not None:
            raise ValueError(
                f"{where} holds a single array, but the {column} column gives {key!r}; keys are for .npz/.h5 files"
            )
        return loaded
    with loaded:
        return loaded[_one_array(list(loaded.files), key, where, column)]


def _read_array(file: Path, key: str | None, what: str, label: str, ndims: tuple[int, ...]) -> np.ndarray:
    """The array ``what`` (response, repeats) of a row from a ``.npy``, ``.npz`` (array ``key``) or HDF5 file
    (dataset ``key``), with one of ``ndims`` dimensions; errors name the row, the file and what was expected."""
    where = f"{label}: {what} file {file}"
    if file.is_dir():
        raise IsADirectoryError(f"{where} is a directory; give a {'/'.join(_ARRAY_SUFFIXES)} file")
    if not file.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    if file.suffix.lower() not in _ARRAY_SUFFIXES:
        raise ValueError(f"{where} has unknown type {file.suffix!r}; use {', '.join(_ARRAY_SUFFIXES)}")
    try:
        array = np.asarray(_load(file, key, where, "key" if what == "response" else "repeats_key"))
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{where} could not be read (truncated, or not a {file.suffix} file?): {error}") from None
    except ValueError as error:
        if str(error).startswith(where):
            raise
        raise ValueError(f"{where} could not be read: {error}") from None
    if array.ndim not in ndims:
        layout = {1: "(frames,)", 2: "(channels, frames)", 3: "(repeats, channels, frames)"}
        expected = " or ".join(layout[n] for n in ndims)
        raise ValueError(f"{where} holds an array of shape {array.shape}; expected {expected}")
    return array


def _to_frame_rate(array: np.ndarray, sfreq: float | None, frame_rate: float, label: str) -> np.ndarray:
    """``array`` ``(..., T)`` resampled along its last axis from ``sfreq`` to ``frame_rate`` Hz with
    ``scipy.signal.resample_poly(array, up, down)``, ``up / down = frame_rate / sfreq``; unchanged without sfreq."""
    if sfreq is None or math.isclose(sfreq, frame_rate, rel_tol=1e-9):
        return array
    ratio = Fraction(frame_rate / sfreq).limit_denominator(_MAX_RATE_TERM)
    if ratio.numerator > _MAX_RATE_TERM or not math.isclose(float(ratio), frame_rate / sfreq, rel_tol=1e-9):
        raise ValueError(
            f"{label}: cannot resample the response from sfreq {sfreq:g} Hz to frame_rate {frame_rate:g} Hz: their "
            f"ratio is not a fraction of integers up to {_MAX_RATE_TERM}; resample it yourself"
        )
    import scipy.signal

    try:
        array = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{label}: the response must hold numbers to be resampled; got dtype {array.dtype}") from None
    return scipy.signal.resample_poly(array, ratio.numerator, ratio.denominator, axis=-1)


def _trim(
    stimulus: np.ndarray,
    response: np.ndarray,
    repeats: np.ndarray | None,
    frame_rate: float,
    tolerance: float,
    label: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Cut stimulus ``(F, T_s)``, response ``(N, T_r)`` and repeats ``(R, N, T_p)`` to their shortest length by
    dropping frames at the end, when each differs from ``T_s`` by at most ``tolerance`` seconds; else raise."""
    n_stim = stimulus.shape[-1]
    arrays = {"response": response} if repeats is None else {"response": response, "repeats": repeats}
    for what, array in arrays.items():
        n = array.shape[-1]
        if abs(n - n_stim) / frame_rate > tolerance + 1e-9:
            hint = ""
            if array.ndim >= 2 and abs(array.shape[-2] - n_stim) / frame_rate <= tolerance:
                hint = f"; its shape {array.shape} looks transposed: store it as (..., frames)"
            raise ValueError(
                f"{label}: the {what} has {n} frames ({n / frame_rate:.3f} s) but the spectrogram of the audio has "
                f"{n_stim} frames ({n_stim / frame_rate:.3f} s) at frame_rate {frame_rate:g} Hz: they differ by "
                f"{abs(n - n_stim) / frame_rate:.3f} s, more than tolerance {tolerance:g} s. Check that the {what} "
                f"belongs to this audio and is at {frame_rate:g} Hz (else give its rate in an sfreq column){hint}"
            )
    n = min(n_stim, *(a.shape[-1] for a in arrays.values()))
    return stimulus[:, :n], response[..., :n], None if repeats is None else repeats[..., :n]


# -- spectrograms and their cache -----------------------------------------------------------------------------------
def _front_end(
    frame_rate: float, kind: str, n_bands: int, fmin: float, fmax: float | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """All keyword arguments of :func:`~dstrf.data.audio.spectrogram` but the waveform and its rate, defaults
    filled in; an argument spectrogram does not take is a TypeError naming it and the ones it takes."""
    unknown = sorted(set(extra) - set(_FRONT_END_DEFAULTS))
    if unknown:
        named = {"frame_rate", "kind", "n_bands", "fmin", "fmax"}
        raise TypeError(
            f"load_manifest: {unknown} are not extra spectrogram arguments; the extra ones it takes are "
            f"{sorted(set(_FRONT_END_DEFAULTS) - named)}"
        )
    params = dict(_FRONT_END_DEFAULTS)
    params.update(extra, frame_rate=frame_rate, kind=kind, n_bands=n_bands, fmin=fmin, fmax=fmax)
    return params


def _cache_key(audio_sha256: str, params: dict[str, Any]) -> str:
    """SHA-256 (hex) of the cache format version, the audio content's SHA-256 and the front-end parameters
    (as JSON with sorted keys; NumPy scalars as Python numbers, anything else by its repr)."""

    def canonical(value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value)
        return value if value is None or isinstance(value, str) else repr(value)

    record = {"version": CACHE_VERSION, "audio": audio_sha256, "params": {k: canonical(v) for k, v in params.items()}}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cache(file: Path, key: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(stimulus (F, T), freqs (F,), sample_rate)`` from a cache file, or None when there is none. A file that
    is unreadable, of another key or malformed warns and returns None, so that it is recomputed."""
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            stored_key, stimulus, freqs = str(data["key"]), data["stimulus"], data["freqs"]
            sample_rate = int(data["sample_rate"])
        if stored_key != key:
            raise ValueError(f"it holds key {stored_key[:12]}..., not {key[:12]}...")
        if stimulus.ndim != 2 or stimulus.dtype != np.float32 or freqs.shape != stimulus.shape[:1]:
            raise ValueError(f"malformed arrays: stimulus {stimulus.shape} {stimulus.dtype}, freqs {freqs.shape}")
        if not (np.isfinite(stimulus).all() and np.isfinite(freqs).all()):
            raise ValueError("non-finite values")
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        AttributeError,
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        warnings.warn(f"spectrogram cache file {file} is unusable ({error}); recomputing it", UserWarning, stacklevel=4)
        return None
    return stimulus, freqs, sample_rate


def _write_cache(file: Path, key: str, stimulus: np.ndarray, freqs: np.ndarray, sample_rate: int) -> None:
    """Write a cache file atomically: to a temporary file in the same folder, then ``os.replace`` onto ``file``.
    A folder that cannot be created or written only warns (the cache is an optimisation)."""
    tmp = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem[:16]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), stimulus=stimulus, freqs=freqs, sample_rate=np.array(sample_rate))
        os.replace(tmp, file)
    except OSError as error:
        warnings.warn(f"could not write spectrogram cache file {file}: {error}", UserWarning, stacklevel=4)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _stimulus(row: _Row, params: dict[str, Any], cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(stimulus (F, T), freqs (F,), sample_rate)`` of a row's audio, from the cache when it holds it."""
    if not row.audio.is_file():
        _audio.load_audio(row.audio)  # raises its FileNotFoundError / IsADirectoryError naming the path
    file = key = None
    if cache_dir is not None:
        key = _cache_key(_file_sha256(row.audio), params)
        file = cache_dir / f"{key}.npz"
        cached = _read_cache(file, key)
        if cached is not None:
            return cached
    waveform, sample_rate = _audio.load_audio(row.audio)
    stimulus, freqs = _audio.spectrogram(waveform, sample_rate, **params)
    if file is not None and key is not None:  # both set together, with a cache_dir
        _write_cache(file, key, stimulus, freqs, sample_rate)
    return stimulus, freqs, sample_rate


class _Loaded(NamedTuple):
    """One row's arrays: ``stimulus (F, T)``, ``freqs (F,)``, ``response (N, T)``, ``repeats (R, N, T)`` or None
    (all at the frame rate, the same T) and the audio's ``sample_rate``."""

    stimulus: np.ndarray
    freqs: np.ndarray
    response: np.ndarray
    repeats: np.ndarray | None
    sample_rate: int


def _trial(row: _Row, params: dict[str, Any], cache_dir: Path | None, frame_rate: float, tolerance: float) -> _Loaded:
    """One row's spectrogram (cached), response and repeats at ``frame_rate``, trimmed to the same T."""
    try:
        stimulus, freqs, sample_rate = _stimulus(row, params, cache_dir)
    except (FileNotFoundError, IsADirectoryError, ValueError, TypeError) as error:
        raise type(error)(f"{row.label}: {error}") from None
    response = _read_array(row.response, row.key, "response", row.label, (1, 2))
    response = _to_frame_rate(
        response.reshape(1, -1) if response.ndim == 1 else response, row.sfreq, frame_rate, row.label
    )
    repeats = None
    if row.repeats is not None:
        repeats = _read_array(row.repeats, row.repeats_key, "repeats", row.label, (3,))
        repeats = _to_frame_rate(repeats, row.sfreq, frame_rate, row.label)
    stimulus, response, repeats = _trim(stimulus, response, repeats, frame_rate, tolerance, row.label)
    return _Loaded(stimulus, freqs, response, repeats, sample_rate)


def _same_bands(rows: list[_Row], trials: list[_Loaded]) -> None:
    """Raise naming the first row whose band centres differ from row 0's (e.g. fmax=None at another sample rate)."""
    first = trials[0]
    for row, trial in zip(rows[1:], trials[1:]):
        if trial.freqs.shape != first.freqs.shape or not np.allclose(trial.freqs, first.freqs, rtol=1e-6):
            raise ValueError(
                f"{row.label}: its bands differ from row 0's (audio at {trial.sample_rate} Hz, row 0's at "
                f"{first.sample_rate} Hz; fmax=None "
                "follows each file's sample rate): give fmax explicitly so that every trial has the same bands"
            )


# -- the loader -----------------------------------------------------------------------------------------------------
def load_manifest(
    path: str | os.PathLike,
    frame_rate: float = 100.0,
    kind: str = "logmel",
    n_bands: int = 64,
    fmin: float = 50.0,
    fmax: float | None = None,
    tolerance: float = 0.05,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    **spectrogram_kwargs: Any,
) -> Trials:
    """Trials from a manifest of audio and response files (see the module docstring for the columns).

    Parameters
    ----------
    path : path of the manifest, ``.csv``/``.tsv``/``.yaml``/``.yml``.
    frame_rate : float
        Frames per second of the spectrograms, and so of the trials (``Trials.sfreq``).
    kind, n_bands, fmin, fmax, **spectrogram_kwargs
        Passed to :func:`dstrf.data.audio.spectrogram` (e.g. ``window``, ``floor_db``, ``resample``).
        ``fmax=None`` depends on each file's sample rate: give it when the files' rates differ, since every
        trial must have the same bands.
    tolerance : float
        Largest difference in seconds between a response's length and its spectrogram's that is trimmed (at the
        end, to the shorter); a larger one is an error.
    cache_dir : path, optional
        Folder of the spectrogram cache (default ``<manifest folder>/.dstrf_cache``; relative to the current
        folder when given). ``cache=False`` neither reads nor writes it.

    Returns
    -------
    Trials with stimuli ``(n_bands, T_i)`` in dB, responses ``(N, T_i)``, repeats if every row has them,
    ``sfreq = frame_rate``, ``freqs`` the band centres in Hz and ``names`` from the ``name`` column. Every error
    about a row names the manifest, the row and the trial's name.
    """
    if kind not in _audio.KINDS:
        raise ValueError(f"kind must be one of {_audio.KINDS}; got {kind!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be a number of seconds >= 0; got {tolerance!r}")
    if isinstance(frame_rate, bool) or not isinstance(frame_rate, (int, float)) or not 0 < frame_rate < math.inf:
        raise ValueError(f"frame_rate must be a positive number of frames per second; got {frame_rate!r}")
    frame_rate = float(frame_rate)
    params = _front_end(frame_rate, kind, n_bands, fmin, fmax, spectrogram_kwargs)
    manifest, rows = _read_manifest(path)
    has_repeats = [row.repeats is not None for row in rows]
    if any(has_repeats) and not all(has_repeats):
        lacking = [i for i, has in enumerate(has_repeats) if not has]
        raise ValueError(
            f"manifest {manifest}: rows {lacking} have no repeats but others do; give them for every row or none"
        )
    if cache:
        cache_dir = manifest.parent / ".dstrf_cache" if cache_dir is None else Path(cache_dir).expanduser()
    else:
        cache_dir = None

    trials = [_trial(row, params, cache_dir, frame_rate, float(tolerance)) for row in rows]
    _same_bands(rows, trials)
    return _build(
        f"manifest {manifest}",
        lambda: Trials(
            [t.stimulus for t in trials],
            [t.response for t in trials],
            frame_rate,
            freqs=trials[0].freqs,
            repeats=[t.repeats for t in trials] if all(has_repeats) else None,
            names=[row.name for row in rows],
        ),
    )
