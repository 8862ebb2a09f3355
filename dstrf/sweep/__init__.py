"""Hydra multirun side: what runs after a sweep's jobs (``dstrf-aggregate``, its Hydra callback) and over
them (``dstrf-estimate``, :mod:`dstrf.sweep.posthoc`). The job life cycle and job discovery live in
:mod:`dstrf.runs`; dstrf's sweeper is the Hydra plugin in ``hydra_plugins/dstrf_sweeper``.

``dstrf.sweep.aggregate.aggregate(sweep_dir)`` summarises a sweep (Hydra configs refer to
``dstrf.sweep.aggregate.AggregateCallback``).
"""
