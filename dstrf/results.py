"""Open a run or a sweep directory: its jobs, their configs, splits, metrics and checkpoints -> models.

    >>> from dstrf.inspect import load
    >>> exp = load("outputs/multiruns/cv_jackknife-3f2a9c1e07")      # or a single run's directory
    >>> for job in exp.jobs:
    ...     print(job.name, job.fold, job.jackknife, job.status, job.test_r)
    >>> job = exp.job(fold=0, jackknife=1)
    >>> job.split.test, job.split.train                               # trial ids
    >>> model = job.load_model()                                      # eval mode, on CPU, in the data's units
    >>> yhat = job.predict(3)                                         # trial 3 of the job's data, (N, T) numpy

Only paths relative to the run/sweep directory are used, so a sweep copied elsewhere (another machine, an
archive) opens the same; checkpoints written on a GPU load on the CPU (``map_location``).

``dstrf-inspect PATH`` lists the jobs; ``dstrf-inspect PATH --job fold0_jk1`` (or an index) shows one job's
config and split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import tables
from .runs.discovery import JobEntry, SweepDirectoryError, find_jobs, is_job_dir, job_entry, read_manifest
from .runs.job import read_json

if TYPE_CHECKING:  # torch / Lightning are imported only when a model or the data is needed
    import torch

    from .data import Split, Trials
    from .lit import EncoderModule

__all__ = ["CheckpointError", "Experiment", "Job", "NotAnExperimentError", "ResultFileError", "load", "main"]


class NotAnExperimentError(ValueError):
    """The path is neither a dstrf run directory nor a sweep directory."""


class ResultFileError(OSError):
    """A file a job wrote (its metrics, its checkpoint) is there but cannot be read: truncated, damaged, or not
    what dstrf wrote. The message names the file and the job; ``.path``, ``.job`` and ``.cause`` hold them."""

    what, remedy = "file", "rerun the sweep command to rerun the job"

    def __init__(self, path: Path, job: str, cause: str) -> None:
        self.path, self.job, self.cause = Path(path), job, cause
        super().__init__(f"cannot read {self.what} {self.path} (job {job}): {cause}; {self.remedy}")


class CheckpointError(ResultFileError):
    """A job's checkpoint is missing where its metrics say it is, or cannot be loaded."""

    what, remedy = "checkpoint", "rerun the sweep command to retrain it"


