"""The one place where the analysis validates its input: dSTRFs in, channels out, block by block.

A dSTRF ``W (T, N, F, L)`` can be a torch tensor, a numpy array, a :class:`~dstrf.estimate.DSTRFFile` (or the
path of one, or any object with ``.shape`` and ``[t0:t1, n]`` indexing, e.g. an ``h5py.Dataset``). The
measures see one channel at a time as blocks of frames in **lag-major** layout ``(frames, L, F)`` float64:
frame t's row ``X[t] = W[t, n].T``, so shifting a frame along the lag axis by s lags is a shift of its
flattened row by ``s * F`` entries, and the flattened rows are the vectorised ``W_t`` (the order of the
entries changes no correlation and no singular value).

A channel whose float64 copy fits in :data:`CHANNEL_CACHE_BYTES` is read once and kept while its measures
run; a larger one is re-read block by block on every pass, so memory stays bounded for any T.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..estimate.storage import DSTRFFile
from ..validation import positive_int

__all__ = ["DSTRFSource", "ChannelData", "FrameView", "CHANNEL_CACHE_BYTES", "DEFAULT_CHUNK"]

#: A channel is kept in memory (float64) while its measures run if it takes at most this many bytes.
CHANNEL_CACHE_BYTES = 1 << 30
#: Frames per block read from a source that is not cached.
DEFAULT_CHUNK = 1024


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be a significance level in (0, 1), e.g. 0.05; got {alpha!r}")
    return float(alpha)


class FrameView:
    """dSTRFs ``(T, N, F, L)`` from frame row ``start`` on, optionally times a ``mask`` of the same shape, read
    lazily: e.g. a file's frames past the warm-up, or a jackknife file's sign-consistent mean
    (``FrameView(f["mean"], start, mask=f["mask"])``). ``times`` and ``channels`` default to the data's own
    (a :class:`~dstrf.estimate.DSTRFFile`'s frame and channel numbers) or positions."""

    def __init__(self, data, start: int = 0, mask=None, times=None, channels=None) -> None:
        self._data, self._mask, self._start = data, mask, int(start)
        n_frames = int(data.shape[0])
        stored_times = times if times is not None else getattr(data, "times", None)
        self.times = np.asarray(stored_times if stored_times is not None else np.arange(n_frames))[self._start :]
        stored_channels = channels if channels is not None else getattr(data, "channels", None)
        self.channels = None if stored_channels is None else np.asarray(stored_channels)
        self.shape = (n_frames - self._start, *(int(s) for s in data.shape[1:]))

    def __getitem__(self, index):
        frames, *rest = index if isinstance(index, tuple) else (index,)
        begin, stop, _ = frames.indices(self.shape[0])
        rows = (slice(self._start + begin, self._start + stop), *rest)
        block = self._data[rows]
        return block if self._mask is None else block * self._mask[rows]


class DSTRFSource:
    """dSTRFs ``(T, N, F, L)`` from a tensor, an array, a dSTRF file or its path, read in blocks.

    ``channel_ids`` are the channels' numbers: a file's stored channel numbers (a file may hold a selection),
    positions 0..N-1 otherwise; ``times`` likewise the frame numbers. Use as a context manager when given a
    path (the file is closed on exit).
    """

    def __init__(self, W) -> None:
        self._owned: DSTRFFile | None = None
        if isinstance(W, (str, os.PathLike)):
            W = self._owned = DSTRFFile(W)
        if isinstance(W, torch.Tensor):
            if W.is_complex():
                raise TypeError(f"W must be real; got a {W.dtype} tensor")
            W = W.detach()
        elif isinstance(W, np.ndarray):
            if not np.issubdtype(W.dtype, np.floating) and not np.issubdtype(W.dtype, np.integer):
                raise TypeError(f"W must be a real array; got dtype {W.dtype}")
        elif not (hasattr(W, "shape") and hasattr(W, "__getitem__")):
            raise TypeError(
                "W must be a dSTRF (T, N, F, L): a torch tensor, a numpy array, a DSTRFFile or its path; "
                f"got {type(W).__name__}"
            )
        shape = tuple(int(s) for s in W.shape)
        if len(shape) != 4:
            hint = " (one channel? add its axis: W[:, None])" if len(shape) == 3 else ""
            raise ValueError(
                f"W must be a dSTRF (T, N, F, L) = (frames, channels, bands, lags); got shape {shape}{hint}"
            )
        if min(shape) < 1:
            raise ValueError(f"W is empty: shape {shape}")
        self.data = W
        self.shape = shape
        self.n_frames, self.n_channels, self.n_freqs, self.n_lags = shape
        self.dim = self.n_freqs * self.n_lags
        stored_channels = getattr(W, "channels", None)
        stored_times = getattr(W, "times", None)
        self.channel_ids = np.asarray(
            np.arange(self.n_channels) if stored_channels is None else stored_channels, dtype=np.int64
        )
        self.times = np.asarray(np.arange(self.n_frames) if stored_times is None else stored_times, dtype=np.int64)

    def select(self, channels: Sequence[int] | int | None) -> list[tuple[int, int]]:
        """``(channel id, position along N)`` of the chosen channels (all by default), in the order given."""
        if channels is None:
            return [(int(c), i) for i, c in enumerate(self.channel_ids)]
        if isinstance(channels, (int, np.integer)):
            channels = [channels]
        lookup = {int(c): i for i, c in enumerate(self.channel_ids)}
        chosen = [int(c) for c in channels]
        missing = [c for c in chosen if c not in lookup]
        if missing:
            raise ValueError(
                f"channels {missing[:5]} are not in W (its channels: {self.channel_ids[:8].tolist()}"
                f"{'...' if self.n_channels > 8 else ''})"
            )
        if not chosen:
            raise ValueError("channels is empty: choose at least one channel (or None for all)")
        return [(c, lookup[c]) for c in chosen]

    def require_consecutive_frames(self, what: str) -> None:
        """Measures that pair frame t with t + tau need W's frames to be consecutive."""
        if self.n_frames > 1 and not np.all(np.diff(self.times) == 1):
            raise ValueError(
                f"{what} pairs frames t and t + tau, so W's frames must be consecutive; this file holds "
                f"frames {self.times[:5].tolist()}..."
            )

    def read(self, position: int, channel: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of one channel as a lag-major float64 block ``(stop - start, L, F)``.

        Every value the measures see passes here, so this is where NaN and inf are refused.
        """
        block = self.data[start:stop, position]
        if isinstance(block, torch.Tensor):
            block = block.cpu()
            block = (block.double() if block.dtype in (torch.bfloat16, torch.float16) else block).numpy()
        block = np.ascontiguousarray(np.asarray(block).transpose(0, 2, 1), dtype=np.float64)
        if not np.isfinite(block).all():
            bad = int(np.nonzero(~np.isfinite(block).reshape(len(block), -1).all(1))[0][0])
            value = block[bad][~np.isfinite(block[bad])][0]
            raise ValueError(
                f"W has {value} at frame {int(self.times[start + bad])}, channel {channel}: dSTRFs must be finite"
            )
        return block

    def channel(self, channel: int, position: int, chunk: int = DEFAULT_CHUNK) -> ChannelData:
        cached = self.n_frames * self.dim * 8 <= CHANNEL_CACHE_BYTES
        data = self.read(position, channel, 0, self.n_frames) if cached else None
        return ChannelData(self, channel, position, positive_int(chunk, "chunk_size"), data)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> DSTRFSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class ChannelData:
    """One channel of a source: its frames ``(T, L, F)`` in memory (``data``), or read block by block."""

    source: DSTRFSource
    channel: int
    position: int
    chunk: int
    data: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return self.source.n_frames

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, L, F)``"""
        return self.source.n_frames, self.source.n_lags, self.source.n_freqs

    def blocks(self, overlap: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start, stop, X)`` over consecutive blocks of frames; ``X`` holds frames ``start`` to
        ``min(T, stop + overlap)``, the block and the ``overlap`` frames after it."""
        n = self.n_frames
        for start in range(0, n, self.chunk):  # in chunks also when cached: intermediates grow with the block
            stop = min(start + self.chunk, n)
            end = min(stop + overlap, n)
            if self.data is not None:
                yield start, stop, self.data[start:end]
            else:
                yield start, stop, self.source.read(self.position, self.channel, start, end)
