"""How a pod says why it failed: a FailureReport (kubetune.contract.failure) in its termination
message, which the operator reads into status.failure.

Permanent errors (configuration, data, a missing model or package) exit with
contract.EXIT_PERMANENT and are never retried. Other errors are classified (out of memory, a
rendezvous or collective timeout) and retried by the pod's restart. Under torchrun a rank
writes its report to a file the launcher reads back: torchrun itself reports every failed
rank as a ChildFailedError with the same exit code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from kubetune import contract
from kubetune.contract.failure import OUT_OF_MEMORY_HINT, FailureReport, classify_text


class PermanentError(Exception):
    """Configuration, data or model errors that no retry can fix."""


def termination_log() -> Path:
    return Path(os.environ.get(contract.ENV_TERMINATION_LOG, "/dev/termination-log"))


def write_termination_message(message: str) -> None:
    try:
        termination_log().write_text(message[:contract.TERMINATION_MESSAGE_LIMIT])
    except OSError:
        pass  # Outside Kubernetes there may be no termination log; stderr still has it.


def _one_line(text: str) -> str:
    return " ".join(text.split())


def classify(error: BaseException) -> FailureReport:
    """The failure class of an exception a rank or the evaluator raised."""
    text = _one_line(f"{type(error).__name__}: {error}")
    if isinstance(error, PermanentError):
        return FailureReport(reason="PermanentError", message=_one_line(str(error)))
    if isinstance(error, ImportError):  # a package the job needs is not in the image: no retry installs it
        return FailureReport(reason="PermanentError", message=f"a package this image lacks: {text}")
    reason = classify_text(text) or classify_text(type(error).__name__) or "Crashed"
    if reason == "OutOfMemory":
        return FailureReport(reason=reason, message=f"{text[:500]}; {OUT_OF_MEMORY_HINT}")
    return FailureReport(reason=reason, message=text[:1000])


def record_failure(error: BaseException) -> FailureReport:
    """Leave the report where the launcher (or, run alone, the kubelet) reads it; print it."""
    report = classify(error)
    text = report.fitted()
    marker = os.environ.get(contract.ENV_FAILURE_FILE)
    if marker:
        try:  # the first rank to fail tells why; later ones fail because of it
            with open(marker, "x") as handle:
                handle.write(text)
        except FileExistsError:
            pass
    else:
        write_termination_message(text)
    print(f"kubetune: {report.reason}: {report.message}", flush=True)
    return report


def exit_code_for(error: BaseException) -> Optional[int]:
    """contract.EXIT_PERMANENT for an error no retry can fix, after recording it; None to re-raise."""
    return contract.EXIT_PERMANENT if record_failure(error).reason == "PermanentError" else None
