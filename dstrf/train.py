"""``dstrf-train`` / ``python -m dstrf.train``: fit one encoder under a Hydra config, test its best checkpoint.

Examples::

    dstrf-train                                   # DeepEncoder on the built-in synthetic data
    dstrf-train model=linear_strf trainer.max_epochs=50
    dstrf-train data=file data.trials.path=my_trials.h5 logger=wandb
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from .config import CONFIG_DIR
from .lit import EncoderModule, TrialDataModule
from .lit.callbacks import ChecksBeforeFit
from .lit.ddp import is_rank_zero_process, job_processes
from .lit.divergence import DivergenceGuard
from .lit.loggers import log_media, log_results, run_identity
from .metrics import cc_norm
from .runs.job import (
    JobState,
    data_files,
    lock_job,
    mark_done,
    mark_fitted,
    mark_started,
    prepare_job,
    read_json,
    relative_path,
    write_json,
)
from .tables import format_table

if TYPE_CHECKING:
    from lightning.pytorch.loggers import WandbLogger

__all__ = ["ConfigError", "main", "run"]

log = logging.getLogger("dstrf.train")


class ConfigError(ValueError):
    """A config value that cannot work, named by its config key; raised before any training."""


# ------------------------------------------------------------------------------------------------ config checks


def _name_keys(message: str, nodes: dict[str, Any]) -> str:
    """``message`` with the Python argument names that are keys of the config ``nodes`` (prefix -> node)
    written as config keys (``lags=None`` -> ``callbacks.dstrf.lags=None``); prefixed with the first node's
    key when it names none."""
    named = message
    for prefix, node in nodes.items():
        keys = [str(k) for k in node.keys() if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
        for key in sorted(keys, key=len, reverse=True):
            named = re.sub(
                rf"(?<![\w.`']){re.escape(key)}(?=\s*=|\s+must\b|\s+is\b|\s+has\b|\s+are\b)", f"{prefix}.{key}", named
            )
    return named if named != message else f"{next(iter(nodes))}: {message}"


def _cause(err: BaseException) -> BaseException:
    """The user's error inside Hydra's wrapping of a (nested) instantiation."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


@contextmanager
def _config_key(prefix: str, node: Any = None, **more: Any) -> Iterator[None]:
    """Errors of what is built from the config node at ``prefix`` (and the nodes in ``more``, keyword = key)
    name the config key."""
    try:
        yield
    except ConfigError:
        raise
    except (InstantiationException, ValueError, TypeError) as err:
        cause = _cause(err)
        if not isinstance(cause, (ValueError, TypeError)) or isinstance(cause, ConfigError):
            raise cause if cause is not err else err  # noqa: B904 -- the user's own error, re-raised as it was
        raise ConfigError(_name_keys(str(cause), {prefix: node, **more})) from cause


def check_config(cfg: DictConfig) -> None:
    """The settings that can be judged from the config alone, before any data are read."""
    threads = cfg.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(
            f"threads={threads}: must be a positive number of CPU threads per job (or null for torch's default)"
        )
    trainer = cfg.get("trainer") or {}
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise ConfigError(
            f"trainer.max_epochs={max_epochs}: a job must train at least one epoch "
            "(or -1: until early stopping); 0 would mark an untrained model as done"
        )
    max_steps = trainer.get("max_steps")
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise ConfigError(f"trainer.max_steps={max_steps}: must be positive (or -1: no limit)")
    module = cfg.get("module") or {}
    for key, ok, what in (
        ("lr", lambda v: v > 0, "a positive learning rate"),
        ("weight_decay", lambda v: v >= 0, ">= 0"),
        ("warmup", lambda v: v >= 0, "a number of frames >= 0 (or null: receptive field - 1)"),
    ):
        value = module.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not ok(value)):
            raise ConfigError(f"module.{key}={value}: must be {what}")


