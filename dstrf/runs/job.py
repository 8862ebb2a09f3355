"""The life cycle of one job directory: skip what is done, finish or resume what was interrupted, never lose results.

A job writes, in order:

1. ``job.json`` when it starts (its config and the hash that identifies it);
2. ``checkpoints/*.ckpt`` during training, each written to ``<name>.part`` and renamed (atomic);
3. ``fit.json`` when training has ended (which checkpoint is best, how many epochs ran);
4. its results (``metrics.json``, ``test_predictions.npz``, what callbacks write);
5. ``done.json`` as the very last step, listing every result file with its size.

Started again in the same directory (the same command run twice, or a SLURM requeue), with the same hash:

- ``done.json`` whose listed files are all present, of the recorded size and readable: the job is complete;
  it is skipped and nothing is touched;
- ``fit.json`` with readable best and last checkpoints (results missing, partial or unreadable): training
  is not repeated; the job is *finished*: its results are computed again from the best checkpoint;
- otherwise the newest readable checkpoint (``last.ckpt`` first): training *resumes* from it; an unreadable
  checkpoint (truncated by a kill mid-write on an older dstrf, or damaged) is renamed
  ``<name>.unreadable-<time>`` and the next one is tried; with none readable the job starts over.

With a different hash (the config or the data changed), the previous results are moved, whole, to
``superseded/<time>/`` inside the job directory, and the job starts afresh. Unmarked results (a
``metrics.json`` no marker describes) are never touched.

The hash covers the composed config without the ``hydra`` and ``paths`` nodes, before interpolations are
resolved, with every data file (a ``path`` under ``data``) replaced by the SHA-256 of its content: the same
job on another machine (other paths) has the same hash, and overwriting the data file at the same path gives
a new one. Synthetic data are fingerprinted by their generator's parameters, which the config holds.

Only one process at a time runs a job directory: :func:`lock_job` refuses a second one at once.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "JobLockedError",
    "JobState",
    "checkpoint_problem",
    "config_hash",
    "data_files",
    "file_digest",
    "jsonable",
    "lock_job",
    "mark_done",
    "mark_fitted",
    "mark_started",
    "outputs_problem",
    "prepare_job",
    "read_json",
    "relative_path",
    "write_json",
]

# Files and folders a job writes; everything else in the directory (e.g. a user's notes) stays in place.
# (Hydra's train.log stays: its handler is already open on it for the new run.)
JOB_OUTPUTS = (
    ".hydra",
    "checkpoints",
    "csv",
    "wandb",
    "dstrf",
    "gradmap",
    "metrics.json",
    "test_predictions.npz",
    "ridge_cv.png",
    "job.json",
    "fit.json",
    "done.json",
)
_DIGESTS: dict[tuple[str, int, int], str] = {}


# ------------------------------------------------------------------------------------------------------ identity


def _resolve_path(value: str, base: Path | None) -> Path:
    """A data path as the run sees it: a relative path is relative to ``base`` (default: the current directory)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base if base is not None else Path.cwd()) / path


# Loaders whose file lists other files (``_target_`` -> the function listing them): those files are data too.
LISTED_FILES = {"dstrf.data.manifest.load_manifest": "dstrf.data.manifest.manifest_files"}


def _listed(key: str, target: str, listing: Path) -> dict[str, Path]:
    """``{"<key>[<file>]": file}`` for every file ``listing`` names (relative to its folder when inside it)."""
    if not listing.is_file():
        return {}  # its own key reports it missing
    module, name = LISTED_FILES[target].rsplit(".", 1)
    import importlib

    entries = {}
    for file in getattr(importlib.import_module(module), name)(listing):
        try:
            label = file.relative_to(listing.parent).as_posix()
        except ValueError:
            label = str(file)
        entries[f"{key}[{label}]"] = file
    return entries


