"""A Hydra callback that records memory after every job of a multirun (a helper of ``test_memory.py``).

Passed to a sweep as ``+hydra.callbacks.rss._target_=tests.sweep.rss_probe.RSSProbe`` with
``+hydra.callbacks.rss.path=<file>``; after each job it appends one line ``<job number> <RSS MB> <live Trials>``:
the process's resident memory and how many :class:`dstrf.data.Trials` containers are still alive.

It never runs the garbage collector itself: a collection here would free what the sweep failed to free,
and hide exactly the leak it is there to measure.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


def rss_mb() -> float:
    """This process's resident set size (``VmRSS`` of ``/proc/self/status``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status (the memory test needs Linux)")


def live_trials() -> int:
    """How many ``Trials`` objects exist, reachable or only waiting for the cycle collector."""
    from dstrf.data import Trials

    return sum(isinstance(o, Trials) for o in gc.get_objects())


class RSSProbe(Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        with self.path.open("a") as f:
            f.write(f"{config.hydra.job.num} {rss_mb():.1f} {live_trials()}\n")
