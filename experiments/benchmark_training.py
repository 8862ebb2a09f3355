"""Training-speed benchmark of dstrf on the built-in synthetic data (CPU, default thread count).

What is measured (data: ``conf/data/synthetic.yaml`` defaults, 10 trials x 2000 frames, 32 bands, 5 neurons,
the default hold-out split and batches of 2 trials as :class:`dstrf.lit.TrialDataModule` serves them):

1. The default training run exactly as users start it, ``python -m dstrf.train`` (DeepEncoder, CSV logger,
   early stopping), in a subprocess with ``hydra.run.dir`` set to a fresh temporary directory: wall time of
   the whole command (interpreter start-up included), the epochs it ran, its test r and the ``wall_time_s``
   it reports itself (from its ``metrics.json``).
2. One training epoch of each encoder with the hyperparameters of ``conf/model/<name>.yaml``: forward,
   masked MSE loss (the first receptive_field - 1 frames of a trial left out, as EncoderModule does),
   backward and an AdamW step over all training batches. One warm-up batch, then the median of
   ``--epochs`` timed epochs (3 by default); frames per second = training frames per epoch / epoch time.
   Forward-only throughput (eval mode, ``torch.no_grad``) is timed the same way.

Run from the repository root::

    python experiments/benchmark_training.py          # everything (a few minutes on 2 cores)
    python experiments/benchmark_training.py --quick  # smoke test: 1 timed epoch, no default run

Writes ``experiments/results/training_benchmark.json`` and ``experiments/results/training_benchmark.md``
(``training_benchmark_quick.*`` with ``--quick``, so a smoke test never overwrites the real numbers). The timings
need an otherwise idle machine: the script reports the CPU time other processes used meanwhile and warns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import hydra.utils
import torch
from omegaconf import OmegaConf

from dstrf.config import CONFIG_DIR
from dstrf.data import holdout
from dstrf.lit import TrialDataModule, frame_mask

MODELS = {
    "LinearSTRF": "linear_strf",
    "LNSTRF": "ln_strf",
    "DeepEncoder": "deep_encoder",
    "ConvNet2D": "convnet2d",
    "StateNet": "statenet",
}
RESULTS = Path(__file__).resolve().parent / "results"
CONF = Path(CONFIG_DIR)


def make_datamodule() -> TrialDataModule:
    """The synthetic data and split ``dstrf-train`` uses by default (conf/data/synthetic.yaml, conf/split/holdout.yaml)."""
    data = OmegaConf.load(CONF / "data" / "synthetic.yaml")
    split = OmegaConf.load(CONF / "split" / "holdout.yaml")
    trials = hydra.utils.instantiate(data.trials)
    kwargs = {k: v for k, v in OmegaConf.to_container(split).items() if not k.startswith("_")}
    return TrialDataModule(
        trials,
        lambda n: holdout(n, **kwargs),
        batch_size=data.batch_size,
        standardize=data.standardize,
        standardize_response=data.standardize_response,
        num_workers=data.num_workers,
    )


def busy_cpu_s() -> float:
    """CPU seconds used on this machine by all processes, plus those the hypervisor stole (Linux; 0 elsewhere)."""
    try:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    except (OSError, ValueError):
        return 0.0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_epochs(step: Callable[[dict], None], loader: Iterable[dict], n_epochs: int) -> list[float]:
    """Seconds per pass of ``step`` over every batch of ``loader`` (batch loading included), ``n_epochs`` times."""
    times = []
    for _ in range(n_epochs):
        start = time.perf_counter()
        for batch in loader:
            step(batch)
        times.append(time.perf_counter() - start)
    return times


def bench_model(name: str, dm: TrialDataModule, n_epochs: int) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = OmegaConf.load(CONF / "model" / f"{MODELS[name]}.yaml")
    model: torch.nn.Module = hydra.utils.instantiate(cfg, n_freqs=dm.n_freqs, n_outputs=dm.n_channels)
    rf = model.receptive_field
    warmup = rf - 1 if rf is not None else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    loader = dm.train_dataloader()
    frames = sum(dm.trials[i].stimulus.shape[-1] for i in dm.split.train)

    def train_step(batch: dict) -> None:
        pred = model(batch["stimulus"])
        w = frame_mask(batch["lengths"], pred.shape[-1], warmup)[:, None, :].expand_as(pred).to(pred.dtype)
        loss = (((pred - batch["response"]) ** 2) * w).sum() / w.sum().clamp_min(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def forward_step(batch: dict) -> None:
        model(batch["stimulus"])

    busy, own = busy_cpu_s(), own_cpu_s()
    model.train()
    train_step(next(iter(loader)))  # warm-up
    train_times = time_epochs(train_step, loader, n_epochs)
    model.eval()
    forward_step(next(iter(loader)))
    forward_times = time_epochs(forward_step, loader, n_epochs)
    train, forward = statistics.median(train_times), statistics.median(forward_times)
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "receptive_field": rf,
        "train_frames_per_epoch": frames,
        "epoch_s": round(train, 4),
        "train_frames_per_s": round(frames / train),
        "forward_frames_per_s": round(frames / forward),
        "train_epochs_s": [round(t, 4) for t in train_times],
        "forward_epochs_s": [round(t, 4) for t in forward_times],
        # CPU time other processes took meanwhile: well above 0, they competed for the cores and the times are off.
        "other_cpu_s": round(max(0.0, (busy_cpu_s() - busy) - (own_cpu_s() - own)), 2),
    }


def bench_default_run() -> dict[str, Any]:
    """``python -m dstrf.train`` as is, writing into a temporary run directory that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="dstrf-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "dstrf.train", f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "command": "python -m dstrf.train",
        "wall_s": round(wall, 2),
        "reported_wall_time_s": metrics["wall_time_s"],
        "epochs": metrics["epochs"],
        "test_r_mean": round(metrics["test"]["r_mean"], 4),
    }


