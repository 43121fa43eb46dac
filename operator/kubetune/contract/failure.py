"""Why a job failed: the table of failure classes, and the report the trainer and evaluator
leave in their termination message for the operator to read."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field

from .document import Document
from .pod import TERMINATION_MESSAGE_LIMIT

FAILURE_CLASSES: dict[str, str] = {
    "InvalidSpec": "the spec is invalid (the message names the field)",
    "PermanentError": "a configuration, data or model error no retry can fix (exit code 3)",
    "OutOfMemory": "a worker ran out of memory (OOMKilled, or a CUDA or CPU out-of-memory error) twice",
    "RendezvousTimeout": "the workers could not form their process group in time",
    "CollectiveTimeout": "a collective operation (NCCL or gloo) timed out: a rank hung or was lost",
    "Crashed": "the trainer raised an error it could not classify",
    "InitializationFailed": "the initializer could not fetch a source (the message names it) within backoffLimit",
    "ImagePull": "an image cannot be pulled (or its name is invalid)",
    "ContainerConfig": "a container cannot be configured: a Secret or key it needs is missing",
    "Unschedulable": "the pods could not all be scheduled, or their claim bound, in time",
    "Stalled": "training made no progress for too long, more often than backoffLimit allows",
    "BackoffLimitExceeded": "workers restarted more often than backoffLimit allows",
    "TooManyDisruptions": "workers were evicted or preempted more often than maxDisruptions allows",
    "DeadlineExceeded": "the job ran longer than activeDeadlineSeconds",
    "EvaluationFailed": "the evaluation Job failed",
    "Regressed": "an evaluation gate failed and spec.evaluation.onRegression is fail",
    "PublishFailed": "uploading the model to a spec.output.publish target failed past backoffLimit",
    "UpstreamFailed": "a job:// upstream failed",
}
FailureClass = Literal[tuple(FAILURE_CLASSES)]  # type: ignore[valid-type]

OUT_OF_MEMORY_HINT = (
    "lower training.per_device_train_batch_size (raising gradient_accumulation_steps keeps the global batch), "
    "training.max_length, or use a higher ZeRO stage or offload in spec.distributed"
)
LAST_LOG_LINES = 50

# Words in an error or a log that tell the class, checked in order (lower-cased).
_SIGNS = (
    ("OutOfMemory", ("out of memory", "outofmemoryerror", "memoryerror", "can't allocate memory",
                     "not enough memory")),
    ("RendezvousTimeout", ("rendezvoustimeouterror", "rendezvousclosederror", "timed out initializing process group",
                           "store based barrier", "timed out waiting for clients", "disttimeouterror")),
    ("CollectiveTimeout", ("collective operation timeout", "watchdog caught", "nccl timeout",
                           "timed out waiting", "distbackenderror", "gloo::enforceexception")),
)


def classify_text(text: str) -> Optional[str]:
    """The failure class an error message or a log tail shows, if any."""
    lowered = text.lower()
    return next((reason for reason, signs in _SIGNS if any(sign in lowered for sign in signs)), None)


def last_line(text: str) -> str:
    """The last line that says something: for a traceback, the exception."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


class FailureReport(Document):
    """What a failed trainer or evaluator pod says in its termination message."""

    # A newer image may say more than this operator reads.
    model_config = ConfigDict(extra="ignore")

    reason: FailureClass
    message: str
    last_logs: Optional[str] = Field(None, description="The last lines of the pod's output.")

    def fitted(self) -> str:
        """The report encoded within the termination message limit, dropping the oldest log lines."""
        lines = (self.last_logs or "").splitlines()[-LAST_LOG_LINES:]
        message = self.message[:1000]
        while True:
            text = FailureReport(reason=self.reason, message=message, last_logs="\n".join(lines) or None).encode()
            if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT or not lines:
                return text
            lines = lines[1:]

    @classmethod
    def from_logs(cls, logs: str, exit_code: int) -> "FailureReport":
        """What a log tail shows when no report was left: the class its text names, and its last line."""
        return cls(reason=classify_text(logs) or "Crashed", message=last_line(logs) or f"exit code {exit_code}",
                   last_logs=logs or None)

    @classmethod
    def read(cls, message: str) -> Optional["FailureReport"]:
        """The report in a termination message, or None when the message is not one (an older
        image's plain text, or the kubelet's fallback to the last log lines)."""
        if not message.startswith("{"):
            return None
        try:
            return cls.decode(message)
        except ValueError:
            return None
