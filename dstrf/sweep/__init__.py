"""Hydra side: job life cycle (skip, resume, archive), DDP processes per job, aggregation after a sweep.

``dstrf.sweep.aggregate.aggregate(sweep_dir)`` summarises a sweep (the module name is kept free: Hydra
configs refer to ``dstrf.sweep.aggregate.AggregateCallback``).
"""

from .job import JobState, config_hash, mark_done, mark_started, prepare_job

__all__ = ["JobState", "config_hash", "prepare_job", "mark_started", "mark_done"]
