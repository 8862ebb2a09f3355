"""Loggers that never block training: wandb goes offline by itself when it cannot reach its server.

In ``mode="auto"`` the switch to offline is never silent: one log line says why (no API key, the server
unreachable at host:port, or the server refusing the key) and how to upload the run later (``wandb sync``).
"""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse

import numpy as np
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["wandb_mode", "wandb_logger", "run_identity", "log_media", "log_results"]

MODES = ("auto", "online", "offline", "disabled")
DEFAULT_BASE_URL = "https://api.wandb.ai"

log = logging.getLogger(__name__)


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def _server_address(base_url: str) -> tuple[str, int]:
    """``(host, port)`` of a wandb server URL: its explicit port, else 443 for https and 80 for http."""
    parsed = urlparse(base_url if "//" in base_url else f"https://{base_url}")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"WANDB_BASE_URL={base_url!r}: invalid port; expected e.g. http://localhost:8080") from None
    if not parsed.hostname:
        raise ValueError(f"WANDB_BASE_URL={base_url!r} names no host; expected e.g. https://api.wandb.ai")
    return parsed.hostname, port or (80 if parsed.scheme == "http" else 443)


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(base_url: str, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the wandb server at ``base_url`` (its host and port) opens in ``timeout`` s."""
    try:
        with socket.create_connection(_server_address(base_url), timeout=timeout):
            return True
    except OSError:
        return False


def _resolve(mode: str) -> tuple[str, str | None]:
    """The mode :func:`wandb_mode` returns and, when ``"auto"`` did not resolve online, why (else None)."""
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {MODES}; got {mode!r}")
    if mode != "auto":
        return mode, None
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        resolved = "offline" if env_mode == "dryrun" else env_mode
        return resolved, f"WANDB_MODE={env_mode} is set"
    base_url = _base_url()
    host, port = _server_address(base_url)
    if not _has_api_key(host):
        return "offline", f"no API key for {host} (set WANDB_API_KEY or run `wandb login`)"
    if not _reachable(base_url):
        return "offline", f"the server is unreachable at {host}:{port} (WANDB_BASE_URL={base_url})"
    return "online", None


def wandb_mode(mode: str = "auto") -> str:
    """Resolve ``"auto"``: ``WANDB_MODE`` if set; else ``"online"`` only with an API key and a server that
    accepts a connection within 2 s at the host and port of ``WANDB_BASE_URL`` (default https://api.wandb.ai,
    port 443); else ``"offline"`` (runs are kept on disk; ``wandb sync`` uploads them later)."""
    return _resolve(mode)[0]


def _sync_hint(logger: WandbLogger) -> str:
    """``wandb sync <this run's directory>`` (or, if the run does not say, of every offline run in ``save_dir``)."""
    sync_dir = getattr(getattr(logger.experiment, "settings", None), "sync_dir", None)
    return f"wandb sync {sync_dir or Path(logger.save_dir or '.') / 'wandb' / 'offline-run-*'}"


def wandb_logger(
    project: str = "dstrf",
    save_dir: str = ".",
    name: str | None = None,
    mode: str = "auto",
    group: str | None = None,
    tags: list[str] | None = None,
    init_timeout: float = 30.0,
    job_type: str | None = None,
    id: str | None = None,
    resume: str | None = "allow",
    sync_hint: str | None = None,
    **kwargs,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` that works without network: see :func:`wandb_mode`.

    ``name``, ``group``, ``job_type``, ``tags`` and ``id`` are the run's identity (:func:`run_identity` gives
    a job's); with an ``id``, ``resume="allow"`` continues that run when it exists instead of starting another.
    ``sync_hint``: the command the offline message gives for uploading (default ``wandb sync <the run>``; dstrf's
    jobs give ``dstrf-sync <the sweep>``).
    Files go to ``save_dir/wandb``. ``init_timeout`` bounds how long an online start may wait for the server.
    In ``mode="auto"`` the run is started here, not at the first log call: if the server refuses the API key
    or fails to answer, the run goes offline now, with a warning, instead of failing the job after setup.
    """
    import wandb

    if os.environ.get("WANDB_MODE") == "":
        # An empty WANDB_MODE means unset (auto decides), but wandb.Settings rejects it as an invalid mode.
        del os.environ["WANDB_MODE"]
    resolved, reason = _resolve(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)

    def make(run_mode: str) -> WandbLogger:
        # offline=False always: Lightning's offline=True sets WANDB_MODE=dryrun in os.environ for the rest of
        # the process, which would send every later job of a multirun offline without asking the server.
        return WandbLogger(
            project=project,
            save_dir=str(save_dir),
            name=name,
            group=group,
            tags=list(tags) if tags else None,
            job_type=job_type,
            id=id,
            resume=resume if id else None,
            offline=False,
            mode=run_mode,
            settings=wandb.Settings(init_timeout=init_timeout, silent=True),
            **kwargs,
        )

    logger = make(resolved)
    if mode != "auto" or resolved not in ("online", "offline"):
        return logger
    probed = not os.environ.get("WANDB_MODE")  # WANDB_MODE=online is the user's order: no fallback then
    if resolved == "online":
        if not probed:
            return logger
        try:
            _ = logger.experiment
            return logger
        except (wandb.errors.CommError, wandb.errors.UsageError) as error:  # AuthenticationError is a CommError
            reason = f"could not start an online run at {_base_url()} ({type(error).__name__}: {error})"
            logger = make("offline")
    _ = logger.experiment  # the offline run's directory, for the message
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # lightning sets .rank on the function at import
        message = f"wandb is offline: {reason}. The run is kept on disk; upload it later with `{sync_hint or _sync_hint(logger)}`"
        log.log(logging.WARNING if probed else logging.INFO, message)
    return logger


def run_identity(
    run_dir: str | os.PathLike,
    sweep_dir: str | os.PathLike | None = None,
    job_overrides: Sequence[str] = (),
    sweep_overrides: Sequence[str] = (),
    model: str = "",
    data: str = "",
    job_type: str = "fold",
) -> dict[str, Any]:
    """The wandb identity of one dstrf job: ``name``, ``group``, ``job_type``, ``tags`` and ``id``.

    In a sweep (``run_dir`` inside ``sweep_dir``): the group is the sweep directory's name (stable across
    re-runs of the same command), the name the job's directory relative to it (``fold3_jk1``,
    ``model=linear_strf/fold3_jk1``), the tags the job's overrides that are not the sweep command's own (what
    was swept for this job: ``split.fold=3``, ``model=linear_strf``), and the id a digest of group and name,
    so a resumed or re-run job logs into its own run. A single run: named ``<model> on <data>``, no group, the
    id a digest of its directory.
    """
    run_dir = Path(run_dir).resolve()
    if sweep_dir is not None and run_dir.is_relative_to(Path(sweep_dir).resolve()):
        group = Path(sweep_dir).resolve().name
        name = run_dir.relative_to(Path(sweep_dir).resolve()).as_posix()
        fixed = set(sweep_overrides)
        tags = [o[:64] for o in job_overrides if o not in fixed and not o.startswith(("hydra.", "paths."))]
        key = f"{group}/{name}"
    else:
        group, name, tags, key = None, f"{model} on {data}" if model and data else run_dir.name, [], str(run_dir)
    digest = hashlib.sha256(f"{job_type}:{key}".encode()).hexdigest()[:16]
    return {"name": name, "group": group, "job_type": job_type, "tags": tags, "id": digest}


def log_media(loggers: Sequence[Logger], key: str, path: str | os.PathLike) -> list[str]:
    """Log a figure (PNG) or an animation (GIF, MP4) file to every logger that can show it; their names.

    wandb gets a ``wandb.Image`` under ``key`` or a ``wandb.Video`` under ``key/animation``, so that a figure
    and the animation of the same map never share a key (wandb keeps one media type per key); a TensorBoard
    logger gets a PNG as an image. Loggers without media (CSV) get nothing: the file on disk is the record.
    """
    path = Path(path)
    if path.suffix != ".png":
        key = f"{key}/animation"
    logged = []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            video_format = cast("Literal['gif', 'mp4', 'webm', 'ogg']", path.suffix[1:])  # animations: .gif, .mp4
            media = wandb.Image(str(path)) if path.suffix == ".png" else wandb.Video(str(path), format=video_format)
            logger.experiment.log({key: media})
            logged.append("wandb")
        elif path.suffix == ".png" and hasattr(getattr(logger, "experiment", None), "add_image"):
            from PIL import Image

            experiment = cast(Any, logger).experiment  # a TensorBoard SummaryWriter (or alike): checked above
            experiment.add_image(key, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
            logged.append(type(logger).__name__)
    return logged


def log_results(loggers: Sequence[Logger], metrics: Mapping[str, Any]) -> list[str]:
    """A job's final scores (its ``metrics.json``) to every wandb logger; their names.

    The run summary gets ``val/r`` and ``test/r`` (means over the channels where r is defined), ``test/cc_norm``
    (its mean, where the test trials have repeats) and ``test/r_trial/<id>`` (per test trial, mean over
    channels); the table ``test/channels`` has one row per channel: ``channel``, ``val_r``, ``test_r``,
    ``cc_norm`` (NaN where undefined, never 0).
    """
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not wandb_loggers:
        return []
    import wandb

    names = list(metrics["channels"])
    test = metrics.get("test") or {}

    def values(scores: Sequence[float | None] | None) -> list[float]:
        return [float("nan") if v is None else float(v) for v in (scores or [None] * len(names))]

    val_r, test_r, ccn = values(metrics["val"]["r"]), values(test.get("r")), values(test.get("cc_norm"))
    summary: dict[str, Any] = {"val/r": metrics["val"]["r_mean"]}
    if test:
        summary["test/r"] = test.get("r_mean")
        if test.get("cc_norm"):
            finite = [v for v in ccn if np.isfinite(v)]
            summary["test/cc_norm"] = float(np.mean(finite)) if finite else float("nan")
        for trial, r in (test.get("per_trial") or {}).items():
            finite = [v for v in values(r) if np.isfinite(v)]
            summary[f"test/r_trial/{trial}"] = float(np.mean(finite)) if finite else float("nan")
    rows = [[name, val_r[n], test_r[n], ccn[n]] for n, name in enumerate(names)]
    for logger in wandb_loggers:
        logger.experiment.summary.update(summary)
        logger.experiment.log(
            {"test/channels": wandb.Table(columns=["channel", "val_r", "test_r", "cc_norm"], data=rows)}
        )
    return ["wandb"] * len(wandb_loggers)
