"""What a terminated container says about why it failed, as a failure class (contract.failure)."""

from __future__ import annotations

from typing import Optional

from .. import contract
from ..api.models import FailureStatus
from ..contract.failure import OUT_OF_MEMORY_HINT, FailureReport
from .observed import Termination, WorkerPod


def report_of(termination: Termination) -> FailureReport:
    """The pod's own report when it left one; else what the kubelet says (an OOM kill, or the
    last log lines that stand in for a missing termination message)."""
    if termination.reason == "OOMKilled":
        return FailureReport(reason="OutOfMemory", message=f"the container was killed for using too much memory; "
                             f"{OUT_OF_MEMORY_HINT}", last_logs=termination.message or None)
    report = FailureReport.read(termination.message)
    if report is not None:
        return report
    if termination.exit_code == contract.EXIT_PERMANENT:
        return FailureReport(reason="PermanentError", message=termination.message or
                             "a worker exited with the permanent error code")
    return FailureReport.from_logs(termination.message, termination.exit_code)


def failure(reason: str, message: str, pod: Optional[WorkerPod] = None,
            termination: Optional[Termination] = None, report: Optional[FailureReport] = None) -> FailureStatus:
    """status.failure, with the failed pod's exit code and last log lines when there is one."""
    return FailureStatus(reason=reason, message=message, worker=pod.name if pod else None,
                         exit_code=termination.exit_code if termination else None,
                         last_logs=report.last_logs if report else None)


def is_out_of_memory(termination: Optional[Termination]) -> bool:
    return termination is not None and report_of(termination).reason == "OutOfMemory"
