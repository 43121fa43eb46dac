"""A job's output folder as both sides read it: which checkpoints are whole, and the record
that training finished (a StatefulSet restarts pods after success; the record stops them
training twice, and `kubetune run` reads the result from it)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Optional

from pydantic import Field

from .document import Document

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# transformers writes trainer_state.json last, after weights, optimizer and RNG state.
CHECKPOINT_STATE_FILE = "trainer_state.json"


def checkpoint_step(path: Path) -> Optional[int]:
    match = CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete(path: Path) -> bool:
    step = checkpoint_step(path)
    try:
        state = json.loads((path / CHECKPOINT_STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return step is not None and state.get("global_step") == step


def checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if checkpoint_step(p) is not None), key=checkpoint_step)


def newest_complete_checkpoint(folder: Path) -> Optional[Path]:
    complete = [p for p in checkpoints(folder) if is_complete(p)]
    return complete[-1] if complete else None


class CompletionRecord(Document):
    uid: Optional[str] = Field(
        None, description="The job's uid: a record of another job of the same name does not count.")
    global_step: int
    model: str = Field(description="Folder of the saved model.")
    train_loss: Optional[float] = None
    tokens: Optional[int] = Field(None, description="Input tokens trained on, all ranks.")
    world_size: Optional[int] = Field(None, description="Training processes at the end.")
    completed_at: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def write(self, path: Path) -> None:
        staging = path.with_suffix(".tmp")
        staging.write_text(self.encode(indent=2))
        staging.replace(path)

    @classmethod
    def read(cls, path: Path, uid: Optional[str]) -> Optional["CompletionRecord"]:
        """The record if this job (same uid) finished training; None otherwise."""
        try:
            record = cls.decode(path.read_text())
        except (OSError, ValueError):
            return None
        return record if record.uid == uid else None
