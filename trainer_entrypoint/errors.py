"""Permanent errors: the pod exits with contract.EXIT_PERMANENT and a one-line reason.

The reason goes to the container's termination message file (the operator copies it into
the Failed condition) and, under torchrun, to a marker file the launcher reads back: torchrun
itself reports every failed worker with the same exit code.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubetune import contract


class PermanentError(Exception):
    """Configuration, data or model errors that no retry can fix."""


def termination_log() -> Path:
    return Path(os.environ.get(contract.ENV_TERMINATION_LOG, "/dev/termination-log"))


def write_termination_message(message: str) -> None:
    try:
        termination_log().write_text(message[:4096])
    except OSError:
        pass  # Outside Kubernetes there may be no termination log; stderr still has it.


def record_permanent_error(error: PermanentError) -> int:
    message = " ".join(str(error).split())
    write_termination_message(message)
    marker = os.environ.get(contract.ENV_PERMANENT_ERROR_FILE)
    if marker:
        Path(marker).write_text(message)
    print(f"kubetune: permanent error: {message}", flush=True)
    return contract.EXIT_PERMANENT