def data_files(cfg: DictConfig, base: str | Path | None = None) -> dict[str, Path]:
    """Every data file of the config: ``{"data.trials.path": Path(...)}`` for each ``path`` key under ``data``
    (absolute; a relative path is taken relative to ``base``, default the current directory: the entry point
    passes the directory the command ran in), and the files a manifest lists (``data.trials.path[stimuli/a.wav]``)."""
    base = Path(base) if base is not None else None
    found: dict[str, Path] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "path" and isinstance(v, str):
                    found[f"{key}.{k}"] = _resolve_path(v, base)
                    if node.get("_target_") in LISTED_FILES:
                        found.update(_listed(f"{key}.{k}", node["_target_"], found[f"{key}.{k}"]))
                else:
                    walk(v, f"{key}.{k}")

    if cfg.get("data") is not None:
        walk(OmegaConf.to_container(cfg.data, resolve=True), "data")
    return found


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content (read in 1 MiB blocks; remembered per path, size and mtime in this process)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def data_fingerprint(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``{config key: {"path", "sha256", "bytes"}}`` of every data file; a missing file is an error naming its key."""
    out = {}
    for key, path in data_files(cfg).items():
        if not path.is_file():
            raise FileNotFoundError(f"{key}: the data file {path} does not exist")
        out[key] = {"path": str(path), "sha256": file_digest(path), "bytes": path.stat().st_size}
    return out


def _config_record(cfg: DictConfig) -> dict[str, Any]:
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=False))  # a DictConfig gives a dict
    for key in ("hydra", "paths"):
        container.pop(key, None)
    return container


def _identity(cfg: DictConfig) -> dict[str, Any]:
    container = _config_record(cfg)
    listed = {}
    for key, record in data_fingerprint(cfg).items():
        if "[" in key:  # a file a manifest lists: identified by its content, under the manifest's key
            listed[key] = record["sha256"]
            continue
        node = container
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = f"sha256:{record['sha256']}"  # the content, not where it lies
    if listed:
        container["listed_data_files"] = listed
    return container


def config_hash(cfg: DictConfig) -> str:
    """A 16-hex-digit SHA-256 of the job's config and data (see the module docstring for what it covers)."""
    text = json.dumps(_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- job files


def read_json(path: str | Path) -> dict | None:
    """A job file's content, or None when it is absent or half-written (a killed job)."""
    try:
        value = json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON: NaN and infinities -> None (JSON has no NaN), numpy scalars and arrays -> Python."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | Path, record: dict[str, Any]) -> None:
    """Write a JSON file atomically (a temporary file in the same directory, then a rename); NaN as null."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(record), indent=2, default=str, allow_nan=False))
    tmp.replace(path)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why a checkpoint (or any zip-based file: ``.ckpt``, ``.npz``) cannot be read, or None when it can.

    torch checkpoints are zip archives; a truncated one has no central directory, a damaged one fails the
    CRC check of a member. Reading every member's CRC costs one pass over the file, far less than loading it.
    """
    path = Path(path)
    if not path.is_file():
        return f"{path.name} is missing"
    if path.stat().st_size == 0:
        return f"{path.name} is empty"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"{path.name} is truncated or not a checkpoint ({err})"
    if bad is not None:
        return f"{path.name} is damaged (member {bad} fails its CRC check)"
    return None


def _file_problem(path: Path, size: int | None) -> str | None:
    if not path.exists():
        return f"{path.name} is missing"
    if path.is_dir():
        return None
    if size is not None and path.stat().st_size != size:
        return f"{path.name} has {path.stat().st_size} bytes, not the {size} it had when the job finished"
    if path.suffix == ".json":
        return None if read_json(path) is not None else f"{path.name} is not readable JSON"
    if path.suffix in (".ckpt", ".npz"):
        return checkpoint_problem(path)
    return None


def outputs_problem(job_dir: Path, done: dict) -> str | None:
    """Why the results ``done.json`` lists are not all there (missing, changed or unreadable), or None."""
    outputs = done.get("outputs")
    if not isinstance(outputs, dict):  # a done.json of an older dstrf: at least its metrics must be readable
        outputs = {"metrics.json": None}
    for name, size in outputs.items():
        problem = _file_problem(Path(job_dir) / name, size)
        if problem is not None:
            return problem
    return None


# -------------------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class JobState:
    """What to do with a job directory.

    ``action``: ``"skip"`` (complete), ``"finish"`` (training done, results to compute again from the best
    checkpoint), ``"resume"`` (from ``resume_from``) or ``"start"``. ``notes``: what was found and done
    about it (an unreadable checkpoint set aside, incomplete results), for the job to report.
    """

    action: str
    config_hash: str
    resume_from: Path | None = None
    superseded: Path | None = None
    notes: tuple[str, ...] = field(default=())
    data: dict[str, dict[str, Any]] = field(default_factory=dict)


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def _archive(job_dir: Path) -> Path | None:
    present = [job_dir / name for name in JOB_OUTPUTS if (job_dir / name).exists()]
    if not present:
        return None
    target = job_dir / "superseded" / _stamp()
    target.mkdir(parents=True)
    for path in present:
        shutil.move(str(path), target / path.name)
    return target


def _checkpoints_newest_first(job_dir: Path) -> list[Path]:
    directory = job_dir / "checkpoints"
    if not directory.is_dir():
        return []
    others = sorted(
        (p for p in directory.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True
    )
    last = directory / "last.ckpt"
    return ([last] if last.is_file() else []) + others


def _in_job(job_dir: Path, value: Any) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else job_dir / path


def prepare_job(job_dir: Path, cfg: DictConfig, read_only: bool = False) -> JobState:
    """Decide whether the job in ``job_dir`` is skipped, finished, resumed or started (see the module docstring).

    ``read_only`` makes the same decision without moving or renaming anything: for the rank > 0 processes of
    a job whose processes a cluster started (SLURM tasks), which must resume exactly when rank 0 does.
    """
    job_dir = Path(job_dir)
    data = data_fingerprint(cfg)
    digest = config_hash(cfg)
    done, started, fitted = (read_json(job_dir / name) for name in ("done.json", "job.json", "fit.json"))
    notes: list[str] = []
    if done is not None and done.get("config_hash") == digest:
        problem = outputs_problem(job_dir, done)
        if problem is None:
            return JobState("skip", digest, data=data)
        notes.append(f"the results of the finished job are incomplete ({problem})")
    same = any(record is not None and record.get("config_hash") == digest for record in (done, started))
    if same:
        last = job_dir / "checkpoints" / "last.ckpt"
        if fitted is not None and fitted.get("config_hash") == digest:
            best = _in_job(job_dir, fitted.get("best_checkpoint"))
            if checkpoint_problem(last) is None and (best is None or checkpoint_problem(best) is None):
                return JobState("finish", digest, resume_from=last, notes=tuple(notes), data=data)
        readable, lost_best = [], False
        for candidate in _checkpoints_newest_first(job_dir):
            problem = checkpoint_problem(candidate)
            if problem is None:
                readable.append(candidate)
                continue
            lost_best |= candidate.name != "last.ckpt"  # the best model so far: only retraining brings it back
            if not read_only:
                aside = candidate.with_name(f"{candidate.name}.unreadable-{_stamp()}")
                candidate.rename(aside)
                problem = f"{problem}: set aside as {aside.name}"
            notes.append(problem)
        if readable and not lost_best:
            return JobState("resume", digest, resume_from=readable[0], notes=tuple(notes), data=data)
        if notes or (job_dir / "checkpoints").is_dir():
            notes.append(
                "the best checkpoint is unreadable: the job starts over"
                if lost_best
                else "no readable checkpoint: the job starts over"
            )
    if read_only:
        return JobState("start", digest, notes=tuple(notes), data=data)
    if done is None and started is None and (job_dir / "metrics.json").exists():
        raise FileExistsError(
            f"{job_dir} holds results (metrics.json) that no dstrf job marker describes; refusing to touch them. "
            "Move them away or choose another output directory."
        )
    return JobState("start", digest, superseded=_archive(job_dir), notes=tuple(notes), data=data)


# ------------------------------------------------------------------------------------------------------ markers


def mark_started(job_dir: Path, cfg: DictConfig, state: JobState) -> None:
    """``job.json``; a ``done.json`` that no longer describes complete results is removed."""
    job_dir.mkdir(parents=True, exist_ok=True)
    if state.action != "skip":
        (job_dir / "done.json").unlink(missing_ok=True)
    for part in (job_dir / "checkpoints").glob("*.part"):  # a checkpoint write that a kill cut short
        part.unlink()
    record = {
        "config_hash": state.config_hash,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "action": state.action,
        "resumed_from": relative_path(state.resume_from, job_dir),
        "notes": list(state.notes),
        "data": state.data,
        "config": _config_record(cfg),
    }
    write_json(job_dir / "job.json", record)


def mark_fitted(
    job_dir: Path, state: JobState, best_checkpoint: str | None, last_checkpoint: str | None, epochs: int
) -> None:
    """``fit.json``: training has ended; a re-run only recomputes the results from ``best_checkpoint``."""
    write_json(
        job_dir / "fit.json",
        {
            "config_hash": state.config_hash,
            "finished": dt.datetime.now().isoformat(timespec="seconds"),
            "best_checkpoint": relative_path(best_checkpoint, job_dir),
            "last_checkpoint": relative_path(last_checkpoint, job_dir),
            "epochs": int(epochs),
        },
    )


def mark_done(job_dir: Path, state: JobState, summary: dict[str, Any], outputs: Sequence[str | Path] = ()) -> None:
    """Written last: its presence means every file in ``outputs`` (paths in or relative to ``job_dir``) is
    complete. Their sizes are recorded, so a file later removed, truncated or replaced makes the job
    incomplete again (:func:`outputs_problem`)."""
    sizes = {}
    for output in outputs:
        path = Path(output) if Path(output).is_absolute() else job_dir / output
        sizes[relative_path(path, job_dir)] = path.stat().st_size if path.is_file() else None
    record = {
        "config_hash": state.config_hash,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "outputs": sizes,
        **summary,
    }
    write_json(job_dir / "done.json", record)  # atomic: a reader never sees half a marker


def relative_path(path: str | Path | None, root: Path) -> str | None:
    """``path`` relative to ``root`` when it lies inside it (as job files store paths), else as given."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------- lock


class JobLockedError(RuntimeError):
    """Another process is running the job in this directory."""


def lock_job(job_dir: Path) -> IO:
    """Hold ``job_dir/.job.lock`` for as long as the returned file stays open; a second process raises
    :class:`JobLockedError` at once instead of both writing into one directory."""
    job_dir.mkdir(parents=True, exist_ok=True)
    handle = open(job_dir / ".job.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise JobLockedError(
            f"another dstrf job is running in {job_dir} (pid {holder}); wait for it to end, or give this run "
            "another directory (hydra.run.dir=...)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