def _check_against_data(cfg: DictConfig, module: EncoderModule, datamodule: TrialDataModule, callbacks: dict) -> None:
    """The settings that need the model and the data: warm-up vs trial lengths, each callback's own checks."""
    trials = datamodule.trials
    trials.check_receptive_field(module.receptive_field)  # a trial the model cannot see whole
    scored = sorted(set(datamodule.split.val) | set(datamodule.split.test))
    short = [(i, trials.lengths[i]) for i in scored if trials.lengths[i] <= module.warmup]
    if short:
        i, n = short[0]
        key = (
            "module.warmup" if cfg.module.get("warmup") is not None else "module.warmup (default: receptive field - 1)"
        )
        raise ConfigError(
            f"{key}={module.warmup} leaves no scored frame in trial {i} ({trials.names[i]!r}, {n} frames); "
            f"use a warm-up below {n} frames or longer trials"
        )
    if module.closed_form:
        with _config_key("model", cfg.model):
            module.encoder.check_training_trials(len(datamodule.split.train))
    for name, callback in callbacks.items():
        if isinstance(callback, ChecksBeforeFit):
            with _config_key(f"callbacks.{name}", cfg.callbacks[name]):
                callback.check(module, trials)


# ------------------------------------------------------------------------------------------------------ helpers


def _instantiate_group(node: DictConfig | None) -> dict[str, Any]:
    """Instantiate every entry with a ``_target_`` of a mapping group such as ``callbacks``, by key."""
    built: dict[str, Any] = {}
    for key, value in cast(Mapping[str, Any], node or {}).items():  # a config group: its keys are names
        if value is not None and "_target_" in value:
            with _config_key(f"callbacks.{key}", value):
                built[key] = hydra.utils.instantiate(value)
    return built


def _run_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def _resolve_data_paths(cfg: DictConfig) -> None:
    """Write every data file path as an absolute path into the config, so the run's saved config (and
    ``dstrf.inspect.load``) finds the data from any directory. Relative paths are relative to where the command ran
    (Hydra may have changed the working directory since)."""
    cwd = HydraConfig.get().runtime.cwd if HydraConfig.initialized() else None
    for key, path in data_files(cfg, base=cwd).items():
        if "[" in key:
            continue  # a file a manifest lists: the manifest's own path is resolved
        with open_dict(cfg):
            OmegaConf.update(cfg, key, str(path), merge=False)


def _save_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra writes them, but only once this
    process holds the job directory (Hydra would write them before any check, over a running job's)."""
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None:
        return  # Hydra wrote them itself
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(HydraConfig.get(), resolve=False)})
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (out / "hydra.yaml").write_text(OmegaConf.to_yaml(hydra_cfg))
    (out / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(HydraConfig.get().overrides.task))))


def _say(message: str) -> None:
    """dstrf's messages go through logging (so into the job's ``train.log``), and to stdout when nothing
    has configured logging (``run`` called outside Hydra)."""
    if logging.getLogger().handlers:
        log.info(message)
    else:
        print(message, flush=True)


def _csv_history(resume_from: str | None, loggers: list) -> dict[CSVLogger, list[dict]]:
    """The rows of each CSV logger's ``metrics.csv`` up to the epoch of the checkpoint a job resumes from.

    Lightning's CSV logger starts a fresh ``metrics.csv`` (its writer removes the old one when created), so
    a resumed job would lose its earlier epochs; these rows are read before that and carried into the new log
    by :func:`_carry_csv_history`."""
    csv_loggers = [lg for lg in loggers if isinstance(lg, CSVLogger)]
    if not resume_from or not csv_loggers:
        return {}
    epoch = torch.load(resume_from, map_location="cpu", weights_only=True, mmap=True).get("epoch")
    history = {}
    for logger in csv_loggers:
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file() or epoch is None:
            continue
        with path.open(newline="") as f:
            rows = [
                row for row in csv.DictReader(f) if row.get("epoch") not in (None, "") and float(row["epoch"]) <= epoch
            ]
        history[logger] = [
            {k: int(float(v)) if k in ("step", "epoch") else float(v) for k, v in row.items() if v not in (None, "")}
            for row in rows
        ]
    return history


