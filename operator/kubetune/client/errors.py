"""The errors a Client raises, each saying what went wrong in words a user acts on.

`JobFailed` has one subclass per failure class of `status.failure.reason`
(contract.failure.FAILURE_CLASSES), so a caller may catch `errors.OutOfMemory` alone.
"""

from __future__ import annotations

from typing import Optional

from ..api.models import FineTuneJob
from ..api.validation import InvalidJob, Problem
from ..contract.failure import FAILURE_CLASSES


class KubetuneError(Exception):
    """Anything the client reports, besides InvalidJob (a ValueError) and TimeoutError."""


class ConfigError(KubetuneError):
    """No cluster to talk to: no kubeconfig, no such context, not inside a cluster."""


class ApiError(KubetuneError):
    """The API server refused or failed a request: its HTTP code, reason and message.
    `code` is None when the server could not be reached at all."""

    def __init__(self, code: Optional[int], reason: str, message: str):
        self.code, self.reason, self.message = code, reason, message
        super().__init__(f"{code or 'no answer'} {reason}: {message}" if reason else f"{code}: {message}")


class JobNotFound(ApiError):
    def __init__(self, name: str, where: str):
        self.name = name
        super().__init__(404, "NotFound", f'finetunejob "{name}" not found in {where}')


class RunStopped(KubetuneError):
    """A local run's process ended before its job did (stopped, killed, or crashed); its exit
    code when known, and the last lines it printed."""

    def __init__(self, name: str, exit_code: Optional[int], output: str):
        self.name, self.exit_code, self.output = name, exit_code, output
        how = "ended" if exit_code is None else f"exited with code {exit_code}"
        super().__init__(f"the local run of {name} {how} before the job finished" + (f":\n{output}" if output else ""))


def _phase(job: FineTuneJob) -> str:
    return (job.status.phase if job.status else None) or "not reported yet"


class WaitTimeout(TimeoutError):
    """wait() ran out of time; `job` is the job as last seen."""

    def __init__(self, job: FineTuneJob, until: tuple[str, ...], timeout_s: float):
        self.job = job
        super().__init__(f"{job.metadata.name} is {_phase(job)} after {timeout_s:g} s of waiting for "
                         f"{' or '.join(until)}")


class JobFailed(KubetuneError):
    """The job ended Failed: status.failure's reason, message, failed worker and its last log lines."""

    reason: str = "Failed"

    def __init__(self, job: FineTuneJob):
        failure = job.status.failure if job.status else None
        condition = next((c for c in (job.status.conditions if job.status else []) if c.type == "Failed"), None)
        self.job = job
        self.reason = failure.reason if failure else condition.reason if condition else "Failed"
        self.message = failure.message if failure else condition.message if condition else ""
        self.worker: Optional[str] = failure.worker if failure else None
        self.exit_code: Optional[int] = failure.exit_code if failure else None
        self.last_logs: str = (failure.last_logs if failure else None) or ""
        where = f" ({self.worker}, exit code {self.exit_code})" if self.worker else ""
        logs = f"\nlast lines:\n{self.last_logs}" if self.last_logs else ""
        super().__init__(f"{job.metadata.name} failed: {self.reason}: {self.message}{where}{logs}")

    @staticmethod
    def of(job: FineTuneJob) -> "JobFailed":
        """The error for a failed job: the subclass of its failure class."""
        failure = job.status.failure if job.status else None
        return FAILURES.get(failure.reason if failure else "", JobFailed)(job)


def _failure_class(reason: str, description: str) -> type[JobFailed]:
    return type(reason, (JobFailed,), {"__doc__": f"The job failed: {description}.", "__module__": __name__})


# One JobFailed subclass per failure class, by name (errors.OutOfMemory, errors.Stalled, ...).
FAILURES: dict[str, type[JobFailed]] = {reason: _failure_class(reason, text) for reason, text in
                                        FAILURE_CLASSES.items()}
globals().update(FAILURES)

__all__ = ["ApiError", "ConfigError", "InvalidJob", "JobFailed", "JobNotFound", "KubetuneError", "Problem",
           "RunStopped", "WaitTimeout", *FAILURES]
