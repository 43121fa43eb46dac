"""Training (and Suspended): the workers at spec.resources.nodes, rank 0's progress mirrored,
resizes of elastic jobs recorded, the stall watchdog, and the restart budget that fails the job."""

from __future__ import annotations

from typing import Optional

from ..api.models import FineTuneJob, ProgressStatus
from ..contract.failure import OUT_OF_MEMORY_HINT
from ..contract.plan import label
from ..contract.progress import Progress
from .conditions import ConditionType, find, timestamp
from .failures import report_of
from .observed import Observed
from .phases import Phase
from .starting import not_all_running
from .state import Action, Decision, Event, Next, first_termination
from .watchdog import stall
from .workers import resize, waiting

MAX_RESIZES_KEPT = 20


def restart_budget(job: FineTuneJob, state: Next, observed: Observed) -> Optional[Decision]:
    """Failed when evictions, out-of-memory errors or restarts used up their budget; else None."""
    workers, policy = state.status.workers, job.spec.run_policy
    if workers.disruptions > policy.max_disruptions:
        return state.fail("TooManyDisruptions", f"{workers.disruptions} worker evictions or preemptions exceed "
                                                f"maxDisruptions {policy.max_disruptions}")
    last = first_termination(observed, lambda t: t.exit_code != 0)
    if workers.out_of_memory >= 2:
        oom = first_termination(observed, lambda t: report_of(t).reason == "OutOfMemory") or last
        return state.fail_with("OutOfMemory", f"a worker ran out of memory twice; {OUT_OF_MEMORY_HINT}", *oom)
    if workers.restarts > policy.backoff_limit:
        summary = f"{workers.restarts} worker restarts exceed backoffLimit {policy.backoff_limit}"
        return state.fail_with("BackoffLimitExceeded", summary, *last) if last else \
            state.fail("BackoffLimitExceeded", summary)
    return None


def running(job: FineTuneJob, state: Next, observed: Observed) -> Decision:
    if job.spec.run_policy.suspend:
        state.condition(ConditionType.SUSPENDED, True, "Suspended",
                        "workers scaled to zero; clearing suspend resumes")
        state.condition(ConditionType.RUNNING, False, "Suspended")
        state.actions += [Action("ensure_training_objects"), Action("scale_workers", 0)]
        return state.finish(Phase.SUSPENDED)
    return _training(job, state, observed)


def _training(job: FineTuneJob, state: Next, observed: Observed) -> Decision:
    nodes = job.spec.desired_workers()
    state.actions += [Action("ensure_training_objects"), Action("scale_workers", nodes)]
    if state.old_desired and state.old_desired != nodes:
        _resized(job, state, state.old_desired, nodes)
    if not state.holds(ConditionType.CREATED):
        state.condition(ConditionType.CREATED, True, "ChildrenCreated",
                        "worker StatefulSet, Service, ConfigMap and volume")
    state.clear(ConditionType.SUSPENDED, "Resumed")
    restarting = [pod.name for pod in observed.pods
                  if not pod.running and (pod.waiting_reason == "CrashLoopBackOff" or pod.terminated)]
    if restarting:
        state.condition(ConditionType.RESTARTING, True, "WorkerRestarting", f"restarting: {', '.join(restarting)}")
    elif state.holds(ConditionType.RESTARTING):
        state.condition(ConditionType.RESTARTING, False, "WorkersRunning")
    ready = state.status.workers.ready
    elastic = job.spec.resources.elastic
    if ready >= nodes:
        state.condition(ConditionType.RUNNING, True, "WorkersRunning", f"{ready}/{nodes} workers running")
        return _watch(job, state, observed)
    if elastic and ready >= elastic.min_nodes:
        why = waiting(observed.pods, None)
        state.condition(ConditionType.RUNNING, True, "ElasticPartial",
                        f"{ready}/{nodes} workers running; training goes on with {ready} (elastic.minNodes "
                        f"{elastic.min_nodes}) until the others join"
                        + (f"; {why.reason}: {why.message}" if why else ""))
        return _watch(job, state, observed)
    return not_all_running(job, state, observed, bool(restarting))


