"""Where dstrf's Hydra configs live, and composing them from Python (tests, notebooks)."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONFIG_DIR", "compose", "quote_override", "register_resolvers", "sweep_name"]


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


def quote_override(value: str) -> str:
    """A value for a Hydra command-line override, quoted so paths with ``=``, ``,`` or spaces stay one value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep_name(overrides) -> str:
    """A sweep directory name that is the same for the same command-line overrides (in any order) and
    differs otherwise: ``<sweep config>-<hash>``, e.g. ``cv_jackknife-3f2a9c1e07``. Running the same sweep
    again therefore resumes it in place; two different sweeps never share a directory."""
    items = sorted(str(o) for o in (overrides or []))
    digest = hashlib.sha256("\n".join(items).encode()).hexdigest()[:10]
    named = [m.group(1) for o in items if (m := re.fullmatch(r"\+?sweep=([\w-]+)", o))]
    return f"{named[0] if named else 'sweep'}-{digest}"


def register_resolvers() -> None:
    """OmegaConf resolvers used by dstrf's configs (idempotent)."""
    if not OmegaConf.has_resolver("dstrf_sweep_name"):
        OmegaConf.register_new_resolver("dstrf_sweep_name", sweep_name)


def _expose_sweeper_plugin() -> None:
    # Hydra finds sweepers by scanning the hydra_plugins namespace package's folders. A wheel puts dstrf's
    # sweeper in site-packages/hydra_plugins; an editable install only adds an import hook, which the scan
    # does not walk, so the checkout's folder is added to the namespace path explicitly.
    checkout = Path(__file__).resolve().parent.parent / "hydra_plugins"
    if not (checkout / "dstrf_sweeper").is_dir():
        return
    import hydra_plugins

    if str(checkout) not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(checkout))


register_resolvers()
_expose_sweeper_plugin()
