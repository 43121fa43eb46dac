"""What the operator saw of a job's children, parsed from plain Kubernetes objects (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping, Optional

from ..contract.initialization import InitializationReport
from ..contract.progress import Progress
from .conditions import seconds_since

# How long a completed batch Job's pod may stay out of the operator's cache (which can see the
# Job first) before its result counts as lost and the Job runs again.
RESULT_GRACE_SECONDS = 30


@dataclass(frozen=True)
class Termination:
    exit_code: int
    message: str = ""
    reason: str = ""  # the kubelet's: Completed, Error, OOMKilled, ...


@dataclass(frozen=True)
class WorkerPod:
    name: str
    running: bool = False
    ready: bool = False
    restarts: int = 0
    # The current state's termination, and the one before the last restart.
    terminated: Optional[Termination] = None
    last_terminated: Optional[Termination] = None
    waiting_reason: Optional[str] = None
    waiting_message: str = ""
    uid: str = ""
    # False with the scheduler's message while the pod cannot be placed.
    scheduled: Optional[bool] = None
    scheduling_message: str = ""
    # Evicted or preempted (the DisruptionTarget condition).
    disrupted: bool = False

    def terminations(self) -> list[Termination]:
        return [t for t in (self.terminated, self.last_terminated) if t is not None]

    @property
    def ordinal(self) -> Optional[int]:
        """The StatefulSet ordinal its name ends with."""
        number = self.name.rpartition("-")[2]
        return int(number) if number.isdigit() else None


@dataclass(frozen=True)
class WorkerSet:
    replicas: int
    ready: int = 0


@dataclass(frozen=True)
class EvaluationRun:
    succeeded: bool = False
    failed: bool = False
    # The evaluator's termination message: its JSON summary on success, the reason on failure.
    message: str = ""
    # The newest evaluator pod, while it waits to start.
    pod: Optional[WorkerPod] = None
    # When the Job completed (its completionTime), while it has.
    completed_at: Optional[str] = None

    @property
    def settled(self) -> bool:
        """Failed, or succeeded with its pod seen terminated: the Job's condition can reach the
        operator's cache before the pod's last state, whose termination message holds the result."""
        seen = self.pod is not None and self.pod.terminated is not None
        return self.failed or (self.succeeded and (bool(self.message) or seen))

    def result_lost(self, now: datetime) -> bool:
        """Completed longer than RESULT_GRACE_SECONDS ago with no pod left to read the result from
        (garbage-collected, its node lost, or deleted while the operator was down)."""
        return (self.succeeded and not self.settled and self.pod is None and self.completed_at is not None
                and seconds_since(self.completed_at, now) >= RESULT_GRACE_SECONDS)


@dataclass(frozen=True)
class Observed:
    now: datetime
    workers: Optional[WorkerSet] = None
    pods: tuple[WorkerPod, ...] = ()
    evaluation: Optional[EvaluationRun] = None
    publish: Optional[EvaluationRun] = None  # the publish Job, a batch Job like the evaluation
    # Phase of each job:// upstream job (None: it does not exist).
    upstream: Mapping[str, Optional[str]] = field(default_factory=dict)
    # Rank 0's /progress document while training.
    progress: Optional[Progress] = None
    # Why the output claim is not bound yet (None: bound, or not looked at).
    claim_pending: Optional[str] = None
    # The generation server's pods (spec.generation); ready: its readiness probe passes.
    generation_pods: tuple[WorkerPod, ...] = ()
    # The initializer Job, and what it reports while it downloads.
    initialization: Optional[EvaluationRun] = None
    initialization_progress: Optional[InitializationReport] = None

    def generation_pool(self) -> "Observed":
        """The generation server's pods seen as pods are: what the workers' rules (restart
        counting, terminations) read."""
        return Observed(self.now, pods=self.generation_pods)

    def without_pods_from(self, ordinal: int) -> "Observed":
        """Without the pods a scale-down removes (ordinals from `ordinal` on): they are leaving, not failing."""
        kept = tuple(pod for pod in self.pods if pod.ordinal is None or pod.ordinal < ordinal)
        return self if kept == self.pods else replace(self, pods=kept)


def _termination(state: Optional[Mapping[str, Any]]) -> Optional[Termination]:
    terminated = (state or {}).get("terminated")
    if not terminated:
        return None
    return Termination(int(terminated.get("exitCode", 0)), terminated.get("message", "") or "",
                       terminated.get("reason", "") or "")


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def worker_pod(pod: Mapping[str, Any], container: str = "trainer") -> WorkerPod:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status = next((s for s in statuses if s.get("name") == container), None) or {}
    scheduled = _condition(pod, "PodScheduled")
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    return WorkerPod(
        name=pod["metadata"]["name"],
        uid=pod["metadata"].get("uid", ""),
        running="running" in state,
        ready=bool(status.get("ready")),
        restarts=int(status.get("restartCount", 0)),
        terminated=_termination(state),
        last_terminated=_termination(status.get("lastState")),
        waiting_reason=waiting.get("reason"),
        waiting_message=waiting.get("message", "") or "",
        scheduled={"True": True, "False": False}.get(scheduled.get("status")),
        scheduling_message=scheduled.get("message", "") or "",
        disrupted=_condition(pod, "DisruptionTarget").get("status") == "True",
    )


def worker_set(stateful_set: Optional[Mapping[str, Any]]) -> Optional[WorkerSet]:
    if stateful_set is None:
        return None
    return WorkerSet(int(stateful_set["spec"].get("replicas", 0)),
                     int((stateful_set.get("status") or {}).get("readyReplicas", 0)))


def evaluation_run(job: Optional[Mapping[str, Any]], pods: list[Mapping[str, Any]],
                   container: str = "evaluator") -> Optional[EvaluationRun]:
    """A batch Job's outcome, with the message of its newest terminated pod."""
    if job is None:
        return None
    conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
    parsed = [worker_pod(p, container) for p in pods]
    messages = [pod.terminated.message for pod in parsed if pod.terminated and pod.terminated.message]
    message = messages[-1] if messages else (conditions.get("Failed") or {}).get("message", "")
    completed = (job.get("status") or {}).get("completionTime") or (conditions.get("Complete") or {}).get(
        "lastTransitionTime")
    return EvaluationRun(succeeded="Complete" in conditions, failed="Failed" in conditions, message=message,
                         pod=parsed[-1] if parsed else None, completed_at=completed)


def claim_pending(claim: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why a PersistentVolumeClaim is not bound yet, or None when it is (or is not there yet)."""
    if claim is None:
        return None
    phase = (claim.get("status") or {}).get("phase")
    if phase == "Bound":
        return None
    return f"persistentvolumeclaim {claim['metadata']['name']} is {phase or 'Pending'} (not bound to a volume)"