def _resized(job: FineTuneJob, state: Next, old: int, new: int) -> None:
    """A new node count for a running elastic job: recorded, with an Event, once."""
    progress = state.status.progress
    record, message = resize(job.spec, old, new, progress.last_checkpoint if progress else None,
                             timestamp(state.now))
    state.status.workers.resizes = (state.status.workers.resizes + [record])[-MAX_RESIZES_KEPT:]
    state.events.append(Event("Normal", "Resized", message))


def _watch(job: FineTuneJob, state: Next, observed: Observed) -> Decision:
    """Training with every worker running: the stall watchdog."""
    workers, progress = state.status.workers, state.status.progress
    running_since = find(state.status.conditions, ConditionType.RUNNING).last_transition_time
    resized_at = workers.resizes[-1].time if workers.resizes else running_since
    watching_since = max(running_since, workers.restarted_at or running_since, resized_at)
    if state.holds(ConditionType.STALLED) and progress and progress.last_step_time and \
            progress.last_step_time > watching_since:
        state.condition(ConditionType.STALLED, False, "Progressing", f"step {progress.step} reached after the restart")
    stalled = stall(job.spec.run_policy, progress, watching_since, observed.now)
    if stalled is None:
        return state.finish(Phase.TRAINING)
    workers.restarts += 1
    limit = job.spec.run_policy.backoff_limit
    if workers.restarts > limit:
        return state.fail("Stalled", f"{stalled}; {workers.restarts} restarts exceed backoffLimit {limit}")
    workers.restarted_at = timestamp(observed.now)
    state.condition(ConditionType.STALLED, True, "NoProgress", stalled)
    state.events.append(Event("Warning", "Stalled", f"{stalled}; restarting the workers from the newest complete "
                                                    f"checkpoint ({workers.restarts} of backoffLimit {limit})"))
    state.actions.append(Action("restart_workers"))
    return state.finish(Phase.TRAINING)


def final_progress(observed: Observed) -> Optional[Progress]:
    """Rank 0's last numbers, which it leaves as its termination message when training succeeded."""
    finished = first_termination(observed, lambda t: t.exit_code == 0 and bool(t.message))
    if finished is None:
        return None
    try:
        return Progress.decode(finished[1].message)
    except ValueError:
        return None


def mirror_progress(state: Next, reported: Optional[Progress]) -> None:
    """Rank 0's progress into status, with an Event per new checkpoint."""
    old = state.status.progress
    if reported is None:
        return
    progress = ProgressStatus.of(reported)
    if progress.total_steps:
        progress.display = f"{progress.step}/{progress.total_steps} ({100 * progress.step // progress.total_steps}%)"
    checkpoint = reported.checkpoint
    if checkpoint and checkpoint != (old.last_checkpoint if old else None):
        state.events.append(Event("Normal", "Checkpoint", f"saved {checkpoint}"))
    progress.last_checkpoint = checkpoint
    # A step that moves is what the stall watchdog looks for; "starting" is before any step.
    moved = reported.phase != "starting" and (old is None or old.step != progress.step or not old.last_step_time)
    progress.last_step_time = timestamp(state.now) if moved else (old.last_step_time if old else None)
    state.status.progress = progress


def record_strategy(state: Next, reported: Optional[Progress]) -> None:
    """Record the strategy rank 0 trains with; an Event when it is new or changed (a resize may change it)."""
    chosen = reported.distributed if reported else None
    if chosen is None or chosen == state.status.distributed:
        return
    old = state.status.distributed
    if old is None or (old.strategy, old.offload) != (chosen.strategy, chosen.offload):
        state.events.append(Event("Normal", "StrategyChosen", f"training with {label(chosen.strategy, chosen.offload)}:"
                                                             f" {chosen.reason}"))
    state.status.distributed = chosen
