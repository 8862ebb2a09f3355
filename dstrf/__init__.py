"""dstrf: dynamic spectrotemporal receptive fields and gradient maps of neural encoding models.

Layers, highest first; a module never imports one above it (checked by import-linter, ``lint-imports``,
contracts in ``pyproject.toml``):

- ``train`` | ``sweep``: entry points (``dstrf-train``; ``dstrf-aggregate``, ``dstrf-estimate``);
- ``inspect``: reading a run or sweep back (``dstrf-inspect``, :func:`dstrf.inspect.load`);
- ``lit`` | ``runs``: the Lightning adapters; run/sweep directories and the job life cycle;
- ``plots`` | ``analysis``: figures; nonlinearity measures;
- ``estimate``: dSTRFs, gradient maps, jackknife, storage;
- ``metrics`` | ``models``;
- ``data`` | ``config`` | ``validation`` (whole numbers, options, dtype names: one definition each).

The estimation core (``data``, ``models``, ``metrics``, ``estimate``, ``analysis``) imports neither Lightning
nor Hydra.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dstrf-lightning")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
