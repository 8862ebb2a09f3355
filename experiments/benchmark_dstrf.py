"""dSTRF engine vs the per-element reference (naplab/DSTRF's method), side by side in one run.

Model: ``DeepEncoder(64 bands, hidden 128)`` with 20 and 220 outputs, random weights, one 2000-frame stimulus,
fp32, CPU threads at torch's default.

- **reference**: ``torch.autograd.functional.jacobian`` over chunks of 100 output frames, each with its causal
  input band (the 100 frames plus the receptive field before them), as naplab/DSTRF computes dSTRFs: one
  backward pass per output element;
- **dstrf**: :func:`dstrf.estimate.dstrf` (windows run as a batch without causal padding, channels as batched
  cotangents).

Both compute the same output frames, and the max abs difference between them is reported. Every measurement
runs in its own subprocess, so the peak resident memory (``ru_maxrss``) is its own. The reference takes
about 30 ms per output element on 2 cores, so it runs on 400 frames (20 outputs) or 100 frames (220 outputs).
Times are reported per 100 frames and the ratio is of like for like. The streamed engine's peak memory is
measured for 2000 and 8000 frames: it must not grow with T.

Run from the repository root: ``python experiments/benchmark_dstrf.py`` (about 5 minutes on 2 cores). Writes
``experiments/results/dstrf_benchmark.{json,md}``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"

_MEASURE = r"""
import json, resource, sys, tempfile, time, torch
from dstrf.estimate import dstrf
from dstrf.models import DeepEncoder
method, n_outputs, n_frames, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
model = DeepEncoder(64, n_outputs).eval()
x = torch.randn(64, n_frames, generator=torch.Generator().manual_seed(1))
R = model.receptive_field
model(x[None, :, :200])  # torch's one-time allocations are not the method's
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tic = time.perf_counter()
if method == "reference":
    W = torch.zeros(stop - start, n_outputs, 64, R)
    for t0 in range(start, stop, 100):
        t1 = min(t0 + 100, stop)
        s0 = max(0, t0 - R + 1)
        band = x[:, s0:t1]
        jac = torch.autograd.functional.jacobian(lambda inp: model(inp[None])[0][:, t0 - s0:], band)  # (N, t1-t0, F, t1-s0)
        for j, t in enumerate(range(t0, t1)):
            for k in range(min(R, t + 1)):
                W[t - start, :, :, k] = jac[:, j, :, t - s0 - k]
elif method == "dstrf":
    W = dstrf(model, x, times=range(start, stop))
else:  # streamed to disk
    with tempfile.TemporaryDirectory() as d:
        dstrf(model, x, times=range(start, stop), out=d + "/w.h5").close()
    W = None
seconds = time.perf_counter() - tic
peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
if W is not None:
    torch.save(W, sys.argv[6])
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))
"""


def measure(method: str, n_outputs: int, n_frames: int, start: int, stop: int, save: str = "/dev/null") -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, method, str(n_outputs), str(n_frames), str(start), str(stop), save],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for n_outputs, ref_frames in ((20, 400), (220, 100)):
        start, stop = 500, 500 + ref_frames
        tmp = RESULTS / f".w_{n_outputs}"
        ref = measure("reference", n_outputs, 2000, start, stop, f"{tmp}_ref.pt")
        eng = measure("dstrf", n_outputs, 2000, start, stop, f"{tmp}_eng.pt")
        diff = float((torch.load(f"{tmp}_ref.pt") - torch.load(f"{tmp}_eng.pt")).abs().max())
        for suffix in ("ref", "eng"):
            Path(f"{tmp}_{suffix}.pt").unlink()
        per100 = lambda r: r["seconds"] / ref_frames * 100  # noqa: B023 -- used in this iteration only
        rows.append(
            {
                "outputs": n_outputs,
                "frames_compared": ref_frames,
                "reference_s_per_100_frames": round(per100(ref), 2),
                "dstrf_s_per_100_frames": round(per100(eng), 3),
                "speedup": round(per100(ref) / per100(eng), 1),
                "max_abs_diff": diff,
                "reference_peak_mb": round(ref["peak_mb"]),
                "dstrf_peak_mb": round(eng["peak_mb"]),
                "dstrf_frame_channels_per_s": round(ref_frames * n_outputs / eng["seconds"]),
            }
        )
    streaming = {t: measure("stream", 20, t, 0, t) for t in (2000, 8000)}
    info = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (RESULTS / "dstrf_benchmark.json").write_text(
        json.dumps({"machine": info, "rows": rows, "streaming": streaming}, indent=2)
    )
    lines = [
        f"DeepEncoder (64 bands, hidden 128), 2000-frame stimulus, fp32, {info['cpus']} CPUs, torch {info['torch']}.",
        "",
        "| outputs | reference (s / 100 frames) | dstrf (s / 100 frames) | speed-up | max abs diff | peak MB ref / dstrf |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['outputs']} | {r['reference_s_per_100_frames']} | {r['dstrf_s_per_100_frames']} | {r['speedup']}x | "
            f"{r['max_abs_diff']:.1e} | {r['reference_peak_mb']} / {r['dstrf_peak_mb']} |"
        )
    lines += [
        "",
        "Streaming to disk (`out=`), 20 outputs: "
        + ", ".join(f"{t} frames: {s['seconds']:.0f} s, peak +{s['peak_mb']:.0f} MB" for t, s in streaming.items()),
    ]
    table = "\n".join(lines)
    (RESULTS / "dstrf_benchmark.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
