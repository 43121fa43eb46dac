"""What the operator saw of a job's children, parsed from plain Kubernetes objects (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Optional

from ..contract.progress import Progress


@dataclass(frozen=True)
class Termination:
    exit_code: int
    message: str = ""
    reason: str = ""


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

    def terminations(self) -> list[Termination]:
        return [t for t in (self.terminated, self.last_terminated) if t is not None]


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


@dataclass(frozen=True)
class Observed:
    now: datetime
    workers: Optional[WorkerSet] = None
    pods: tuple[WorkerPod, ...] = ()
    evaluation: Optional[EvaluationRun] = None
    # Phase of each job:// upstream job (None: it does not exist).
    upstream: Mapping[str, Optional[str]] = field(default_factory=dict)
    # Rank 0's /progress document while training.
    progress: Optional[Progress] = None


def _termination(state: Optional[Mapping[str, Any]]) -> Optional[Termination]:
    terminated = (state or {}).get("terminated")
    if not terminated:
        return None
    return Termination(int(terminated.get("exitCode", 0)), terminated.get("message", "") or "",
                       terminated.get("reason", "") or "")


def worker_pod(pod: Mapping[str, Any], container: str = "trainer") -> WorkerPod:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status = next((s for s in statuses if s.get("name") == container), None)
    name = pod["metadata"]["name"]
    if status is None:
        return WorkerPod(name)
    state = status.get("state") or {}
    return WorkerPod(
        name=name,
        running="running" in state,
        ready=bool(status.get("ready")),
        restarts=int(status.get("restartCount", 0)),
        terminated=_termination(state),
        last_terminated=_termination(status.get("lastState")),
        waiting_reason=(state.get("waiting") or {}).get("reason"),
    )


def worker_set(stateful_set: Optional[Mapping[str, Any]]) -> Optional[WorkerSet]:
    if stateful_set is None:
        return None
    return WorkerSet(int(stateful_set["spec"].get("replicas", 0)),
                     int((stateful_set.get("status") or {}).get("readyReplicas", 0)))


def evaluation_run(job: Optional[Mapping[str, Any]], pods: list[Mapping[str, Any]]) -> Optional[EvaluationRun]:
    """A batch Job's outcome, with the message of its newest terminated evaluator pod."""
    if job is None:
        return None
    conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
    messages = [t.message for t in (worker_pod(p, "evaluator").terminated for p in pods) if t and t.message]
    message = messages[-1] if messages else (conditions.get("Failed") or {}).get("message", "")
    return EvaluationRun(succeeded="Complete" in conditions, failed="Failed" in conditions, message=message)
