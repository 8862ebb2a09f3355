"""Read an offline wandb run's ``.wandb`` file: protobuf ``Record`` messages in wandb's block-record format.

The format (LevelDB's log format with wandb's header): a 7-byte header (``:W&B``, magic 0xBEE1 little
endian, version 0), then 32 KiB blocks of chunks, each chunk a 7-byte header (CRC-32, length as uint16, type:
1 full, 2 first, 3 middle, 4 last) and its payload; a block's last < 7 bytes are padding. A record is one
full chunk or the payloads of first, middle..., last joined.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = 7


def records(path: str | Path) -> list[pb.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb record file"
    out, pending, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        left = BLOCK - offset % BLOCK
        if left < HEADER:  # padding at the end of a block
            offset += left
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        if length == 0 and kind == 0:
            offset += left  # zero padding
            continue
        payload = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == 1:
            pending = payload
        elif kind == 2:
            pending = payload
            continue
        elif kind == 3:
            pending += payload
            continue
        elif kind == 4:
            pending += payload
        record = pb.Record()
        record.ParseFromString(pending)
        out.append(record)
        pending = b""
    return out


@dataclass
class OfflineRun:
    """What an offline run recorded: its identity, config, summary, history rows and the media files."""

    path: Path
    id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    resumed: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read_run(run_dir: str | Path) -> OfflineRun:
    """One ``offline-run-*`` directory."""
    run_dir = Path(run_dir)
    (path,) = run_dir.glob("*.wandb")
    run = OfflineRun(path)
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.name, run.group, run.job_type = r.run_id, r.display_name, r.run_group, r.job_type
            run.tags = list(r.tags)
            run.resumed = r.resumed
            for item in r.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                _set(run.summary, item.nested_key or [item.key], json.loads(item.value_json))
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, item.nested_key or [item.key], json.loads(item.value_json))
            run.history.append(row)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def _set(target: dict[str, Any], keys, value: Any) -> None:
    """``target[k0][k1]... = value``: wandb records a media item's fields (``path``, ``_type``) one by one,
    under the nested key ``(name, field)``."""
    *parents, leaf = list(keys)
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = value


def offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every offline run under ``root`` (any depth), in path order."""
    return [read_run(d) for d in sorted(Path(root).rglob("offline-run-*")) if d.is_dir()]
