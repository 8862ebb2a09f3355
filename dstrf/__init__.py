"""dstrf: dynamic spectrotemporal receptive fields and gradient maps of neural encoding models.

Layers, highest first; a module never imports one above it (checked by import-linter, ``lint-imports``,
contracts in ``pyproject.toml``):

- ``train`` | ``sweep``: entry points (``dstrf-train``; ``dstrf-aggregate``, ``dstrf-estimate``) and the sweep
  summary;
- ``results``: reading a run or sweep back (``dstrf-inspect``, :func:`dstrf.inspect.load`);
- ``lit`` | ``runs``: the Lightning adapters; run/sweep directories and the job life cycle;
- ``postfit``: the steps after a fit (dSTRFs, gradient maps, nonlinearity tables, their figures), shared by
  the callbacks and ``dstrf-estimate``;
- ``plots`` | ``analysis``: figures; nonlinearity measures;
- ``estimate``: dSTRFs, gradient maps, jackknife, storage;
- ``metrics`` | ``models``;
- ``data`` | ``config`` | ``validation`` (whole numbers, options, dtype names: one definition each) |
  ``tables`` (the one text-table formatter).

The estimation core (``data``, ``models``, ``metrics``, ``estimate``, ``analysis``) imports neither Lightning
nor Hydra.
"""

import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dstrf-lightning")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# The public name is ``dstrf.inspect.load`` (README, examples, users' scripts); the module is ``dstrf.results`` so that no file of the
# package is named after the standard library's ``inspect``. ``import dstrf.inspect`` and
# ``from dstrf.inspect import load`` find it here.
from . import results as inspect  # noqa: E402

sys.modules[f"{__name__}.inspect"] = inspect
