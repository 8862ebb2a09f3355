"""``python -m tests.faults.runner [DSTRF-TRAIN OVERRIDES]``: ``dstrf-train`` that dies at a chosen point.

``DSTRF_KILL_AT`` says where the process ends with ``os._exit(137)``, the way SIGKILL ends it (no cleanup,
no ``finally``, no flushing):

- ``batch:E:B``: after training batch B of epoch E (mid-epoch; ``batch:0:0`` is before the first checkpoint);
- ``checkpoint:K``: during the K-th checkpoint write (0-based), after its bytes are on disk and before it is
  renamed into place;
- ``results``: after ``metrics.json`` and before ``test_predictions.npz`` and ``done.json`` (between a
  job's outputs).

Unset, it is plain ``dstrf-train``.
"""

from __future__ import annotations

import os
import sys


def _install(where: str) -> None:
    kind, *args = where.split(":")
    if kind == "batch":
        from dstrf.lit.module import EncoderModule

        epoch, batch = map(int, args)

        def on_train_batch_end(self, outputs, batch_, batch_idx):
            if self.current_epoch == epoch and batch_idx == batch:
                os._exit(137)

        EncoderModule.on_train_batch_end = on_train_batch_end
    elif kind == "checkpoint":
        from dstrf.lit import checkpoint

        count = {"n": 0}
        replace = checkpoint.os.replace

        class _Os:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):
                if count["n"] == int(args[0]):
                    os._exit(137)
                count["n"] += 1
                replace(src, dst)

        checkpoint.os = _Os()
    elif kind == "results":
        import dstrf.train

        def die(*_args, **_kwargs):
            os._exit(137)

        dstrf.train._save_test_predictions = die
    else:
        raise ValueError(f"DSTRF_KILL_AT={where!r}: expected batch:E:B, checkpoint:K or results")


if __name__ == "__main__":
    if os.environ.get("DSTRF_KILL_AT"):
        _install(os.environ["DSTRF_KILL_AT"])
    from dstrf.train import main

    sys.argv = ["dstrf-train", *sys.argv[1:]]
    main()
