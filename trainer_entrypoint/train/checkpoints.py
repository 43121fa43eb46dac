"""Checkpoints an interrupted save left half-written are removed before a rank resumes.

Which checkpoints are whole, and the completion record, are part of the output contract
(kubetune.contract.output): the operator side reads them too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kubetune.contract.output import checkpoints, is_complete


def discard_incomplete(folder: Path) -> list[Path]:
    """Remove checkpoints an interrupted save left half-written, so none is mistaken for whole."""
    removed = [p for p in checkpoints(folder) if not is_complete(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
