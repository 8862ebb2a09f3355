"""Loggers that never block training: wandb goes offline by itself when it cannot reach its server."""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from lightning.pytorch.loggers import Logger, WandbLogger

__all__ = ["wandb_mode", "wandb_logger", "log_media"]

MODES = ("auto", "online", "offline", "disabled")


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(mode: str = "auto") -> str:
    """Resolve ``"auto"``: ``WANDB_MODE`` if set; else ``"online"`` only with an API key and a server that
    answers within 2 s; else ``"offline"`` (runs are kept on disk; ``wandb sync`` uploads them later)."""
    if mode not in MODES:
        raise ValueError(f"wandb mode must be one of {MODES}; got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return "offline" if os.environ["WANDB_MODE"] == "dryrun" else os.environ["WANDB_MODE"]
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urlparse(base_url).hostname or "api.wandb.ai"
    return "online" if _has_api_key(host) and _reachable(host) else "offline"


def wandb_logger(
    project: str = "dstrf",
    save_dir: str = ".",
    name: str | None = None,
    mode: str = "auto",
    group: str | None = None,
    tags: list[str] | None = None,
    init_timeout: float = 30.0,
    **kwargs,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` that works without network: see :func:`wandb_mode`.

    Files go to ``save_dir/wandb``. ``init_timeout`` bounds how long an online start may wait for the server.
    """
    import wandb

    resolved = wandb_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(init_timeout=init_timeout, silent=True)
    return WandbLogger(
        project=project,
        save_dir=str(save_dir),
        name=name,
        group=group,
        tags=list(tags) if tags else None,
        offline=resolved == "offline",
        mode=resolved,
        settings=settings,
        **kwargs,
    )


def log_media(loggers: Sequence[Logger], key: str, path: str | os.PathLike) -> list[str]:
    """Log a figure (PNG) or an animation (GIF, MP4) file to every logger that can show it; their names.

    wandb gets a ``wandb.Image`` or ``wandb.Video``; a TensorBoard logger gets a PNG as an image. Loggers
    without media (CSV) get nothing: the file on disk is the record.
    """
    path = Path(path)
    logged = []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            media = wandb.Image(str(path)) if path.suffix == ".png" else wandb.Video(str(path), format=path.suffix[1:])
            logger.experiment.log({key: media})
            logged.append("wandb")
        elif path.suffix == ".png" and hasattr(getattr(logger, "experiment", None), "add_image"):
            from PIL import Image

            logger.experiment.add_image(key, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
            logged.append(type(logger).__name__)
    return logged
