"""The lifecycle as one pure function: spec + status + observed children -> what to do next.

Rules are checked in order; the first that applies sets the phase:

  invalid spec            -> Failed (InvalidSpec), nothing created
  already Succeeded/Failed-> stays; workers kept at zero; TTL deletes the job
  upstream job:// pending -> Pending (WaitingForUpstream); upstream failed -> Failed
  deadline passed         -> Failed (DeadlineExceeded)
  exit code 3 in a worker -> Failed (PermanentError) with its termination message
  a worker exited 0       -> Trained; workers to zero; evaluation Job; Evaluating -> Succeeded
  restarts > backoffLimit -> Failed (BackoffLimitExceeded)
  suspend                 -> Suspended; workers to zero
  otherwise               -> training objects ensured, workers at spec.resources.nodes;
                             Pending / Initializing / Training by how many workers run

Status goes in and comes out as the typed status models the CRD is generated from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .. import contract
from ..api.models import (
    TERMINAL_PHASES,
    EvaluationStatus,
    FineTuneJob,
    FineTuneJobStatus,
    ProgressStatus,
    WorkersStatus,
)
from ..contract.evaluation import EvaluationSummary
from ..contract.progress import Progress, TrainingNumbers
from ..render.sources import output_location
from .conditions import find, is_true, seconds_since, set_condition, timestamp
from .observed import Observed, Termination

ActionKind = Literal["ensure_training_objects", "scale_workers", "ensure_evaluation_job", "delete_job"]


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
    phase: str
    status: FineTuneJobStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def wire_status(self) -> dict[str, Any]:
        return self.status.wire()


def reads_progress(status: FineTuneJobStatus) -> bool:
    """Whether rank 0's /progress is worth reading: only while workers train."""
    return status.phase in ("Training", "Initializing")


class _Next:
    """The status being built, starting from the current one."""

    def __init__(self, status: FineTuneJobStatus, observed: Observed, generation: Optional[int]):
        self.old_phase = status.phase
        self.status = status.model_copy(deep=True)
        self.now = observed.now
        self.generation = generation
        self.actions: list[Action] = []
        self.events: list[Event] = []

    def condition(self, kind: str, value: bool, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, kind, value, reason, message, self.now, self.generation)

    def holds(self, kind: str) -> bool:
        return is_true(self.status.conditions, kind)

    def clear(self, kind: str, reason: str) -> None:
        if find(self.status.conditions, kind):
            self.condition(kind, False, reason)

    def finish(self, phase: str) -> Decision:
        self.status.phase = phase
        if self.generation is not None:
            self.status.observed_generation = self.generation
        if phase != self.old_phase:
            kind = "Warning" if phase == "Failed" else "Normal"
            failed = find(self.status.conditions, "Failed")
            message = failed.message if phase == "Failed" and failed else f"phase {phase}"
            self.events.insert(0, Event(kind, phase, message))
        if phase in TERMINAL_PHASES and not self.status.completion_time:
            self.status.completion_time = timestamp(self.now)
        return Decision(phase, self.status, self.actions, self.events)

    def fail(self, reason: str, message: str) -> Decision:
        self.condition("Failed", True, reason, message)
        self.condition("Running", False, reason)
        self.actions.append(Action("scale_workers", 0))
        return self.finish("Failed")


def decide(
    job: Optional[FineTuneJob],
    problems: list[str],
    status: FineTuneJobStatus,
    observed: Observed,
    generation: Optional[int] = None,
) -> Decision:
    state = _Next(status, observed, generation)
    if problems or job is None:
        state.condition("Failed", True, "InvalidSpec", "; ".join(problems) or "the spec cannot be read")
        return state.finish("Failed")
    if state.status.output is None:
        state.status.output = output_location(job).to_status()
    if state.status.phase in TERMINAL_PHASES:
        return _finished(job, state, observed)
    state.status.progress = _progress(state.status.progress, observed.progress, state)
    state.status.workers = WorkersStatus(
        desired=job.spec.desired_workers(),
        ready=sum(pod.running for pod in observed.pods),
        restarts=sum(pod.restarts for pod in observed.pods),
    )

    for name, phase in sorted(observed.upstream.items()):
        if phase == "Failed":
            return state.fail("UpstreamFailed", f"job://{name} failed")
        if phase != "Succeeded":
            state.condition("Created", False, "WaitingForUpstream", f"waiting for job://{name} to succeed")
            return state.finish("Pending")

    if not state.status.start_time:
        state.status.start_time = timestamp(observed.now)
    run_policy = job.spec.run_policy
    deadline = run_policy.active_deadline_seconds
    if deadline and not run_policy.suspend and seconds_since(state.status.start_time, observed.now) >= deadline:
        return state.fail("DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({deadline})")
    permanent = _first_termination(observed, lambda t: t.exit_code == contract.EXIT_PERMANENT)
    if permanent:
        return state.fail("PermanentError", permanent.message or "a worker exited with the permanent error code")
    # Before the backoff check: workers restart after success too, and each restart counts.
    if state.holds("Trained") or _first_termination(observed, lambda t: t.exit_code == 0):
        return _after_training(job, state, observed)
    restarts = state.status.workers.restarts
    if restarts > run_policy.backoff_limit:
        last = _first_termination(observed, lambda t: t.exit_code != 0)
        detail = f": {last.message}" if last and last.message else ""
        return state.fail("BackoffLimitExceeded",
                          f"{restarts} worker restarts exceed backoffLimit {run_policy.backoff_limit}{detail}")
    if run_policy.suspend:
        state.condition("Suspended", True, "Suspended", "workers scaled to zero; clearing suspend resumes")
        state.condition("Running", False, "Suspended")
        state.actions += [Action("ensure_training_objects"), Action("scale_workers", 0)]
        return state.finish("Suspended")
    return _training(job, state, observed)


