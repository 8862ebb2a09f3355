"""How to store jackknife dSTRFs: float16 vs float32, and HDF5 compression, measured on real ones.

The arrays: the jackknife mean and SE of 7 ``DeepEncoder`` replicates (64 bands, 65 lags, 220 channels) over
32 output frames of a 6000-frame trial, as ``dstrf-estimate`` writes them (chunks of 64 frames x 1 channel,
fletcher32 checksums). For each storage type and filter: the file size, the write and the full-read time, and
for float16 the error it introduces relative to float32: the largest absolute error relative to the largest
|value|, and the median relative error over the values above 1% of that largest. Run from the repository
root: ``python experiments/benchmark_storage.py`` (about 2 minutes on 2 cores). Writes
``experiments/results/storage_benchmark.{json,md}``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from dstrf.estimate import jackknife_dstrf
from dstrf.models import DeepEncoder

RESULTS = Path(__file__).resolve().parent / "results"
FILTERS = {
    "none": {},
    "lzf": {"compression": "lzf", "shuffle": True},
    "gzip-4": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
}


def main() -> None:
    torch.set_num_threads(2)
    models = []
    for seed in range(7):
        torch.manual_seed(seed)
        models.append(DeepEncoder(64, 220).eval())
    x = torch.randn(64, 6000, generator=torch.Generator().manual_seed(0))
    result = jackknife_dstrf(models, x, times=slice(3000, 3032))
    arrays = {"mean": result.mean.numpy(), "se": result.se.numpy()}
    rows, errors = [], {}
    for name, values in arrays.items():
        half = values.astype(np.float16).astype(np.float32)
        scale = float(np.abs(values).max())
        big = np.abs(values) > 0.01 * scale
        errors[name] = {
            "max_abs_error_over_max": float(np.abs(half - values).max() / scale),
            "median_relative_error": float(np.median(np.abs(half - values)[big] / np.abs(values[big]))),
        }
    chunks = (32, 1, 64, 65)
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16"):
            for label, options in FILTERS.items():
                path = Path(tmp) / f"{dtype}-{label}.h5"
                start = time.perf_counter()
                with h5py.File(path, "w") as f:
                    for name, values in arrays.items():
                        f.create_dataset(name, data=values.astype(dtype), chunks=chunks, fletcher32=True, **options)
                    f.create_dataset("mask", data=result.mask.numpy(), chunks=chunks, fletcher32=True, **options)
                write = time.perf_counter() - start
                start = time.perf_counter()
                with h5py.File(path, "r") as f:
                    for name in ("mean", "se", "mask"):
                        f[name][()]
                read = time.perf_counter() - start
                rows.append(
                    {
                        "dtype": dtype,
                        "filter": label,
                        "megabytes": path.stat().st_size / 1e6,
                        "write_s": write,
                        "read_s": read,
                    }
                )
                print(rows[-1], flush=True)
    base = next(r for r in rows if r["dtype"] == "float32" and r["filter"] == "none")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "storage_benchmark.json").write_text(json.dumps({"rows": rows, "float16_error": errors}, indent=2))
    lines = [
        "| dtype | filter | size (MB) | size vs float32 plain | write (s) | read (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['dtype']} | {r['filter']} | {r['megabytes']:.0f} | {r['megabytes'] / base['megabytes']:.2f} | "
        f"{r['write_s']:.2f} | {r['read_s']:.2f} |"
        for r in rows
    ]
    lines += [
        "",
        "| dataset | float16: max abs error / max abs value | float16: median relative error |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {e['max_abs_error_over_max']:.1e} | {e['median_relative_error']:.1e} |"
        for name, e in errors.items()
    ]
    (RESULTS / "storage_benchmark.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