def _carry_csv_history(history: dict[CSVLogger, list[dict]]) -> None:
    for logger, rows in history.items():
        logger.experiment.metrics[:0] = rows  # written, before the new epochs, at the logger's next save


def _test_summary(module: EncoderModule, datamodule: TrialDataModule) -> dict:
    """Per test trial r, and the noise-ceiling-normalised correlation when the trials have repeats."""
    standardization, trials = datamodule.standardization, datamodule.trials
    responses = {i: standardization.response(trials.responses[i]) for i in module.test_predictions}
    summary: dict[str, Any] = {"per_trial": {str(k): v for k, v in module.trial_scores(responses).items()}}
    if trials.repeats is not None and module.test_predictions:
        ids = sorted(module.test_predictions)
        n_repeats = {trials.repeats[i].shape[0] for i in ids}
        if len(n_repeats) == 1 and n_repeats.pop() >= 2:
            # Frames past the warm-up only, every test trial concatenated along time.
            w = module.warmup
            pred = torch.cat([module.test_predictions[i][:, w:] for i in ids], dim=-1)
            reps = torch.cat([standardization.response(trials.repeats[i])[..., w:] for i in ids], dim=-1)
            summary["cc_norm"] = cc_norm(pred, reps).tolist()
    return summary


def _save_test_predictions(module: EncoderModule, datamodule: TrialDataModule, path: Path) -> None:
    """Per test trial, in the data's units: the prediction ``trial_<id>`` and the measured ``response_<id>``,
    both ``(N, T)``, so scores can be recomputed (and jackknife-averaged) without reloading the data.
    ``warmup`` says how many leading frames of each trial are not scored. Written atomically."""
    s = datamodule.standardization
    arrays = {}
    for i, pred in sorted(module.test_predictions.items()):
        arrays[f"trial_{i}"] = (pred * s.response_std[:, None] + s.response_mean[:, None]).numpy()
        arrays[f"response_{i}"] = datamodule.trials.responses[i].numpy()
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, channel_names=np.asarray(datamodule.trials.channel_names), warmup=module.warmup, **arrays)  # type: ignore[arg-type]  # numpy's stub: a ** dict could hold allow_pickle
    tmp.replace(path)


def _print_summary(metrics: dict, run_dir: Path) -> None:
    names = metrics["channels"]
    val, test = metrics["val"]["r"], metrics.get("test", {}).get("r")
    ccn = metrics.get("test", {}).get("cc_norm")
    columns = {"channel": "channel", "val_r": "val r", "test_r": "test r"} | ({"cc_norm": "cc_norm"} if ccn else {})
    # r is None (null in metrics.json) where it is undefined: a constant channel
    rows = [
        {
            "channel": name,
            "val_r": _nan_if_none(val[n]),
            "test_r": _nan_if_none(test[n]) if test else None,
            "cc_norm": _nan_if_none(ccn[n]) if ccn else None,
        }
        for n, name in enumerate(names)
    ]
    mean = {"channel": "mean", "val_r": metrics["val"]["r_mean"], "test_r": metrics["test"]["r_mean"] if test else None}
    lines = [
        f"dstrf: {metrics['model']} (receptive field {metrics['receptive_field']} frames), "
        f"{metrics['epochs']} epochs, best checkpoint {metrics['best_checkpoint']}",
        # a table of 1000 electrodes helps nobody; the full one is in metrics.json
        format_table(rows, columns, max_rows=20, footer=[mean]),
    ]
    for split in ("val", "test"):
        nan = metrics.get(split, {}).get("nan_channels")
        if nan:
            lines.append(
                f"{split} r is undefined (constant response or prediction) for {len(nan)} channel(s), left out "
                f"of the mean: {', '.join(nan[:10])}{' ...' if len(nan) > 10 else ''}"
            )
    lines.append(f"run directory: {run_dir}")
    _say("\n".join(lines))


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def _scores(r: list[float], names: list[str]) -> dict[str, Any]:
    """Per-channel r (NaN, written as null, where undefined: a constant channel), and their mean over the
    channels where r is defined, with those left out named (never averaged as 0)."""
    values = np.asarray(r, dtype=np.float64)
    finite = np.isfinite(values)
    return {
        "r": [float(v) if ok else None for v, ok in zip(values, finite)],
        "r_mean": float(values[finite].mean()) if finite.any() else None,
        "n_nan": int((~finite).sum()),
        "nan_channels": [n for n, ok in zip(names, finite) if not ok],
    }


