"""Where dstrf's Hydra configs live, and composing them from Python (tests, notebooks)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from omegaconf import DictConfig

__all__ = ["CONFIG_DIR", "compose"]


def _config_dir() -> str:
    # A source checkout (also an editable install) has conf/ beside the package; a wheel ships it as dstrf/conf.
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if (checkout / "train.yaml").is_file():
        return str(checkout)
    return str(resources.files("dstrf") / "conf")


CONFIG_DIR = _config_dir()


def compose(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The config ``dstrf-train`` would run with these overrides (without starting a run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
