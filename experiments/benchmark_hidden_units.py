"""dSTRFs of a DeepEncoder with many channels: the hidden-unit route (the Jacobian of its H = 128 hidden units
times the 1x1 readout: H backward passes) vs the per-channel route (N backward passes), side by side in one run.

64 output frames of a 6000-frame trial, 64 bands, 65 lags, N = 56, 220 and 1000 channels; the median of 3
runs of each, in float32 on 2 threads; the largest difference between the routes relative to the largest
|W|. Run from the repository root: ``python experiments/benchmark_hidden_units.py`` (about 2 minutes on 2
cores). Writes ``experiments/results/hidden_units.{json,md}``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from dstrf.estimate import dstrf
from dstrf.models import DeepEncoder

RESULTS = Path(__file__).resolve().parent / "results"


def seconds(model: torch.nn.Module, x: torch.Tensor, hidden_units: bool) -> tuple[float, torch.Tensor]:
    runs, result = [], None
    for _ in range(3):
        start = time.perf_counter()
        result = dstrf(model, x, times=range(3000, 3064), hidden_units=hidden_units)
        runs.append(time.perf_counter() - start)
    assert result is not None
    return statistics.median(runs), result


def main() -> None:
    torch.set_num_threads(2)
    x = torch.randn(64, 6000, generator=torch.Generator().manual_seed(0))
    rows = []
    for n in (56, 220, 1000):
        torch.manual_seed(0)
        model = DeepEncoder(64, n).eval()
        dstrf(model, x, times=range(0, 4))  # warm-up
        channel_s, by_channel = seconds(model, x, False)
        hidden_s, by_hidden = seconds(model, x, True)
        error = float((by_hidden - by_channel).abs().max() / by_channel.abs().max())
        rows.append(
            {
                "channels": n,
                "hidden": 128,
                "per_channel_s": channel_s,
                "hidden_s": hidden_s,
                "speedup": channel_s / hidden_s,
                "max_relative_difference": error,
            }
        )
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hidden_units.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| channels N | per-channel route (s) | hidden-unit route, H = 128 (s) | speed-up | max rel. difference |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['channels']} | {r['per_channel_s']:.2f} | {r['hidden_s']:.2f} | {r['speedup']:.2f}x | "
        f"{r['max_relative_difference']:.1e} |"
        for r in rows
    ]
    (RESULTS / "hidden_units.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
