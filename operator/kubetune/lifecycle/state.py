"""What a decision is made of (actions, Events, the status), and the status being built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from ..api.models import FailureStatus, FineTuneJobStatus
from ..contract.failure import FailureReport
from .conditions import ConditionType, find, is_true, set_condition, timestamp
from .failures import failure, report_of
from .observed import EvaluationRun, Observed, Termination, WorkerPod
from .phases import TERMINAL, Phase

ActionKind = Literal["ensure_training_objects", "scale_workers", "scale_generation", "restart_workers", "ensure_evaluation_job",
                     "ensure_publish_job", "delete_evaluation_job", "delete_publish_job", "delete_job"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    replicas: Optional[int] = None


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    phase: Phase
    status: FineTuneJobStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def wire_status(self) -> dict[str, Any]:
        return self.status.wire()


class Next:
    """The status being built, starting from the current one."""

    def __init__(self, status: FineTuneJobStatus, observed: Observed, generation: Optional[int]):
        self.old_phase = status.phase
        self.status = status.model_copy(deep=True)
        self.now = observed.now
        self.generation = generation
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.old_desired = 0  # the worker count the last decision wanted

    def condition(self, kind: ConditionType, value: bool, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, kind, value, reason, message, self.now, self.generation)

    def holds(self, kind: ConditionType) -> bool:
        return is_true(self.status.conditions, kind)

    def clear(self, kind: ConditionType, reason: str) -> None:
        if find(self.status.conditions, kind):
            self.condition(kind, False, reason)

    def finish(self, phase: Phase) -> Decision:
        self.status.phase = phase
        if self.generation is not None:
            self.status.observed_generation = self.generation
        if phase != self.old_phase:
            kind = "Warning" if phase == Phase.FAILED else "Normal"
            failed = find(self.status.conditions, ConditionType.FAILED)
            message = failed.message if phase == Phase.FAILED and failed else f"phase {phase}"
            self.events.insert(0, Event(kind, phase, message))
        if phase in TERMINAL and not self.status.completion_time:
            self.status.completion_time = timestamp(self.now)
        return Decision(phase, self.status, self.actions, self.events)

    def warn_on_change(self, kind: ConditionType, value: bool, reason: str, message: str) -> None:
        """Set a condition; a Warning Event when its reason or message changed."""
        old = find(self.status.conditions, kind)
        if not old or (old.reason, old.message) != (reason, message):
            self.events.append(Event("Warning", reason, message))
        self.condition(kind, value, reason, message)

    def fail(self, reason: str, message: str, details: Optional[FailureStatus] = None) -> Decision:
        self.condition(ConditionType.FAILED, True, reason, message)
        self.condition(ConditionType.RUNNING, False, reason)
        self.status.failure = details or FailureStatus(reason=reason, message=message)
        self.actions.append(Action("scale_workers", 0))
        return self.finish(Phase.FAILED)

    def fail_batch_job(self, reason: str, run: EvaluationRun, what: str) -> Decision:
        """Fail with what a failed evaluation or publish Job's pod said (its report, or its raw message)."""
        report = FailureReport.read(run.message)
        message = report.message if report else run.message or f"the {what} Job failed"
        return self.fail(reason, message, FailureStatus(
            reason=reason, message=message, worker=run.pod.name if run.pod else None,
            last_logs=(report.last_logs if report else run.message) or None))

    def fail_with(self, reason: str, summary: Optional[str], pod: WorkerPod, termination: Termination) -> Decision:
        """Fail with what the pod that failed said, and its last log lines."""
        report = report_of(termination)
        message = report.message if summary is None else f"{summary}: {report.reason}: {report.message}"
        return self.fail(reason, message, failure(reason, message, pod, termination, report))


def first_termination(observed: Observed,
                      matches: Callable[[Termination], bool]) -> Optional[tuple[WorkerPod, Termination]]:
    for pod in observed.pods:
        for termination in pod.terminations():
            if matches(termination):
                return pod, termination
    return None