# ---------------------------------------------------------------------------------------------------------- run


class _JobMarkers(L.Callback):
    """Records in ``fit.json`` that training ended (before the after-fit callbacks run), and in a job whose
    training had already ended (``finish``) ends the restored fit at once, so only the results are redone."""

    def __init__(self, run_dir: Path, state: JobState) -> None:
        self.run_dir, self.state = run_dir, state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.state.action == "finish":
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.state.action != "finish":
            # lightning types it as the Checkpoint base class; the one dstrf configures is a ModelCheckpoint
            checkpoint = cast("ModelCheckpoint | None", trainer.checkpoint_callback)
            mark_fitted(
                self.run_dir,
                self.state,
                checkpoint.best_model_path if checkpoint else None,
                checkpoint.last_model_path if checkpoint else None,
                trainer.current_epoch,
            )


def _fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: EncoderModule,
    datamodule: TrialDataModule,
    run_dir: Path,
    state: JobState,
    start: float,
) -> dict:
    """Fit (or resume, or finish), then score the best checkpoint on validation and test trials; the
    metrics.json dict."""
    resume_from = str(state.resume_from) if state.resume_from else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)

    callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set on the Trainer by lightning, undeclared
    checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    ckpt_path = best if best else None  # no checkpoint callback: score the final weights
    fitted = read_json(run_dir / "fit.json") or {}
    epochs = fitted.get("epochs", trainer.current_epoch) if state.action == "finish" else trainer.current_epoch
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    val_r = module.channel_r["val"].tolist()
    metrics: dict[str, Any] = {
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "receptive_field": module.receptive_field,
        "epochs": epochs,
        "best_checkpoint": relative_path(best, run_dir),
        "last_checkpoint": relative_path(checkpoint.last_model_path, run_dir) if checkpoint is not None else None,
        "channels": list(datamodule.trials.channel_names),
        "sfreq": datamodule.trials.sfreq,
        "data": state.data,
        "job": {
            "fold": cfg.split.get("fold", 0),
            "jackknife": cfg.split.get("jackknife"),
            "scheme": cfg.split._target_.rsplit(".", 1)[-1],
            "action": state.action,
            "resumed_from": relative_path(resume_from, run_dir),
        },
        "split": datamodule.split.as_dict(),
        "val": _scores(val_r, list(datamodule.trials.channel_names)),
    }
    if datamodule.split.test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        test_r = module.channel_r["test"].tolist()
        metrics["test"] = {
            **_scores(test_r, list(datamodule.trials.channel_names)),
            **_test_summary(module, datamodule),
        }
    if module.closed_form:
        metrics["ridge"] = module.encoder.cv_summary(datamodule.trials.channel_names)
    metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    return metrics


