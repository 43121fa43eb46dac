"""Checkpoints that are safe to resume from, and the completion record of a finished job."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# transformers writes trainer_state.json last, after weights, optimizer and RNG state.
STATE_FILE = "trainer_state.json"


def checkpoint_step(path: Path) -> Optional[int]:
    match = CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete(path: Path) -> bool:
    step = checkpoint_step(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return step is not None and state.get("global_step") == step


def checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def newest_complete_checkpoint(folder: Path) -> Optional[Path]:
    complete = [p for p in checkpoints(folder) if is_complete(p)]
    return complete[-1] if complete else None


def discard_incomplete(folder: Path) -> list[Path]:
    """Remove checkpoints an interrupted save left half-written, so none is mistaken for whole."""
    removed = [p for p in checkpoints(folder) if not is_complete(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def read_completion(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def completed_by(path: Path, uid: Optional[str]) -> Optional[dict[str, Any]]:
    """The completion record if this job (same uid) already finished training."""
    record = read_completion(path)
    return record if record and record.get("uid") == uid else None


def write_completion(path: Path, uid: Optional[str], global_step: int, model_dir: str, loss: Optional[float]) -> None:
    record = {"uid": uid, "globalStep": global_step, "model": model_dir, "trainLoss": loss,
              "completedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(record, indent=2))
    staging.replace(path)
