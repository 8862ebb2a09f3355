"""dstrf's Hydra sweeper: Hydra's basic sweeper plus cross-validation folds, jackknife replicates and job names.

On top of the ordinary ``-m key=a,b`` cross product it

- expands ``split.fold`` over every test fold of the split scheme (``folds: true``) and ``split.jackknife``
  over every jackknife replicate of each fold (``jackknife: true``), from the number of trials of the
  configured data, so users never list indices (``dstrf-train +sweep=cv_jackknife``);
- names every job's directory by what distinguishes it: ``fold3_jk1``, or ``model=linear_strf/fold3_jk1``
  when other settings are swept too; the names are deterministic, so running the same sweep command again
  lands in the same directories, where finished jobs are skipped and interrupted ones resume
  (:mod:`dstrf.runs.job`);
- writes ``sweep.json`` (every expected job, its directory and overrides) before launching, which the
  aggregation and the inspector use to list missing and failed jobs;
- refuses to start while another process runs a sweep in the same directory;
- frees each job's data before the next job starts (:class:`ReleaseAfterJob`), so a multirun of many jobs
  in one process (Hydra's basic launcher, a joblib worker) needs the memory of one job, not of all of them.

Hydra only loads sweepers from the ``hydra_plugins`` package, hence this module's location.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations, and OmegaConf needs the real types of DstrfSweeperConf.
import datetime as dt
import fcntl
import gc
import json
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import hydra.utils
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from dstrf.config import quote_override, register_resolvers
from dstrf.data.splits import split_grid
from dstrf.runs.discovery import CV_KEYS
from dstrf.sweep.summary import aggregate

log = logging.getLogger(__name__)


@dataclass
class DstrfSweeperConf:
    _target_: str = "hydra_plugins.dstrf_sweeper.dstrf_sweeper.DstrfSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    folds: bool = False
    jackknife: bool = False


ConfigStore.instance().store(group="hydra/sweeper", name="dstrf", node=DstrfSweeperConf, provider="dstrf")
register_resolvers()


def _drop_locals(error: BaseException) -> None:
    """Clear the local variables of every finished frame in the tracebacks of ``error`` and of the
    exceptions chained to it; the tracebacks still print (file, line, function), without the values."""
    seen: Set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


class ReleaseAfterJob:
    """The task function of every job of a dstrf sweep: runs the job, then frees what it allocated.

    A Lightning ``Trainer`` is full of reference cycles (it and its connectors point at each other), and it
    holds the job's module, datamodule and dataloaders, hence the whole dataset. Only CPython's cycle
    collector frees such objects, and its full collections are triggered by the *number* of new objects, not
    their size: a few big tensors do not trigger one. In a multirun whose jobs share one process, each job's
    data therefore stayed alive into the following jobs (RSS grew by about one dataset per job). A full
    collection when the job returns frees it while nothing else is allocated yet.

    A failed job's exception is kept by Hydra (``JobReturn``) until the sweep ends, so it can be re-raised;
    its traceback's frames would keep that job's trainer and data alive, so their locals are cleared first.
    """

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            return self.task_function(cfg)
        except BaseException as error:
            _drop_locals(error)
            raise
        finally:
            gc.collect()


def _job_name(group: str, fold: Any, jackknife: Any) -> str:
    name = f"fold{fold}" + (f"_jk{jackknife}" if jackknife is not None else "")
    safe_group = group.replace("/", "_")
    return f"{safe_group}/{name}" if safe_group else name


class DstrfSweeper(BasicSweeper):
    """See the module docstring. ``folds``/``jackknife`` are set by ``conf/sweep/*.yaml``."""

    def __init__(
        self,
        max_batch_size: Optional[int] = None,
        params: Optional[Dict[str, str]] = None,
        folds: bool = False,
        jackknife: bool = False,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.folds, self.jackknife = bool(folds or jackknife), bool(jackknife)
        self._n_trials: Dict[str, int] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=ReleaseAfterJob(task_function), config=config)

    def _count_trials(self, cfg: DictConfig) -> int:
        # Building the trials once per distinct data config is the only way to know how many folds and
        # replicates there are; a file-backed dataset is read here once, in the launching process.
        key = OmegaConf.to_yaml(cfg.data.trials, resolve=True)
        if key not in self._n_trials:
            self._n_trials[key] = len(hydra.utils.instantiate(cfg.data.trials))
        return self._n_trials[key]

    def _expand(self, base: List[str], cfg: DictConfig) -> List[Tuple[List[str], Any, Any]]:
        """The CV jobs of one point of the ordinary sweep: (overrides, fold, jackknife) triples."""
        if not self.folds:
            return [(base, cfg.split.get("fold", 0), cfg.split.get("jackknife"))]
        given = [o for o in base if o.split("=", 1)[0].lstrip("+") in CV_KEYS]
        if given:
            raise ValueError(f"{given} conflicts with the sweep over all folds (+sweep=cv...): drop one of them")
        split_cfg = OmegaConf.to_container(cfg.split, resolve=True)
        scheme = split_cfg.pop("_target_").rsplit(".", 1)[-1]
        kwargs = {k: v for k, v in split_cfg.items() if not k.startswith("_") and k not in ("fold", "jackknife")}
        grid = split_grid(scheme, self._count_trials(cfg), jackknife=self.jackknife, **kwargs)
        return [
            (base + [f"split.fold={fold}", f"split.jackknife={'null' if jk is None else jk}"], fold, jk)
            for fold, jk in grid
        ]

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        swept = {o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()}
        points = self.split_arguments(overrides, None)[0]

        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = open(sweep_dir / ".sweep.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another sweep is running in {sweep_dir}; wait for it or use another hydra.sweep.dir"
            ) from None

        try:
            return self._run(arguments, points, swept, sweep_dir)
        finally:
            lock.close()

    def _run(self, arguments: List[str], points: List[List[str]], swept: Set[str], sweep_dir: Path) -> Any:
        jobs, manifest = [], []
        loader = self.hydra_context.config_loader
        for base in points:
            cfg = loader.load_sweep_config(self.config, list(base))
            group = ",".join(o for o in base if o.split("=", 1)[0].lstrip("+~") in swept - set(CV_KEYS))
            for job_overrides, fold, jackknife in self._expand(list(base), cfg):
                subdir = _job_name(group, fold, jackknife)
                manifest.append(
                    {
                        "num": len(manifest),
                        "dir": subdir,
                        "overrides": job_overrides,
                        "group": group,
                        "fold": fold,
                        "jackknife": jackknife,
                    }
                )
                jobs.append(
                    job_overrides
                    + [
                        f"hydra.sweep.dir={quote_override(str(sweep_dir))}",
                        f"hydra.sweep.subdir={quote_override(subdir)}",
                    ]
                )
        dirs = [job["dir"] for job in manifest]
        if len(set(dirs)) != len(dirs):
            duplicates = sorted({d for d in dirs if dirs.count(d) > 1})
            raise ValueError(f"several jobs of this sweep would share the directories {duplicates}")

        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        (sweep_dir / "sweep.json").write_text(
            json.dumps(
                {
                    "created": dt.datetime.now().isoformat(timespec="seconds"),
                    "overrides": list(arguments),
                    "jobs": manifest,
                },
                indent=2,
            )
        )
        log.info(f"dstrf sweep: {len(jobs)} jobs in {sweep_dir}")

        batch_size = self.max_batch_size or len(jobs)
        returns = []
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(batch, initial_job_idx=start))
        # Every batch runs before a failure is reported, so one bad job does not cost the others. Hydra skips
        # its end-of-multirun callbacks when the sweep raises, so a sweep with failed jobs aggregates here,
        # listing them, before the failure is re-raised.
        failed = [r for results in returns for r in results if r.status == JobStatus.FAILED]
        if failed:
            try:
                aggregate(sweep_dir)
            except Exception as error:  # the job's own failure is the one to report
                log.error(f"dstrf: aggregation after failed jobs failed too: {error}")
            _ = failed[0].return_value  # re-raises the job's exception, as Hydra's basic sweeper does
        return returns