def _plot_test_prediction(module: EncoderModule, datamodule: TrialDataModule, metrics: dict, run_dir: Path) -> Path:
    """``test_prediction.png``: measured vs predicted response of the first test trial, in the data's units, for
    the (at most) three channels of highest test r."""
    import matplotlib.pyplot as plt

    from .plots import plot_prediction

    trial = min(module.test_predictions)
    s = datamodule.standardization
    predicted = module.test_predictions[trial] * s.response_std[:, None] + s.response_mean[:, None]
    r = np.array([np.nan if v is None else v for v in metrics["test"]["r"]], dtype=float)
    order = [int(n) for n in np.argsort(np.where(np.isfinite(r), -r, np.inf))[:3]]
    trials = datamodule.trials
    figure = plot_prediction(
        trials.responses[trial],
        predicted,
        trials.sfreq,
        trials.channel_names,
        order,
        warmup=module.warmup,
        unit="response (data units)",
        title=f"{metrics['model']}: test trial {trial} ({trials.names[trial]}), the channels of highest test r",
    )
    path = run_dir / "test_prediction.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _plot_ridge_cv(module: EncoderModule, run_dir: Path) -> Path:
    """``ridge_cv.png``: the inner-CV curve of a closed-form ridge fit and the alphas it chose."""
    import matplotlib.pyplot as plt

    from .plots import plot_ridge_cv

    encoder = module.encoder
    figure = plot_ridge_cv(
        encoder.alphas.cpu().numpy(),
        encoder.cv_r.cpu().numpy(),
        encoder.alpha.cpu().numpy(),
        labels=module.hparams.channel_names,
    )
    figure.savefig(run_dir / "ridge_cv.png", dpi=100)
    plt.close(figure)
    return run_dir / "ridge_cv.png"


def _outputs(run_dir: Path, metrics: dict) -> list[Path]:
    """Every result file of a finished job, for ``done.json``."""
    files = [run_dir / "metrics.json"]
    if "test" in metrics:
        files.append(run_dir / "test_predictions.npz")
    for key in ("best_checkpoint", "last_checkpoint"):
        if metrics.get(key):
            files.append(run_dir / metrics[key])
    for folder in ("dstrf", "gradmap"):
        if (run_dir / folder).is_dir():
            files += sorted(p for p in (run_dir / folder).rglob("*") if p.is_file())
    return files


def _peer_state(run_dir: Path, cfg: DictConfig) -> JobState:
    """What a rank > 0 process does: what rank 0 decided (dstrf's own ranks are told), else the same decision
    read from the job directory (ranks a cluster started)."""
    told = os.environ.get("DSTRF_RESUME_FROM")
    state = prepare_job(run_dir, cfg, read_only=True)
    if told is None:
        return state
    if not told:
        return JobState("start", state.config_hash, data=state.data)
    action = "finish" if state.action in ("finish", "skip") else "resume"
    return JobState(action, state.config_hash, resume_from=Path(told), data=state.data)


def run(cfg: DictConfig) -> dict:
    """Train, validate and test as configured; returns what is written to ``metrics.json``.

    A job directory that already holds this job's complete results is skipped; an interrupted one resumes
    from its newest readable checkpoint, or only recomputes its results when training had ended; results of
    a different config or different data are moved to ``superseded/`` (see :mod:`dstrf.runs.job`). Every
    setting is checked against the model and the data before training starts.
    """
    start = time.perf_counter()
    run_dir = _run_dir(cfg)
    check_config(cfg)
    with _config_key("data"):
        _resolve_data_paths(cfg)
    lock = None
    if not is_rank_zero_process():
        state = _peer_state(run_dir, cfg)
        if state.action == "skip":  # rank 0 skips too: training alone would wait for it forever
            return json.loads((run_dir / "metrics.json").read_text())
    else:
        lock = lock_job(run_dir)
    try:
        if lock is not None:
            state = prepare_job(run_dir, cfg)
            if state.action == "skip":
                _say(f"dstrf: {run_dir} already holds this job's results (config {state.config_hash}); skipping")
                return json.loads((run_dir / "metrics.json").read_text())
            if state.superseded is not None:
                _say(f"dstrf: the config or the data changed; earlier results moved to {state.superseded}")
            for note in state.notes:
                _say(f"dstrf: {run_dir}: {note}")
            if state.action == "finish":
                _say(f"dstrf: training had ended; computing the results again from {run_dir / 'checkpoints'}")
            elif state.action == "resume":
                _say(f"dstrf: resuming an interrupted job from {state.resume_from}")
            _save_hydra_files(cfg, run_dir)
            mark_started(run_dir, cfg, state)
        return _run(cfg, run_dir, state, start)
    finally:
        if lock is not None:
            lock.close()
        # The Trainer's reference cycles hold the job's data until a full collection, which CPython starts by
        # object count, not size: without it, run() in a loop (a notebook) keeps every job's data alive.
        gc.collect()


