"""Finding the jobs of a run or sweep directory, and how far each got.

A job directory holds ``job.json`` (written when it starts) and ``done.json`` (written last, when it
completed): ``done.json`` -> "done", ``job.json`` alone -> "incomplete" (running, interrupted or failed),
neither -> "missing". The expected jobs of a sweep are those listed in ``sweep.json`` (written by dstrf's
sweeper); without it, the subdirectories (up to 3 levels deep) that hold ``job.json`` or ``metrics.json``.
A job's *group* is its overrides other than ``split.fold`` / ``split.jackknife`` (a sweep over two models and
all folds is two cross-validation experiments).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .job import read_json

__all__ = [
    "CV_KEYS",
    "SEARCH_DEPTH",
    "JobEntry",
    "SweepDirectoryError",
    "find_jobs",
    "is_job_dir",
    "job_entry",
    "job_status",
    "read_manifest",
]

CV_KEYS = ("split.fold", "split.jackknife")
SEARCH_DEPTH = 3  # job directories are searched this many levels below a sweep directory without sweep.json
_SKIP_DIRS = {"superseded", "checkpoints", "csv", "wandb"}


class SweepDirectoryError(ValueError):
    """The directory is not a run or sweep dstrf can read (not a directory, a malformed ``sweep.json``)."""


def job_status(job_dir: Path) -> str:
    """``"done"`` (``done.json``), ``"incomplete"`` (``job.json`` only: running, interrupted or failed) or
    ``"missing"``. A ``metrics.json`` without any marker (a run of a dstrf older than the markers) is done."""
    job_dir = Path(job_dir)
    if (job_dir / "done.json").is_file():
        return "done"
    if (job_dir / "job.json").is_file():
        return "incomplete"
    if (job_dir / "metrics.json").is_file():
        return "done"
    return "missing"


def is_job_dir(path: Path) -> bool:
    """Whether ``path`` is the directory of one dstrf job (a single run or one job of a sweep)."""
    path = Path(path)
    return (path / "job.json").is_file() or (path / "metrics.json").is_file() or (path / "done.json").is_file()


@dataclass(frozen=True)
class JobEntry:
    """One expected job of a sweep: where it is, what distinguishes it, and how far it got."""

    dir: Path  # absolute
    name: str  # relative to the sweep directory, '/'-separated ('.' for a single run)
    num: int | None
    overrides: tuple[str, ...]
    group: str
    fold: int | None
    jackknife: int | None
    status: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "dir": self.name,
            "num": self.num,
            "group": self.group,
            "fold": self.fold,
            "jackknife": self.jackknife,
            "status": self.status,
            "overrides": list(self.overrides),
        }


def _read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        value = yaml.safe_load(path.read_text())
    except (FileNotFoundError, yaml.YAMLError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _group_of(overrides: Sequence[str]) -> str:
    return ",".join(o for o in overrides if _override_key(o) not in CV_KEYS)


def _as_index(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _split_indices(job_dir: Path) -> tuple[int | None, int | None]:
    """(fold, jackknife) of a job from what it wrote: metrics.json, job.json or its Hydra config."""
    metrics = read_json(job_dir / "metrics.json")
    for node in ((metrics or {}).get("job"), (metrics or {}).get("split")):
        if isinstance(node, dict) and "fold" in node:
            return _as_index(node.get("fold")), _as_index(node.get("jackknife"))
    split = ((read_json(job_dir / "job.json") or {}).get("config") or {}).get("split")
    if not isinstance(split, dict):
        try:
            split = (yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text()) or {}).get("split")
        except (FileNotFoundError, yaml.YAMLError):
            split = None
    if isinstance(split, dict):
        return _as_index(split.get("fold", 0)), _as_index(split.get("jackknife"))
    return None, None


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _search(root: Path) -> list[Path]:
    found: list[Path] = []

    def walk(directory: Path, depth: int) -> None:
        try:
            children = sorted((p for p in directory.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
        except OSError:
            return
        for child in children:
            if child.name.startswith(".") or child.name in _SKIP_DIRS:
                continue
            if is_job_dir(child):
                found.append(child)  # never descend into a job (its superseded/ holds older job markers)
            elif depth < SEARCH_DEPTH:
                walk(child, depth + 1)

    walk(root, 1)
    return found


def job_entry(
    job_dir: Path,
    name: str = ".",
    num: int | None = None,
    overrides: Sequence[str] | None = None,
    group: str | None = None,
    fold: Any = None,
    jackknife: Any = None,
    known: bool = False,
) -> JobEntry:
    """The :class:`JobEntry` of ``job_dir``; what is not given (``known=False``) is read from its files."""
    job_dir = Path(job_dir).absolute()
    overrides = list(overrides) if overrides is not None else _read_overrides(job_dir)
    if not known:
        fold, jackknife = _split_indices(job_dir)
    return JobEntry(
        job_dir,
        name,
        num,
        tuple(overrides),
        group if group is not None else _group_of(overrides),
        _as_index(fold),
        _as_index(jackknife),
        job_status(job_dir),
    )


def read_manifest(sweep_dir: Path) -> dict | None:
    """``sweep.json`` of a sweep directory (written by dstrf's sweeper), or None."""
    manifest = read_json(Path(sweep_dir) / "sweep.json")
    if manifest is not None and not isinstance(manifest.get("jobs"), list):
        raise SweepDirectoryError(f"{Path(sweep_dir) / 'sweep.json'} has no list of jobs; is it a dstrf sweep.json?")
    return manifest


def find_jobs(sweep_dir: str | Path) -> list[JobEntry]:
    """Every expected job of a sweep directory, in sweep order: those listed in ``sweep.json``, or without it
    the subdirectories holding ``job.json``/``metrics.json`` (their group: the overrides in
    ``.hydra/overrides.yaml`` other than ``split.fold``/``split.jackknife`` and those all jobs share)."""
    sweep_dir = Path(sweep_dir).absolute()
    if not sweep_dir.exists():
        raise SweepDirectoryError(f"{sweep_dir} does not exist")
    if not sweep_dir.is_dir():
        raise SweepDirectoryError(f"{sweep_dir} is not a directory")
    manifest = read_manifest(sweep_dir)
    if manifest is not None:
        entries = []
        for k, job in enumerate(manifest["jobs"]):
            name = str(job.get("dir", job.get("num", k)))
            overrides = [str(o) for o in job.get("overrides", [])]
            entries.append(
                job_entry(
                    sweep_dir / name,
                    name=Path(name).as_posix(),
                    num=_as_index(job.get("num", k)),
                    overrides=overrides,
                    group=str(job["group"]) if job.get("group") is not None else _group_of(overrides),
                    fold=job.get("fold"),
                    jackknife=job.get("jackknife"),
                    known="fold" in job,
                )
            )
        return entries
    dirs = _search(sweep_dir)
    overrides_of = {d: [o for o in _read_overrides(d) if _override_key(o) not in CV_KEYS] for d in dirs}
    # Settings every job shares are the sweep's constants, not what distinguishes a group (dstrf's sweeper
    # names groups by the swept settings likewise).
    common = set.intersection(*(set(o) for o in overrides_of.values())) if len(dirs) > 1 else set()
    entries = []
    for d in dirs:
        name = d.relative_to(sweep_dir).as_posix()
        num = _as_index(name) if name.isdigit() else None
        group = ",".join(o for o in overrides_of[d] if o not in common)
        entries.append(job_entry(d, name=name, num=num, group=group))
    return entries
