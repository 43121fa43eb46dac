"""The worker pods as the lifecycle counts them: restarts that survive recreated pods,
evictions counted apart, resizes of elastic jobs, and why pods that should run do not."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ..api.batch import global_batch_at, kept_global_batch
from ..api.models import FineTuneJobSpec, ResizeRecord, SeenPod, WorkersStatus
from .failures import is_out_of_memory, report_of
from .observed import Observed, WorkerPod

IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")


@dataclass(frozen=True)
class Restart:
    """A restart counted in this reconcile, for its Event."""

    pod: WorkerPod
    count: int
    out_of_memory: bool


def count_workers(old: Optional[WorkersStatus], observed: Observed,
                  desired: int) -> tuple[WorkersStatus, list[Restart]]:
    """Workers status with every restart seen since the last count added, by pod uid."""
    before = old or WorkersStatus()
    seen, restarts, counted = {}, [], WorkersStatus(**before.model_dump(exclude={"seen", "desired", "ready"}))
    for pod in observed.pods:
        last = before.seen.get(pod.uid, SeenPod())
        new = max(pod.restarts - last.restarts, 0)
        if new:
            oom = is_out_of_memory(pod.last_terminated or pod.terminated)
            restarts.append(Restart(pod, new, oom))
            counted.restarts += new
            counted.out_of_memory += new if oom else 0
        if pod.disrupted and not last.disrupted:
            counted.disruptions += 1
        seen[pod.uid] = SeenPod(restarts=max(pod.restarts, last.restarts), disrupted=pod.disrupted or last.disrupted)
    counted.seen = seen
    counted.desired = desired
    counted.ready = sum(pod.running for pod in observed.pods)
    return counted, restarts


def restart_message(restart: Restart, status: WorkersStatus, backoff_limit: int) -> str:
    termination = restart.pod.last_terminated or restart.pod.terminated
    why = ""
    if termination is not None and termination.exit_code == 0:
        why = " after it finished (exit code 0)"
    elif termination is not None:
        report = report_of(termination)
        why = f" after {report.reason} (exit code {termination.exit_code}): {report.message.splitlines()[0][:300]}"
    return f"{restart.pod.name} restarted{why}; {status.restarts} of backoffLimit {backoff_limit} restarts used"


def resize(spec: FineTuneJobSpec, old: int, new: int, checkpoint: Optional[str],
           now: str) -> tuple[ResizeRecord, str]:
    """The record of an elastic job's resize, and its Event's message. The checkpoint is the
    newest one rank 0 reported: the workers go on from the newest complete one they find."""
    record = ResizeRecord(from_nodes=old, to_nodes=new, time=now, checkpoint=checkpoint,
                          global_batch_size=global_batch_at(spec, new))
    kept = kept_global_batch(spec)
    batch = (f"global batch kept at {kept}" if kept else
             f"global batch now {record.global_batch_size} (was {global_batch_at(spec, old)})")
    return record, (f"resized from {old} to {new} nodes; training goes on from the newest complete checkpoint "
                    f"(last reported: {checkpoint or 'none'}); {batch}")


@dataclass(frozen=True)
class Waiting:
    """Why pods that should run do not, and what that becomes when it lasts."""

    reason: str  # the condition's reason: the kubelet's waiting reason, Unschedulable or ClaimPending
    message: str
    failure: str  # the failure class (contract.failure)
    at_once: bool = False  # no wait can fix it


# A waiting message names at most this many pods per reason, and is cut at this length.
MAX_PODS_NAMED = 4
MAX_WAITING_MESSAGE = 1024


def _waiting_of(pod: WorkerPod) -> Optional[Waiting]:
    """Why one pod does not run; its message is the kubelet's or the scheduler's, without the pod."""
    message = pod.waiting_message or pod.scheduling_message
    if pod.waiting_reason in IMAGE_PULL_REASONS:
        return Waiting(pod.waiting_reason, message, "ImagePull", at_once=pod.waiting_reason == "InvalidImageName")
    if pod.waiting_reason == "CreateContainerConfigError":
        return Waiting(pod.waiting_reason, message, "ContainerConfig", at_once=True)
    if pod.scheduled is False:
        return Waiting("Unschedulable", message, "Unschedulable")
    return None


def waiting(pods: tuple[WorkerPod, ...], claim_pending: Optional[str]) -> Optional[Waiting]:
    """The most telling reason among pods that do not run (one no wait can fix comes first), its
    message listing every distinct reason with its pods."""
    found = [(pod.name, why) for pod in pods if not pod.running and (why := _waiting_of(pod)) is not None]
    # A running worker has mounted the claim: it is bound, whatever a lagging read of it says.
    if claim_pending and not any(pod.running for pod in pods):
        found.append(("", Waiting("ClaimPending", claim_pending, "Unschedulable")))
    if not found:
        return None
    by_reason: dict[str, list[tuple[str, Waiting]]] = {}
    for name, why in sorted(found, key=lambda item: not item[1].at_once):  # stable: otherwise in pod order
        by_reason.setdefault(why.reason, []).append((name, why))
    first, *others = by_reason.values()
    share = MAX_WAITING_MESSAGE // len(by_reason)  # each reason keeps room for the others
    message = "; ".join([_pods_waiting(first, share)] + [f"also {group[0][1].reason}: {_pods_waiting(group, share)}"
                                                         for group in others])
    return replace(first[0][1], message=_clipped(message, MAX_WAITING_MESSAGE))


def _pods_waiting(group: list[tuple[str, Waiting]], length: int) -> str:
    """The pods waiting for one reason, and what the first of them is told."""
    names = [name for name, _ in group if name]
    named = ", ".join(names[:MAX_PODS_NAMED]) + (f" and {len(names) - MAX_PODS_NAMED} more"
                                                  if len(names) > MAX_PODS_NAMED else "")
    return _clipped(": ".join(part for part in (named, group[0][1].message) if part), length)


def _clipped(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length - 3] + "..."