def _cause(error: BaseException) -> str:
    """``Type: message`` of an exception, for a :class:`ResultFileError`."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _for_resolving(config: DictConfig, job_dir: Path) -> DictConfig:
    """A copy of a job's config whose ``paths.output_dir`` (``${hydra:runtime.output_dir}`` in a run) is the
    job directory, so nodes that interpolate it resolve outside of Hydra."""
    config = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(config, resolve=False)))  # from a dict
    if isinstance(config.get("paths"), DictConfig):
        config.paths.output_dir = str(job_dir)
    return config


class Job:
    """One job (one trained model) of an :class:`Experiment`. Everything is read lazily from its directory."""

    def __init__(self, entry: JobEntry, experiment: Experiment, index: int) -> None:
        self._entry, self._experiment, self.index = entry, experiment, index
        self._module_cache: dict[str, EncoderModule] = {}

    # -- what the directory says ---------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """The job directory (absolute)."""
        return self._entry.dir

    @property
    def name(self) -> str:
        """The job directory relative to the experiment's (``"."`` for a single run)."""
        return self._entry.name

    @property
    def num(self) -> int | None:
        return self._entry.num

    @property
    def group(self) -> str:
        """The job's overrides other than the fold and jackknife ones ('' when none): jobs of one group form
        one cross-validation experiment."""
        return self._entry.group

    @property
    def overrides(self) -> tuple[str, ...]:
        return self._entry.overrides

    @property
    def fold(self) -> int | None:
        return self._entry.fold

    @property
    def jackknife(self) -> int | None:
        return self._entry.jackknife

    @property
    def status(self) -> str:
        """``"done"``, ``"incomplete"`` (started, not finished: running, interrupted or failed) or ``"missing"``."""
        return self._entry.status

    @cached_property
    def config(self) -> DictConfig | None:
        """The job's composed config (``.hydra/config.yaml``, interpolations unresolved), or None."""
        path = self.dir / ".hydra" / "config.yaml"
        if path.is_file():
            return cast(DictConfig, OmegaConf.load(path))  # a composed config is a mapping
        started = read_json(self.dir / "job.json")
        if started and isinstance(started.get("config"), dict):
            return OmegaConf.create(started["config"])
        return None

    @cached_property
    def metrics(self) -> dict | None:
        """``metrics.json`` (written when the job finished), or None when there is none, or when a job that did
        not finish left it half-written. Raises :class:`ResultFileError` when the one of a done job cannot be
        read: its split and best checkpoint would otherwise be guessed."""
        path = self.dir / "metrics.json"
        if not path.is_file():
            return None
        try:
            metrics = json.loads(path.read_text())
            if not isinstance(metrics, dict):
                raise ValueError(f"it holds a JSON {type(metrics).__name__}, not an object")
        except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
            if self.status != "done":
                return None  # written by a job that was killed while writing it
            raise ResultFileError(path, self.name, _cause(err)) from err
        return metrics

    @property
    def epochs(self) -> int | None:
        return (self.metrics or {}).get("epochs")

    @property
    def val_r(self) -> float | None:
        """Mean validation r at the best checkpoint."""
        return ((self.metrics or {}).get("val") or {}).get("r_mean")

    @property
    def test_r(self) -> float | None:
        """Mean test r (best checkpoint, every test trial's frames past the warm-up)."""
        return ((self.metrics or {}).get("test") or {}).get("r_mean")

    @cached_property
    def split(self) -> Split | None:
        """The job's :class:`dstrf.data.Split` (``.train``, ``.val``, ``.test`` trial ids): as ``metrics.json``
        recorded it, else recomputed from the config's split and the number of trials of its data (splits are
        deterministic); None for a job that never started."""
        from .data.splits import Split

        recorded = (self.metrics or {}).get("split")
        if isinstance(recorded, dict):
            names = {f.name for f in dataclasses.fields(Split)}
            return Split(**{k: v for k, v in recorded.items() if k in names})
        return self.configured_split()

    def configured_split(self) -> Split | None:
        """The split recomputed from the config's split and the number of trials of its data (what :attr:`split`
        falls back to without a ``metrics.json``); None without a config. It does not read ``metrics.json``, so
        it also says which trials a job whose metrics are unreadable tested."""
        if self.config is None or "split" not in self.config:
            return None
        import hydra.utils

        config = _for_resolving(self.config, self.dir)
        scheme = hydra.utils.instantiate(config.split)
        n_trials = len(self._experiment.trials(self))
        return scheme(n_trials) if callable(scheme) else scheme

    @property
    def checkpoint(self) -> Path | None:
        """The best checkpoint (from ``metrics.json``, relative to the job directory), else the newest
        ``checkpoints/best-*.ckpt``, else ``checkpoints/last.ckpt``, else None."""
        checkpoints = self.dir / "checkpoints"
        best = (self.metrics or {}).get("best_checkpoint")
        if best:
            path = Path(best)
            recorded = (self.dir / path) if not path.is_absolute() else path
            for candidate in (recorded, checkpoints / path.name):
                if candidate.is_file():
                    return candidate.absolute()
            # another checkpoint of the job (say last.ckpt) is not the model its metrics describe
            raise CheckpointError(
                recorded,
                self.name,
                f"metrics.json names it as the best checkpoint, but it is not there (nor in {checkpoints})",
            )
        found = sorted(checkpoints.glob("best-*.ckpt")) if checkpoints.is_dir() else []
        if found:
            return found[-1].absolute()
        last = checkpoints / "last.ckpt"
        return last.absolute() if last.is_file() else None

    # -- models --------------------------------------------------------------------------------------------------
    def load_module(self, device: str | torch.device = "cpu") -> EncoderModule:
        """The :class:`dstrf.lit.EncoderModule` of :attr:`checkpoint`, on ``device``, in eval mode (a fresh copy
        on every call). A checkpoint that cannot be loaded (truncated, damaged, not a dstrf checkpoint) raises
        :class:`CheckpointError`, which names the file and the job."""
        from .lit import EncoderModule

        path = self.checkpoint
        if path is None:
            raise FileNotFoundError(f"job {self.name} ({self.status}) has no checkpoint in {self.dir / 'checkpoints'}")
        try:
            module = EncoderModule.load_from_checkpoint(path, map_location=device)
        except Exception as err:  # noqa: BLE001 -- torch, zip, pickle and Lightning each raise their own
            raise CheckpointError(path, self.name, _cause(err)) from err
        return module.eval()

    def load_model(self, device: str | torch.device = "cpu", units: str = "data") -> torch.nn.Module:
        """The trained model on ``device``, in eval mode, as a map between the data's units by default
        (``units="data"``: raw stimulus ``(B, F, T)`` in, response ``(B, N, T)`` in the data's units out, a
        :class:`dstrf.lit.DataUnitsEncoder`), so that ``dstrf(job.load_model(), raw_stimulus)`` and
        ``gradmap(job.load_model())`` are in the data's units like :meth:`predict`. ``units="standardized"``
        gives the bare encoder (``job.load_module().encoder``: standardized stimulus in, standardized response
        out), for input standardized with the job's training statistics."""
        from .validation import option  # with torch: listing a sweep does not import it

        option(units, "units", ("data", "standardized"))
        module = self.load_module(device)
        return (module.data_units() if units == "data" else module.encoder).eval()

    def predict(self, trial: int | np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> np.ndarray:
        """Predicted response ``(N, T)`` in the data's units for trial id ``trial`` of the job's data (built
        from its config once per experiment) or for a raw stimulus array ``(F, T)``."""
        import torch

        key = str(device)
        if key not in self._module_cache:
            self._module_cache[key] = self.load_module(device)
        module = self._module_cache[key]
        if isinstance(trial, (int, np.integer)) and not isinstance(trial, bool):
            trials = self._experiment.trials(self)
            if not 0 <= int(trial) < len(trials):
                raise IndexError(f"trial {trial} does not exist: the data of job {self.name} has {len(trials)} trials")
            stimulus = trials[int(trial)].stimulus
        else:
            stimulus = trial if torch.is_tensor(trial) else torch.as_tensor(np.asarray(trial))
        return module.predict(stimulus).cpu().numpy()

    # -- tables --------------------------------------------------------------------------------------------------
    def row(self) -> dict[str, Any]:
        """One row of :meth:`Experiment.table`; ``problem`` says why a file of the job cannot be read (None when
        all can), and what depends on that file is then None."""
        try:
            checkpoint, problem = self.checkpoint, None
            epochs, val_r, test_r = self.epochs, self.val_r, self.test_r
        except ResultFileError as err:
            checkpoint, problem, epochs, val_r, test_r = None, str(err), None, None, None
        try:
            relative = checkpoint.relative_to(self._experiment.dir).as_posix() if checkpoint else None
        except ValueError:
            relative = str(checkpoint)
        return {
            "index": self.index,
            "dir": self.name,
            "group": self.group,
            "fold": self.fold,
            "jackknife": self.jackknife,
            "status": self.status,
            "epochs": epochs,
            "val_r": val_r,
            "test_r": test_r,
            "checkpoint": relative,
            "problem": problem,
        }

    def __repr__(self) -> str:
        return f"Job({self.name!r}, fold={self.fold}, jackknife={self.jackknife}, status={self.status!r})"


class Experiment:
    """A run directory (one job) or a sweep directory (many); see :func:`load`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path).absolute()
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is not a directory (give a dstrf run or sweep directory)")
        self.dir = path
        self.manifest: dict | None = None
        try:
            self.manifest = read_manifest(path)
            entries = [] if self.manifest is None and is_job_dir(path) else find_jobs(path)
        except SweepDirectoryError as err:
            raise NotAnExperimentError(str(err)) from None
        if self.manifest is None and (is_job_dir(path) or (path / ".hydra" / "config.yaml").is_file()):
            self.kind = "run"
            entries = [job_entry(path, name=".")]
        elif entries or self.manifest is not None or (path / "multirun.yaml").is_file():
            self.kind = "sweep"
        else:
            raise NotAnExperimentError(
                f"{path} is neither a dstrf run directory (with job.json, metrics.json or .hydra/config.yaml) nor "
                f"a sweep directory (with sweep.json, multirun.yaml or job subdirectories)"
            )
        self.jobs: list[Job] = [Job(entry, self, k) for k, entry in enumerate(entries)]
        self._trials: dict[str, Trials] = {}

    # -- lookup --------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __getitem__(self, key: int | str) -> Job:
        """A job by index, or by its directory relative to the experiment (``"fold0_jk1"``)."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self.jobs[int(key)]
        name = Path(str(key)).as_posix().strip("/")
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(f"no job {key!r} in {self.dir}; jobs: {[job.name for job in self.jobs][:20]}")

    def job(self, fold: int, jackknife: int | None = None, group: str | None = None) -> Job:
        """The job of ``fold`` and ``jackknife`` (None: the job without jackknife); ``group`` picks one when the
        sweep has several (e.g. ``"model=linear_strf"``)."""
        found = [
            job
            for job in self.jobs
            if job.fold == fold and job.jackknife == jackknife and (group is None or job.group == group)
        ]
        if len(found) == 1:
            return found[0]
        if not found:
            where = f", group={group!r}" if group is not None else ""
            raise KeyError(f"no job with fold={fold}, jackknife={jackknife}{where} in {self.dir}")
        raise KeyError(
            f"{len(found)} jobs have fold={fold}, jackknife={jackknife}; choose a group: "
            f"{sorted({job.group for job in found})}"
        )

    @property
    def groups(self) -> list[str]:
        """The groups of jobs (one cross-validation experiment each), in sweep order."""
        return list(dict.fromkeys(job.group for job in self.jobs))

    def table(self) -> list[dict[str, Any]]:
        """One row per job: index, dir, group, fold, jackknife, status, epochs, val_r, test_r, checkpoint
        (relative to the experiment directory)."""
        return [job.row() for job in self.jobs]

    # -- data ----------------------------------------------------------------------------------------------------
    def trials(self, job: Job | None = None) -> Trials:
        """The trials of ``job``'s data (default: the first job with a config), instantiated from its config's
        ``data.trials`` once per distinct data config and cached."""
        import hydra.utils

        job = job or next((j for j in self.jobs if j.config is not None), None)
        if job is None or job.config is None or "data" not in job.config:
            raise ValueError(
                f"job {getattr(job, 'name', None)!r} of {self.dir} has no config with data to build the trials from"
            )
        node = _for_resolving(job.config, job.dir).data.trials
        try:
            key = OmegaConf.to_yaml(node, resolve=True)
        except Exception as err:  # noqa: BLE001 -- any resolution failure gets the same explanation
            raise ValueError(f"cannot resolve data.trials of job {job.name}: {err}") from err
        if key not in self._trials:
            try:
                self._trials[key] = hydra.utils.instantiate(node)
            except Exception as err:  # noqa: BLE001
                raise ValueError(
                    f"cannot build the trials of job {job.name} from its config data.trials (moved data file?): {err}"
                ) from err
        return self._trials[key]

    def __repr__(self) -> str:
        return f"Experiment({str(self.dir)!r}, {self.kind}, {len(self.jobs)} jobs)"


def load(path: str | Path) -> Experiment:
    """Open a run directory (one job) or a sweep directory (``sweep.json``, or one subdirectory per job).
    Raises :class:`NotAnExperimentError` (a ``ValueError``) for anything else."""
    return Experiment(path)


# ------------------------------------------------------------------------------------------------------------ CLI


def format_table(rows: list[dict[str, Any]]) -> str:
    """The job list of ``dstrf-inspect PATH``: one line per row of :meth:`Experiment.table`."""
    return tables.format_table(
        rows,
        {
            "index": "#",
            "dir": "dir",
            "fold": "fold",
            "jackknife": "jk",
            "status": "status",
            "epochs": "epochs",
            "val_r": "val r",
            "test_r": "test r",
            "checkpoint": "checkpoint",
        },
    )


def _select(experiment: Experiment, key: str) -> Job:
    if key.lstrip("-").isdigit() and not any(job.name == key for job in experiment.jobs):
        index = int(key)
        if not -len(experiment.jobs) <= index < len(experiment.jobs):
            raise KeyError(f"job index {index} is out of range: {experiment.dir} has {len(experiment.jobs)} jobs")
        return experiment.jobs[index]
    return experiment[key]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dstrf-inspect",
        description="List the jobs of a dstrf run or sweep directory, or show one job's config and split.",
    )
    parser.add_argument("path", help="a run directory or a sweep directory")
    parser.add_argument(
        "--job",
        "-j",
        metavar="DIR_OR_INDEX",
        help="show this job (its directory relative to PATH, e.g. fold0_jk1, or its index)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        experiment = load(args.path)
        if args.job is None:
            rows = experiment.table()
            if args.json:
                print(json.dumps({"path": str(experiment.dir), "kind": experiment.kind, "jobs": rows}, indent=2))
            else:
                counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "incomplete", "missing")}
                print(
                    f"{experiment.dir}: {experiment.kind}, {len(rows)} jobs ("
                    + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                    + ")"
                )
                print(format_table(rows))
                for row in rows:  # a table cell cannot say why it is empty
                    if row["problem"]:
                        print(f"dstrf-inspect: {row['dir']}: {row['problem']}", file=sys.stderr)
            return 0
        job = _select(experiment, args.job)
        split = job.split
        if args.json:
            print(
                json.dumps(
                    {
                        "job": job.row(),
                        "overrides": list(job.overrides),
                        "config": OmegaConf.to_container(job.config, resolve=False) if job.config is not None else None,
                        "split": split.as_dict() if split is not None else None,
                    },
                    indent=2,
                    default=str,
                )
            )
            return 0
        row = job.row()
        print(
            f"job {row['index']}: {job.name} (fold {tables.format_cell(job.fold)}, jackknife {tables.format_cell(job.jackknife)}, {job.status}"
            + (f", group {job.group}" if job.group else "")
            + ")"
        )
        print(
            f"epochs {tables.format_cell(row['epochs'])}, best val r {tables.format_cell(row['val_r'])}, test r {tables.format_cell(row['test_r'])}, "
            f"checkpoint {tables.format_cell(row['checkpoint'])}"
        )
        if job.overrides:
            print("overrides: " + " ".join(job.overrides))
        print("\nsplit:")
        if split is None:
            print("  unknown (the job never started)")
        else:
            for role in ("train", "val", "test"):
                print(f"  {role + ':':<6} {list(getattr(split, role))}")
            if getattr(split, "jackknife", None) is not None:
                print(f"  jackknife {split.jackknife}: trained without trial {getattr(split, 'left_out', None)}")
        print("\nconfig:")
        print(OmegaConf.to_yaml(job.config) if job.config is not None else "  none (the job never started)")
        return 0
    except BrokenPipeError:  # output piped into `head`
        return 0
    except (OSError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"dstrf-inspect: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
