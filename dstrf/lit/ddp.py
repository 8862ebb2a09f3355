"""Multi-process (DDP) jobs under Hydra, also inside a multirun, started by dstrf rather than by Lightning.

Lightning starts the rank > 0 processes of a ``strategy="ddp"`` job by re-running the command line. Inside a
Hydra multirun (Lightning 2.6) that is wrong twice over: the rank-1 process re-runs the *whole sweep*
(``-m`` and every sweep value are on the command line) in a second sweep tree, and the parent keeps
``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_PORT`` in its environment after the job, so the next job believes its
processes are created externally and pairs with the stray process, while the sweep still exits 0.

:func:`job_processes` does what the job needs instead. Before the job trains, it starts ranks 1..K-1 as
``python -m dstrf.train <this job's overrides> hydra.run.dir=<this job's dir> hydra.mode=RUN``, on a fresh
port, with the rank variables set for this job only. It waits for them when the job ends and fails the job
if one failed. It then restores the environment and destroys the process group, so the next job starts
clean. Jobs whose processes are created externally (SLURM tasks, torchrun) and single-process jobs pass
through untouched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch.distributed
from lightning.pytorch.strategies import DDPStrategy

from ..config import quote_override

__all__ = ["job_processes", "processes_to_start", "is_rank_zero_process"]

_RANK_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "DSTRF_RESUME_FROM")


def is_rank_zero_process() -> bool:
    """False in every process of a multi-process job but the first (they share rank 0's job directory)."""
    ranks = [os.environ.get("RANK"), os.environ.get("LOCAL_RANK"), os.environ.get("NODE_RANK")]
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        ranks.append(os.environ.get("SLURM_PROCID"))
    return all(int(r or 0) == 0 for r in ranks)


def processes_to_start(trainer: L.Trainer) -> int:
    """How many processes this job needs dstrf to run (0: none, Lightning or the cluster handles it)."""
    strategy = trainer.strategy
    if not isinstance(strategy, DDPStrategy) or getattr(strategy, "_start_method", "popen") != "popen":
        return 0  # single device, or ddp_spawn/ddp_fork, which start workers in-process
    if trainer.num_nodes != 1 or trainer.num_devices < 2:
        return 0
    assert strategy.cluster_environment is not None  # the Trainer's accelerator connector has set it
    if strategy.cluster_environment.creates_processes_externally:
        return 0  # SLURM tasks, torchrun, or we are a rank > 0 process ourselves
    return trainer.num_devices


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _watch(children: list[subprocess.Popen], stop: threading.Event) -> None:
    # A rank that dies leaves rank 0 blocked in a collective until a long timeout; end the job instead.
    while not stop.wait(1.0):
        if any(child.poll() not in (None, 0) for child in children):
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextmanager
def job_processes(
    trainer: L.Trainer, job_dir: Path, overrides: Sequence[str], resume_from: str | None
) -> Iterator[None]:
    """Run the body as rank 0 of this job with ranks 1..K-1 started for it (see the module docstring)."""
    n = processes_to_start(trainer)
    if n == 0:
        yield
        return
    saved = {key: os.environ.get(key) for key in _RANK_ENV}
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(n), NODE_RANK="0", LOCAL_RANK="0"
    )
    children: list[subprocess.Popen] = []
    stop = threading.Event()
    try:
        for rank in range(1, n):
            env = {**os.environ, "LOCAL_RANK": str(rank), "DSTRF_RESUME_FROM": resume_from or ""}
            command = [
                sys.executable,
                "-m",
                "dstrf.train",
                *overrides,
                f"hydra.run.dir={quote_override(str(job_dir))}",
                "hydra.output_subdir=null",
                f"hydra.job.name=rank{rank}",
                "hydra.mode=RUN",
            ]
            children.append(subprocess.Popen(command, env=env, cwd=os.getcwd()))
        threading.Thread(target=_watch, args=(children, stop), daemon=True).start()
        yield
        stop.set()
        for rank, child in enumerate(children, start=1):
            code = child.wait()
            if code != 0:
                raise RuntimeError(
                    f"rank {rank} of the DDP job in {job_dir} failed with exit code {code}; see {job_dir}/rank{rank}.log"
                )
    except BaseException:
        stop.set()
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        raise
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
