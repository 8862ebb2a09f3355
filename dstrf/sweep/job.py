"""The life cycle of one job directory: skip what is done, resume what was interrupted, never lose results.

A job writes ``job.json`` when it starts and ``done.json`` as the very last step, both carrying the hash of
its config. Started again in the same directory (the same sweep command run twice, or a SLURM requeue):

- ``done.json`` with the same config hash: the job is complete; it is skipped and nothing is touched;
- ``job.json`` with the same hash but no ``done.json``: the job was interrupted; training resumes from
  ``checkpoints/last.ckpt``;
- a different hash (the config changed): the previous results are moved, whole, to
  ``superseded/<time>/`` inside the job directory, and the job starts afresh.

The hash covers the composed config without the ``hydra`` and ``paths`` nodes, and before interpolations are
resolved, so the same job on another machine (other paths) has the same hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["config_hash", "JobState", "prepare_job", "mark_started", "mark_done", "read_json"]

# Files and folders a job writes; everything else in the directory (e.g. a user's notes) stays in place.
# (Hydra's train.log stays: its handler is already open on it for the new run.)
_JOB_OUTPUTS = ("checkpoints", "csv", "wandb", "dstrf", "metrics.json", "test_predictions.npz", "job.json", "done.json")


def _identity(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=False)
    for key in ("hydra", "paths"):
        container.pop(key, None)
    return container


def config_hash(cfg: DictConfig) -> str:
    """A 16-hex-digit SHA-256 of the job's config (see the module docstring for what it covers)."""
    text = json.dumps(_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JobState:
    """What to do with a job directory: ``action`` is ``"skip"``, ``"resume"`` or ``"start"``."""

    action: str
    config_hash: str
    resume_from: Path | None = None
    superseded: Path | None = None


def read_json(path: str | Path) -> dict | None:
    """A job file's content, or None when it is absent or half-written (a killed job)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def _archive(job_dir: Path) -> Path | None:
    present = [job_dir / name for name in _JOB_OUTPUTS if (job_dir / name).exists()]
    if not present:
        return None
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    target = job_dir / "superseded" / stamp
    target.mkdir(parents=True)
    for path in present:
        shutil.move(str(path), target / path.name)
    return target


def prepare_job(job_dir: Path, cfg: DictConfig, read_only: bool = False) -> JobState:
    """Decide whether the job in ``job_dir`` is skipped, resumed or started (archiving stale results).

    ``read_only`` makes the same decision without moving anything: for the rank > 0 processes of a job whose
    processes a cluster started (SLURM tasks), which must resume exactly when rank 0 does.
    """
    digest = config_hash(cfg)
    done, started = read_json(job_dir / "done.json"), read_json(job_dir / "job.json")
    if done is not None and done.get("config_hash") == digest:
        return JobState("skip", digest)
    last = job_dir / "checkpoints" / "last.ckpt"
    if done is None and started is not None and started.get("config_hash") == digest and last.is_file():
        return JobState("resume", digest, resume_from=last)
    if read_only:
        return JobState("start", digest)
    if done is None and started is None and (job_dir / "metrics.json").exists():
        raise FileExistsError(
            f"{job_dir} holds results (metrics.json) that no dstrf job marker describes; refusing to touch them. "
            "Move them away or choose another output directory."
        )
    return JobState("start", digest, superseded=_archive(job_dir))


def mark_started(job_dir: Path, cfg: DictConfig, state: JobState) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"config_hash": state.config_hash, "started": dt.datetime.now().isoformat(timespec="seconds"),
              "resumed_from": str(state.resume_from) if state.resume_from else None, "config": _identity(cfg)}
    (job_dir / "job.json").write_text(json.dumps(record, indent=2, default=str))


def mark_done(job_dir: Path, state: JobState, summary: dict[str, Any]) -> None:
    """Written last: its presence means every other output of the job is complete."""
    record = {"config_hash": state.config_hash, "finished": dt.datetime.now().isoformat(timespec="seconds"), **summary}
    tmp = job_dir / "done.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(job_dir / "done.json")  # atomic: a reader never sees half a marker