def _run(cfg: DictConfig, run_dir: Path, state: JobState, start: float) -> dict:
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True)
    with _config_key("split", cfg.split):
        split = hydra.utils.instantiate(cfg.split)
    with _config_key("data", cfg.data, split=cfg.split):  # the split scheme is applied inside the data module
        datamodule: TrialDataModule = hydra.utils.instantiate(cfg.data, split=split)
    trials = datamodule.trials
    with _config_key("module", cfg.module, model=cfg.model):
        module = EncoderModule(
            encoder=cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True)),
            n_freqs=trials.n_freqs,
            n_outputs=trials.n_channels,
            channel_names=trials.channel_names,
            sfreq=trials.sfreq,
            **cast(dict[str, Any], OmegaConf.to_container(cfg.module, resolve=True)),
        )
    callbacks = _instantiate_group(cfg.get("callbacks"))
    _check_against_data(cfg, module, datamodule, callbacks)

    loggers: list[Logger] = []
    failed = True
    try:  # from the first logger on: a wandb run started here is finished whatever fails after it
        _add_loggers(loggers, cfg, run_dir, module)
        guards = [DivergenceGuard(), _JobMarkers(run_dir, state)]
        with _config_key("trainer", cfg.trainer):
            trainer: L.Trainer = hydra.utils.instantiate(
                cfg.trainer, callbacks=[*callbacks.values(), *guards], logger=loggers or False
            )
        if loggers:
            history = _csv_history(str(state.resume_from) if state.resume_from else None, trainer.loggers)
            module._log_hyperparams = (
                False  # what save_hyperparameters(logger=False) sets: the config is logged once, here
            )
            record = _logged_config(cfg, module, datamodule, state)
            for logger in loggers:
                logger.log_hyperparams(record)
            _carry_csv_history(history)

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        resume_from = str(state.resume_from) if state.resume_from else None
        with job_processes(trainer, run_dir, overrides, resume_from):
            metrics = _fit_and_test(cfg, trainer, module, datamodule, run_dir, state, start)
            if trainer.is_global_zero:
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json(run_dir / "metrics.json", metrics)
                extra = [_plot_ridge_cv(module, run_dir)] if module.closed_form else []
                if datamodule.split.test:
                    _save_test_predictions(module, datamodule, run_dir / "test_predictions.npz")
                    extra.append(_plot_test_prediction(module, datamodule, metrics, run_dir))
                    log_media(loggers, "test/prediction", extra[-1])
                log_results(loggers, metrics)
                mark_done(
                    run_dir,
                    state,
                    {"val_r_mean": metrics["val"]["r_mean"], "test_r_mean": metrics.get("test", {}).get("r_mean")},
                    outputs=[*_outputs(run_dir, metrics), *extra],
                )
                _print_summary(metrics, run_dir)
        failed = False
    finally:
        for logger in loggers:
            if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
                wandb_logger = cast("WandbLogger", logger)  # by its type's name above
                wandb_logger.experiment.finish(exit_code=1 if failed else 0)  # a failed job's run is not left open
    return metrics