def _training(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    nodes = job.spec.desired_workers()
    state.actions += [Action("ensure_training_objects"), Action("scale_workers", nodes)]
    if not state.holds("Created"):
        state.condition("Created", True, "ChildrenCreated", "worker StatefulSet, Service, ConfigMap and volume")
    state.clear("Suspended", "Resumed")
    restarting = [pod.name for pod in observed.pods
                  if not pod.running and (pod.waiting_reason == "CrashLoopBackOff" or pod.terminated)]
    if restarting:
        state.condition("Restarting", True, "WorkerRestarting", f"restarting: {', '.join(restarting)}")
    elif state.holds("Restarting"):
        state.condition("Restarting", False, "WorkersRunning")
    running = state.status.workers.ready
    if running >= nodes:
        state.condition("Running", True, "WorkersRunning", f"{running}/{nodes} workers running")
        return state.finish("Training")
    if state.holds("Running"):
        state.condition("Running", False, "WorkersNotRunning", f"{running}/{nodes} workers running")
    return state.finish("Initializing" if running else "Pending")


def _after_training(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    if not state.holds("Trained"):
        state.condition("Trained", True, "TrainingSucceeded", "the model is saved in the output volume")
        state.condition("Running", False, "TrainingSucceeded")
        state.clear("Restarting", "TrainingSucceeded")
        state.events.append(Event("Normal", "Trained", "training finished; workers scaled to zero"))
    # Workers restart after success (a StatefulSet always does); they must not stay up.
    state.actions.append(Action("scale_workers", 0))
    state.status.workers.desired = 0
    skipped = job.spec.evaluation_skipped_because()
    if skipped:
        state.condition("Succeeded", True, "TrainingSucceeded", f"trained; {skipped}")
        return state.finish("Succeeded")
    evaluation = observed.evaluation
    if evaluation is None or not (evaluation.succeeded or evaluation.failed):
        state.actions.append(Action("ensure_evaluation_job"))
        return state.finish("Evaluating")
    if evaluation.failed:
        return state.fail("EvaluationFailed", evaluation.message or "the evaluation Job failed")
    summary = EvaluationSummary.read(evaluation.message)
    state.status.evaluation = EvaluationStatus(metrics=summary.metrics, report=summary.report)
    text = ", ".join(f"{name}={value.tuned:.4g}" for name, value in summary.metrics.items())
    state.condition("Evaluated", True, "EvaluationSucceeded", text or "evaluation finished")
    state.condition("Succeeded", True, "EvaluationSucceeded", text or "trained and evaluated")
    state.events.append(Event("Normal", "Evaluated", text or "evaluation finished"))
    return state.finish("Succeeded")


def _finished(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    if observed.workers and observed.workers.replicas > 0:
        state.actions.append(Action("scale_workers", 0))
    ttl = job.spec.run_policy.ttl_seconds_after_finished
    finished_at = state.status.completion_time
    if ttl is not None and finished_at and seconds_since(finished_at, observed.now) >= ttl:
        state.actions.append(Action("delete_job"))
    return state.finish(state.status.phase)


def _progress(old: Optional[ProgressStatus], reported: Optional[Progress], state: _Next) -> Optional[ProgressStatus]:
    if reported is None:
        return old
    progress = ProgressStatus(**reported.model_dump(include=set(TrainingNumbers.model_fields)))
    if progress.total_steps:
        progress.display = f"{progress.step}/{progress.total_steps} ({100 * progress.step // progress.total_steps}%)"
    checkpoint = reported.checkpoint
    if checkpoint and checkpoint != (old.last_checkpoint if old else None):
        state.events.append(Event("Normal", "Checkpoint", f"saved {checkpoint}"))
    progress.last_checkpoint = checkpoint
    return progress


def _first_termination(observed: Observed, matches) -> Optional[Termination]:
    for pod in observed.pods:
        for termination in pod.terminations():
            if matches(termination):
                return termination
    return None