def markdown(
    machine: dict[str, Any], models: list[dict[str, Any]], default: dict[str, Any] | None, n_epochs: int
) -> str:
    lines = [
        f"Synthetic data (10 trials x 2000 frames, 32 bands, 5 neurons; {models[0]['train_frames_per_epoch']} training "
        f"frames per epoch, batches of 2 trials), {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"torch {machine['torch']} with {machine['torch_threads']} threads; median of {n_epochs} epoch(s).",
        "",
        "| model | parameters | receptive field | epoch (s) | train frames/s | forward frames/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in models:
        rf = r["receptive_field"] if r["receptive_field"] is not None else "recurrent"
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {rf} | {r['epoch_s']:.3f} "
            f"| {r['train_frames_per_s']:,} | {r['forward_frames_per_s']:,} |"
        )
    if default is not None:
        lines += [
            "",
            f"Default run (`{default['command']}`, DeepEncoder, early stopping): {default['wall_s']:.1f} s "
            f"wall ({default['reported_wall_time_s']:.1f} s inside the run), {default['epochs']} epochs, "
            f"test r = {default['test_r_mean']:.3f}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 timed epoch, skip the default-run subprocess")
    args = parser.parse_args()
    n_epochs = 1 if args.quick else 3
    start = time.perf_counter()
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    dm = make_datamodule()
    models = []
    for name in MODELS:
        models.append(bench_model(name, dm, n_epochs))
        print(
            f"{name}: {models[-1]['epoch_s']:.3f} s/epoch (other processes: {models[-1]['other_cpu_s']} CPU s)",
            flush=True,
        )
    busy = sum(r["other_cpu_s"] for r in models)
    if busy > 1.0:
        print(
            f"WARNING: other processes used {busy:.1f} CPU s during the timings; with {os.cpu_count()} cores the "
            "numbers are unreliable (OpenMP threads slow down badly when oversubscribed). Rerun on an idle machine."
        )
    default = None if args.quick else bench_default_run()
    table = markdown(machine, models, default, n_epochs)
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine,
        "quick": args.quick,
        "timed_epochs": n_epochs,
        "models": models,
        "default_run": default,
        "benchmark_wall_s": round(time.perf_counter() - start, 1),
    }
    stem = "training_benchmark_quick" if args.quick else "training_benchmark"  # a smoke test keeps the real numbers
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table)
    print(f"benchmark took {result['benchmark_wall_s']:.1f} s; wrote {RESULTS}/{stem}.{{json,md}}")


if __name__ == "__main__":
    main()