def _add_loggers(loggers: list[Logger], cfg: DictConfig, run_dir: Path, module: EncoderModule) -> None:
    """Append to ``loggers`` (as each is made, so that a failure leaves the ones already started there to
    be finished) every logger of ``cfg.logger`` (one entry per logger: ``logger=csv``, ``logger=[csv,wandb]``,
    ``logger=many``); a wandb one gets the job's identity (:func:`dstrf.lit.loggers.run_identity`) where its
    config leaves ``name``, ``group``, ``job_type``, ``tags`` or ``id`` null."""
    node = cfg.get("logger")
    if not node:
        return
    entries = {"logger": node} if "_target_" in node else {f"logger.{k}": v for k, v in node.items() if v}
    for key, entry in entries.items():
        identity = {}
        if str(entry.get("_target_", "")).endswith("wandb_logger"):
            identity = {k: v for k, v in _identity(cfg, run_dir, module).items() if entry.get(k) is None}
            if entry.get("sync_hint") is None:  # one command for the whole sweep, not each job's folder
                sweep_dir = HydraConfig.get().sweep.dir if _in_multirun() else None
                identity["sync_hint"] = f"dstrf-sync {sweep_dir or run_dir}"
        with _config_key(key, entry):
            loggers.append(hydra.utils.instantiate(entry, **identity))


def _identity(cfg: DictConfig, run_dir: Path, module: EncoderModule) -> dict[str, Any]:
    """The job's wandb identity: in a multirun its sweep directory, its overrides and the sweep command's
    (``sweep.json``); else its model and data."""
    sweep_dir, job, swept = None, [], []
    trials = cfg.data.get("trials") or {}
    data = trials.get("path")
    target = trials.get("_target_") or cfg.data.get("_target_") or "data"
    hc = HydraConfig.get() if HydraConfig.initialized() else None
    choice = hc.runtime.choices.get("data") if hc is not None else None
    data_name = Path(str(data)).stem if data else choice or str(target).rsplit(".", 1)[-1]
    if hc is not None and _in_multirun():
        sweep_dir = Path(hc.sweep.dir)
        job = list(hc.overrides.task)
        swept = (read_json(sweep_dir / "sweep.json") or {}).get("overrides", [])
    return run_identity(
        run_dir,
        sweep_dir,
        job,
        swept,
        model=type(module.encoder).__name__,
        data=data_name,
    )


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _logged_config(cfg: DictConfig, module: EncoderModule, datamodule: TrialDataModule, state: JobState) -> dict:
    """What the loggers record once: the composed config (paths relative to the working directory where
    they lie under it), the split as trial ids, the data's fingerprint, the encoder's parameter count and
    receptive field."""
    here = Path.cwd().resolve()

    def readable(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: readable(v) for k, v in value.items()}
        if isinstance(value, list):
            return [readable(v) for v in value]
        if isinstance(value, str) and os.path.isabs(value) and Path(value).resolve().is_relative_to(here):
            return Path(value).resolve().relative_to(here).as_posix() or "."
        return value

    split = datamodule.split
    return {
        **readable(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))),
        "split_trials": {"train": list(split.train), "val": list(split.val), "test": list(split.test)},
        "data_fingerprint": {k: v.get("sha256") for k, v in (state.data or {}).items()},
        "n_parameters": int(sum(p.numel() for p in module.encoder.parameters())),
        "receptive_field": module.receptive_field,
    }


_NO_VALUE_FLAGS = ("-m", "--multirun", "--resolve")


def main() -> float | None:
    """The console script. Hydra's parser takes its flags only before the overrides; users write
    ``dstrf-train +sweep=cv -m model=a,b`` as readily as ``dstrf-train -m ...``, so flags that take no value
    are moved to the front."""
    flags = [a for a in sys.argv[1:] if a in _NO_VALUE_FLAGS]
    rest = [a for a in sys.argv[1:] if a not in _NO_VALUE_FLAGS]
    sys.argv = [sys.argv[0], *flags, *rest]
    return _hydra_main()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    # What Hydra sweepers optimise: validation, never test, accuracy (test trials must not choose hyperparameters).
    r_mean = metrics["val"]["r_mean"]
    return float("nan") if r_mean is None else r_mean


if __name__ == "__main__":
    main()
