"""``dstrf-sync DIR ...``: upload every offline wandb run under a sweep (its jobs' runs and its summary run) or
a run directory with one ``wandb sync`` call, instead of pointing ``wandb sync`` at each job's folder."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["offline_runs", "main"]


def offline_runs(*roots: str | Path) -> list[Path]:
    """Every ``offline-run-*`` directory under ``roots`` (any depth), sorted; a root that is not a directory
    is an error naming it."""
    found: list[Path] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory (expected a sweep or run directory)")
        found += [d for d in root.rglob("offline-run-*") if d.is_dir()]
    return sorted(set(found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dstrf-sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="sweep or run directories")
    parser.add_argument("--dry-run", action="store_true", help="print the wandb sync command, run nothing")
    args, passthrough = parser.parse_known_args(argv)  # anything else goes to wandb sync (e.g. --project P)
    try:
        runs = offline_runs(*args.dirs)
    except FileNotFoundError as error:
        print(f"dstrf-sync: error: {error}", file=sys.stderr)
        return 1
    if not runs:
        print(f"dstrf-sync: no offline wandb runs under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    wandb = shutil.which("wandb") or "wandb"
    command = [wandb, "sync", *passthrough, *map(str, runs)]
    print(f"dstrf-sync: {len(runs)} offline runs: {shlex.join(command)}", file=sys.stderr)
    if args.dry_run:
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
