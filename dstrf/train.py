"""``dstrf-train`` / ``python -m dstrf.train``: fit one encoder under a Hydra config, test its best checkpoint.

Examples::

    dstrf-train                                   # DeepEncoder on the built-in synthetic data
    dstrf-train model=linear_strf trainer.max_epochs=50
    dstrf-train data=file data.trials.path=my_trials.h5 logger=wandb
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from .config import CONFIG_DIR
from .lit import EncoderModule, TrialDataModule
from .metrics import cc_norm
from .sweep.ddp import is_rank_zero_process, job_processes
from .sweep.job import mark_done, mark_started, prepare_job

__all__ = ["main", "run"]


def _instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a mapping group such as ``callbacks``."""
    if not node:
        return []
    return [hydra.utils.instantiate(value) for value in node.values() if value is not None and "_target_" in value]


def _run_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def _relative(path: str | Path | None, root: Path) -> str | None:
    if not path:
        return None
    path = Path(path)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


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
    ``warmup`` says how many leading frames of each trial are not scored."""
    s = datamodule.standardization
    arrays = {}
    for i, pred in sorted(module.test_predictions.items()):
        arrays[f"trial_{i}"] = (pred * s.response_std[:, None] + s.response_mean[:, None]).numpy()
        arrays[f"response_{i}"] = datamodule.trials.responses[i].numpy()
    np.savez(path, channel_names=np.asarray(datamodule.trials.channel_names), warmup=module.warmup, **arrays)


def _print_summary(metrics: dict) -> None:
    names = metrics["channels"]
    val, test = metrics["val"]["r"], metrics.get("test", {}).get("r")
    ccn = metrics.get("test", {}).get("cc_norm")
    width = max(8, *(len(n) for n in names))
    lines = [
        f"dstrf: {metrics['model']} (receptive field {metrics['receptive_field']} frames), "
        f"{metrics['epochs']} epochs, best checkpoint {metrics['best_checkpoint']}",
        f"{'channel':<{width}}  {'val r':>7}  {'test r':>7}" + (f"  {'cc_norm':>7}" if ccn else ""),
    ]
    rows = list(range(len(names)))
    if len(rows) > 20:  # a table of 1000 electrodes helps nobody; the full one is in metrics.json
        rows = rows[:10] + [-1] + rows[-5:]
    for n in rows:
        if n == -1:
            lines.append(f"{'...':<{width}}")
            continue
        line = f"{names[n]:<{width}}  {val[n]:7.3f}  " + (f"{test[n]:7.3f}" if test else f"{'-':>7}")
        if ccn:
            line += f"  {ccn[n]:7.3f}"
        lines.append(line)
    mean = f"{'mean':<{width}}  {metrics['val']['r_mean']:7.3f}  " + (
        f"{metrics['test']['r_mean']:7.3f}" if test else f"{'-':>7}"
    )
    lines.append(mean)
    lines.append(f"run directory: {metrics['run_dir']}")
    print("\n".join(lines), flush=True)


def _fit_and_test(cfg: DictConfig, trainer: L.Trainer, module: EncoderModule, datamodule: TrialDataModule,
                  run_dir: Path, resume_from: str | None, start: float) -> dict:
    """Fit (or resume), then score the best checkpoint on validation and test trials; the metrics.json dict."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)

    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    ckpt_path = best if best else None  # no checkpoint callback: score the final weights
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    val_r = module.channel_r["val"].tolist()
    metrics: dict[str, Any] = {
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "receptive_field": module.receptive_field,
        "epochs": trainer.current_epoch,
        "best_checkpoint": _relative(best, run_dir),
        "last_checkpoint": _relative(checkpoint.last_model_path, run_dir) if checkpoint is not None else None,
        "channels": list(datamodule.trials.channel_names),
        "sfreq": datamodule.trials.sfreq,
        "job": {
            "fold": cfg.split.get("fold", 0),
            "jackknife": cfg.split.get("jackknife"),
            "scheme": cfg.split._target_.rsplit(".", 1)[-1],
            "resumed_from": _relative(resume_from, run_dir),
        },
        "split": datamodule.split.as_dict(),
        "val": {"r": val_r, "r_mean": float(sum(val_r) / len(val_r))},
    }
    if datamodule.split.test:
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        test_r = module.channel_r["test"].tolist()
        metrics["test"] = {"r": test_r, "r_mean": float(sum(test_r) / len(test_r)), **_test_summary(module, datamodule)}
    metrics["wall_time_s"] = round(time.perf_counter() - start, 2)
    metrics["run_dir"] = str(run_dir)

    return metrics


def run(cfg: DictConfig) -> dict:
    """Train, validate and test as configured; returns what is written to ``metrics.json``.

    A job directory that already holds this job's results is skipped; an interrupted one resumes from its
    last checkpoint; results of a different config are moved to ``superseded/`` (see :mod:`dstrf.sweep.job`).
    """
    start = time.perf_counter()
    run_dir = _run_dir(cfg)
    if not is_rank_zero_process():
        # dstrf's own rank > 0 processes are told what rank 0 decided; those a cluster started decide alike
        resume_from = os.environ.get("DSTRF_RESUME_FROM")
        if resume_from is None:
            peer = prepare_job(run_dir, cfg, read_only=True)
            if peer.action == "skip":  # rank 0 skips too: training alone would wait for it forever
                return json.loads((run_dir / "metrics.json").read_text())
            resume_from = str(peer.resume_from) if peer.action == "resume" else None
        resume_from = resume_from or None
    else:
        state = prepare_job(run_dir, cfg)
        if state.action == "skip":
            print(f"dstrf: {run_dir} already holds this job's results (config {state.config_hash}); skipping", flush=True)
            return json.loads((run_dir / "metrics.json").read_text())
        if state.superseded is not None:
            print(f"dstrf: the config changed; earlier results moved to {state.superseded}", flush=True)
        resume_from = str(state.resume_from) if state.resume_from else None
        if resume_from:
            print(f"dstrf: resuming an interrupted job from {resume_from}", flush=True)
        mark_started(run_dir, cfg, state)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True)
    split = hydra.utils.instantiate(cfg.split)
    datamodule: TrialDataModule = hydra.utils.instantiate(cfg.data, split=split)
    trials = datamodule.trials
    module = EncoderModule(
        encoder=OmegaConf.to_container(cfg.model, resolve=True),
        n_freqs=trials.n_freqs,
        n_outputs=trials.n_channels,
        channel_names=trials.channel_names,
        sfreq=trials.sfreq,
        **OmegaConf.to_container(cfg.module, resolve=True),
    )
    # Fail before any training on a trial the model cannot see whole.
    trials.check_receptive_field(module.receptive_field)

    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = _instantiate_group(cfg.get("callbacks"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    with job_processes(trainer, run_dir, overrides, resume_from):
        metrics = _fit_and_test(cfg, trainer, module, datamodule, run_dir, resume_from, start)
        if trainer.is_global_zero:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
            if datamodule.split.test:
                _save_test_predictions(module, datamodule, run_dir / "test_predictions.npz")
            mark_done(run_dir, state, {"val_r_mean": metrics["val"]["r_mean"], "test_r_mean": metrics.get("test", {}).get("r_mean")})
            _print_summary(metrics)
    if logger and hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
        logger.experiment.finish()
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    # What Hydra sweepers optimise: validation, never test, accuracy (test trials must not choose hyperparameters).
    return metrics["val"]["r_mean"]


if __name__ == "__main__":
    main()
