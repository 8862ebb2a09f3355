"""Checkpoints that survive kills and moves: written atomically in place, with paths relative to their folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["JobCheckpoint"]

_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class JobCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (same arguments) with two changes a job directory needs.

    - **Atomic writes.** Lightning stages a checkpoint in a temporary file in ``$TMPDIR`` and moves it into
      place, which is a copy, not a rename, when the run directory is on another filesystem (a cluster's
      scratch): a job killed mid-copy leaves a truncated ``last.ckpt``. Here every checkpoint is written to
      ``<name>.part`` beside its final name and renamed (atomic within one filesystem), so a ``.ckpt`` file is
      always whole; a kill leaves at most a ``.part`` file, which the next run removes.
    - **Relative paths.** The callback's state inside each checkpoint (best, k-th best and last checkpoint,
      the top-k table) names files relative to ``dirpath``, and is resolved against the current ``dirpath``
      when a job resumes: a job directory that was moved or copied resumes from its own checkpoints, never
      from the old location's. Absolute paths written by Lightning's own class are rebased likewise.
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        part = f"{filepath}.part"
        super()._save_checkpoint(trainer, part)
        if trainer.is_global_zero:
            os.replace(part, filepath)
        self._last_checkpoint_saved = filepath

    def _relative(self, path: Any) -> Any:
        if not path or not self.dirpath:
            return path
        try:
            return Path(path).resolve().relative_to(Path(self.dirpath).resolve()).as_posix()
        except ValueError:
            return str(path)

    def _absolute(self, path: Any, saved_dirpath: str | None) -> Any:
        if not path or not self.dirpath:
            return path
        path = Path(str(path))
        if path.is_absolute():
            if saved_dirpath is None:
                return str(path)
            try:  # written by a checkpoint callback elsewhere (a moved tree): the same file here
                path = path.relative_to(saved_dirpath)
            except ValueError:
                return str(path)
        return str(Path(self.dirpath) / path)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for key in _PATH_KEYS:
            state[key] = self._relative(state.get(key))
        state["best_k_models"] = {self._relative(k): v for k, v in (state.get("best_k_models") or {}).items()}
        state["dirpath"] = None  # the folder the paths are relative to is wherever the checkpoint is read
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dirpath = state_dict.get("dirpath")
        state = dict(state_dict)
        for key in _PATH_KEYS:
            if key in state:
                state[key] = self._absolute(state[key], saved_dirpath)
        if "best_k_models" in state:
            state["best_k_models"] = {self._absolute(k, saved_dirpath): v for k, v in state["best_k_models"].items()}
        state["dirpath"] = self.dirpath  # paths now point into this folder: take the full state
        super().load_state_dict(state)
