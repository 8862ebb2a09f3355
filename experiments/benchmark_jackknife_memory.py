"""Peak memory of jackknife dSTRFs at the size of a real study: streamed into a file block by block (dstrf's
``jackknife_dstrf(..., out=, memory=)``, what ``dstrf-estimate`` runs) vs the whole result in memory (what it
did before: mean, SE and mask of the trial held until the file was written), side by side in one run.

The data: a 60 s trial (6000 frames at 100 Hz) of 64 bands, M = 7 jackknife replicates of the default
``DeepEncoder`` (width 128, receptive field 65), N = 220 output channels and, as a second size, N = 56. The
full trial takes about 22 minutes at N = 220 on 2 cores (13 s per 64 frames for the 7 models), so each run
computes a slice of the output frames (``times``) of the 6000-frame trial: 64 and 256 frames. The streamed
peak must not grow with the slice (or with N) while the in-memory one grows with both; the in-memory peak of
the whole trial is extrapolated from its per-frame slope (it is T x N x F x L x 9 bytes of results: 49 GB at
6000 x 220). Each measurement runs in its own process (peak RSS = ``ru_maxrss``).

Beside it, the per-element method (naplab/DSTRF's: ``torch.autograd.functional.jacobian`` over chunks of 100
output frames, one backward pass per output element) on one chunk of one model for an eighth of the channels,
extrapolated linearly to every channel, the 60 chunks of the trial and the M models, as the ratio to the
streamed whole trial.

Run from the repository root: ``python experiments/benchmark_jackknife_memory.py`` (about 4 minutes on 2
cores). Writes ``experiments/results/jackknife_memory.{json,md}``.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
N_FRAMES, N_FREQS, N_MODELS, BUDGET = 6000, 64, 7, "1GB"


def per_element(n_channels: int, measured_channels: int) -> dict:
    """In this process: naplab/DSTRF's method on one chunk of 100 output frames of one model, for
    ``measured_channels`` of its ``n_channels`` outputs: ``torch.autograd.functional.jacobian`` of those outputs
    over the chunk with respect to the chunk's causal input band, one backward pass per output element. Its
    cost is linear in the output elements, so the whole trial (every channel, 60 chunks, M models) is
    extrapolated from it."""
    import torch

    from dstrf.models import DeepEncoder

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = DeepEncoder(N_FREQS, n_channels).eval()
    x = torch.randn(N_FREQS, N_FRAMES, generator=torch.Generator().manual_seed(0))
    lags, t0, t1 = model.receptive_field, 3000, 3100
    band = x[:, t0 - lags + 1 : t1]
    start = time.perf_counter()
    jac = torch.autograd.functional.jacobian(lambda inp: model(inp[None])[0][:measured_channels, lags - 1 :], band)
    dstrfs = torch.stack([jac[:, j, :, j : j + lags].flip(-1) for j in range(t1 - t0)])  # (100, n, F, L)
    wall = time.perf_counter() - start
    assert dstrfs.shape == (t1 - t0, measured_channels, N_FREQS, lags)
    full = wall * (n_channels / measured_channels) * (N_FRAMES / (t1 - t0)) * N_MODELS
    return {
        "channels": n_channels,
        "measured_channels": measured_channels,
        "frames": t1 - t0,
        "seconds": wall,
        "full_trial_minutes": full / 60,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(n_channels: int, n_times: int, streamed: bool) -> dict:
    """In this process: one jackknife dSTRF of ``n_times`` output frames; wall time and peak RSS."""
    import torch

    from dstrf.estimate import jackknife_dstrf
    from dstrf.models import DeepEncoder

    torch.set_num_threads(2)
    models = []
    for seed in range(N_MODELS):
        torch.manual_seed(seed)
        models.append(DeepEncoder(N_FREQS, n_channels).eval())
    x = torch.randn(N_FREQS, N_FRAMES, generator=torch.Generator().manual_seed(0))
    times = slice(3000, 3000 + n_times)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if streamed:
            jackknife_dstrf(models, x, times=times, out=Path(tmp) / "jk.h5", memory=BUDGET)
        else:
            result = jackknife_dstrf(models, x, times=times)
            del result
    wall = time.perf_counter() - start
    return {
        "channels": n_channels,
        "frames": n_times,
        "streamed": streamed,
        "seconds": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    if len(sys.argv) == 4:  # a child: one measurement
        if sys.argv[3] == "per_element":
            print(json.dumps(per_element(int(sys.argv[1]), int(sys.argv[2]))))
        else:
            print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "streamed")))
        return
    reference = {}
    for n_channels in (220, 56):
        out = subprocess.run(
            [sys.executable, __file__, str(n_channels), str(max(1, n_channels // 8)), "per_element"],
            capture_output=True,
            text=True,
            check=True,
        )
        reference[n_channels] = json.loads(out.stdout.strip().splitlines()[-1])
        print(reference[n_channels], flush=True)
    rows = []
    for n_channels in (220, 56):
        for n_times in (64, 256):
            for mode in ("streamed", "in_memory"):
                out = subprocess.run(
                    [sys.executable, __file__, str(n_channels), str(n_times), mode],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    by = {(r["channels"], r["frames"], r["streamed"]): r for r in rows}
    summary = {}
    for n in (220, 56):
        small, large = by[(n, 64, False)], by[(n, 256, False)]
        slope = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (256 - 64)  # MB per output frame
        per_frame_s = by[(n, 256, True)]["seconds"] / 256
        summary[n] = {
            "streamed_peak_mb": max(by[(n, t, True)]["peak_rss_mb"] for t in (64, 256)),
            "in_memory_peak_mb_full_trial": small["peak_rss_mb"] + slope * (N_FRAMES - 64),
            "streamed_full_trial_minutes": per_frame_s * N_FRAMES / 60,
            "per_element_full_trial_minutes": reference[n]["full_trial_minutes"],
        }
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "machine": f"{platform.processor() or platform.machine()}, 2 threads",
        "budget": BUDGET,
        "n_models": N_MODELS,
        "n_freqs": N_FREQS,
        "trial_frames": N_FRAMES,
        "rows": rows,
        "per_element": list(reference.values()),
        "summary": summary,
    }
    (RESULTS / "jackknife_memory.json").write_text(json.dumps(payload, indent=2))
    lines = [
        f"# Jackknife dSTRF memory: {N_MODELS} DeepEncoders, {N_FREQS} bands, 65 lags, budget {BUDGET}",
        "",
        "| channels | output frames | mode | peak RSS (MB) | seconds |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['channels']} | {r['frames']} | {'streamed' if r['streamed'] else 'in memory'} | "
        f"{r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |"
        for r in rows
    ]
    lines += [
        "",
        "| channels | streamed peak (MB, any T) | in-memory peak, 6000 frames (MB, extrapolated) | "
        "ratio | streamed 6000 frames (min, extrapolated) | per-element method, 6000 frames (min, extrapolated) "
        "| speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {s['streamed_peak_mb']:.0f} | {s['in_memory_peak_mb_full_trial']:.0f} | "
        f"{s['in_memory_peak_mb_full_trial'] / s['streamed_peak_mb']:.0f}x | "
        f"{s['streamed_full_trial_minutes']:.0f} | {s['per_element_full_trial_minutes']:.0f} | "
        f"{s['per_element_full_trial_minutes'] / s['streamed_full_trial_minutes']:.1f}x |"
        for n, s in summary.items()
    ]
    lines += [
        "",
        "Per-element method (naplab/DSTRF's jacobian over chunks of 100 frames), measured on one chunk of one "
        "model for an eighth of the channels: "
        + "; ".join(
            f"{r['channels']} channels: {r['seconds']:.1f} s for {r['measured_channels']} channels x {r['frames']} "
            "frames"
            for r in reference.values()
        )
        + ".",
    ]
    (RESULTS / "jackknife_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
