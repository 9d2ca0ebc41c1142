"""Reading back what the trainers logged: W&B offline runs and TensorBoard event files, from the files the
libraries wrote (nothing mocked), and running a command without network where the kernel allows it."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

_WANDB_MAGIC = b":W&B"
_WANDB_HEADER = 7  # ":W&B", magic 0xBEE1, version byte
_BLOCK = 32 * 1024  # the run file is a LevelDB-style log: records in 32 KiB blocks
_RECORD_HEADER = 7  # crc32 (4), length (2), type (1)
_FULL, _FIRST, _LAST = 1, 2, 4


def _wandb_records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if data[:4] != _WANDB_MAGIC:
        raise ValueError(f"{path} is not a W&B run file (starts with {data[:7]!r})")
    position, pending = _WANDB_HEADER, b""
    while position + _RECORD_HEADER <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < _RECORD_HEADER:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + _RECORD_HEADER])
        payload = data[position + _RECORD_HEADER:position + _RECORD_HEADER + length]
        position += _RECORD_HEADER + length
        if kind == 0:
            continue
        pending = payload if kind in (_FULL, _FIRST) else pending + payload
        if kind in (_FULL, _LAST):
            yield pending


def wandb_offline_history(wandb_dir: Path) -> tuple[Path, list[dict]]:
    """The one offline run under ``wandb_dir``: its folder and its history rows (key -> value), in order."""
    from wandb.proto import wandb_internal_pb2

    runs = sorted(wandb_dir.glob("wandb/offline-run-*"))
    if len(runs) != 1:
        raise AssertionError(f"expected one offline run under {wandb_dir}, found {runs}")
    (run_file,) = runs[0].glob("run-*.wandb")
    rows = []
    for raw in _wandb_records(run_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return runs[0], rows


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """Scalar tag -> {step: value} from the event files under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, dict[int, float]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, {}).update({event.step: event.value for event in accumulator.Scalars(tag)})
    return found


def without_network() -> list[str]:
    """A command prefix that runs the command in a new network namespace (no interfaces but loopback), when
    the kernel lets this user create one; otherwise empty (the run is then offline by its settings only)."""
    prefix = ["unshare", "--map-root-user", "--net"]
    try:
        usable = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        usable = False
    return prefix if usable else []
