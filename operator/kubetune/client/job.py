"""What a Client returns: the job as the operator reports it, its Events, its checkpoints and pods."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from pydantic import PrivateAttr, ValidationError

from ..api.models import FineTuneJob, OutputStatus, ResizeRecord
from ..api.validation import _pydantic_problems, parse_job
from ..lifecycle.phases import Phase
from .errors import KubetuneError


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """An RFC 3339 time as Kubernetes writes it (2026-01-02T03:04:05Z), as an aware datetime."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class Job(FineTuneJob):
    """A FineTuneJob as the API server (or a local run) holds it: its spec, and the status the
    operator wrote. `phase` is status.phase, never worked out from pods; it is None until the
    operator has reported."""

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> "Job":
        try:
            job = cls.model_validate(document)
        except ValidationError as error:
            name = (document.get("metadata") or {}).get("name", "?")
            problems = "; ".join(str(p) for p in _pydantic_problems(error)[:3])
            raise KubetuneError(f"{name}: the stored job does not read as this kubetune's FineTuneJob ({problems}); "
                                f"was it written by another version?") from None
        job._raw = document
        return job

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def uid(self) -> Optional[str]:
        return self.metadata.uid

    @property
    def phase(self) -> Optional[Phase]:
        phase = self.status.phase if self.status else None
        return Phase(phase) if phase else None

    @property
    def created_at(self) -> Optional[datetime]:
        return parse_time((self.metadata.model_extra or {}).get("creationTimestamp"))

    @property
    def raw(self) -> dict[str, Any]:
        """The object as it was read (unknown fields included)."""
        return self._raw or self.wire()


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the job (or, locally, a line of events.jsonl)."""

    time: Optional[datetime]
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Checkpoints:
    """What status knows about the job's checkpoints and its model."""

    last: Optional[str]  # status.progress.lastCheckpoint: the newest one saved
    step: int  # the optimizer step rank 0 last reported
    resizes: list[ResizeRecord] = field(default_factory=list)  # each with the checkpoint training went on from
    output: Optional[OutputStatus] = None  # where the trained model is

    @classmethod
    def of(cls, job: Job) -> "Checkpoints":
        status = job.status
        progress = status.progress if status else None
        return cls(last=progress.last_checkpoint if progress else None, step=progress.step if progress else 0,
                   resizes=list(status.workers.resizes) if status and status.workers else [],
                   output=status.output if status else None)


@dataclass(frozen=True)
class PodState:
    """One of the job's pods as the kubelet reports it (for `describe`; the phase comes from status)."""

    name: str
    phase: str
    ready: bool
    restarts: int
    waiting: Optional[str] = None  # why it does not run: "ImagePullBackOff: ...", "Unschedulable: ..."
    last_exit: Optional[str] = None  # the container's last termination: "exit code 1 (Error)"

    @classmethod
    def of(cls, pod: dict[str, Any]) -> "PodState":
        status = pod.get("status") or {}
        containers = status.get("containerStatuses") or []
        container = containers[0] if containers else {}
        state = container.get("state") or {}
        waiting = state.get("waiting")
        reason = f"{waiting.get('reason', 'Waiting')}: {waiting.get('message', '')}".rstrip(": ") if waiting else None
        unscheduled = next((c for c in status.get("conditions") or []
                            if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)
        if unscheduled and not reason:
            reason = f"{unscheduled.get('reason', 'Unschedulable')}: {unscheduled.get('message', '')}".rstrip(": ")
        last = (container.get("lastState") or {}).get("terminated") or state.get("terminated")
        exit_text = f"exit code {last.get('exitCode')} ({last.get('reason', 'Terminated')})" if last else None
        return cls(name=pod["metadata"]["name"], phase=status.get("phase", "Pending"),
                   ready=bool(container.get("ready")), restarts=int(container.get("restartCount", 0)),
                   waiting=reason, last_exit=exit_text)


def resized(job: FineTuneJob, nodes: int) -> FineTuneJob:
    """The job at another node count, checked by the rules the API server applies to that
    change (only an elastic job may change, within minNodes..maxNodes); InvalidJob if refused."""
    document = job.wire()
    document["spec"]["resources"]["nodes"] = nodes
    return parse_job(document, old_document=job.wire())
