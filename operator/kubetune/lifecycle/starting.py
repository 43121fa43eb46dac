"""Pending and Initializing: the workers do not all run yet, and why.

A reason no wait can fix fails the job at once; the others wait, up to
schedulingTimeoutSeconds. An elastic job that trained before waits below minNodes instead.
"""

from __future__ import annotations

from typing import Optional

from ..api.models import FineTuneJob
from .conditions import ConditionType, find, seconds_since
from .observed import Observed
from .phases import Phase
from .state import Decision, Next
from .workers import Waiting, waiting


def not_all_running(job: FineTuneJob, state: Next, observed: Observed, restarting: bool) -> Decision:
    running, nodes = state.status.workers.ready, job.spec.desired_workers()
    why = waiting(observed.pods, observed.claim_pending)
    if why and why.at_once:
        return state.fail(why.failure, why.message)
    elastic = job.spec.resources.elastic
    if elastic and state.status.progress:
        # It trained before and lost workers: it waits for minNodes, it does not fail.
        state.warn_on_change(ConditionType.RUNNING, False, "BelowMinNodes",
                             f"{running}/{nodes} workers running, below elastic.minNodes {elastic.min_nodes}; "
                             "training waits for more" + (f": {why.reason}: {why.message}" if why else ""))
        return _waiting_phase(state, running)
    if why:
        state.warn_on_change(ConditionType.RUNNING, False, why.reason, why.message)
    elif find(state.status.conditions, ConditionType.RUNNING):  # no longer all running, or a reason that went away
        state.condition(ConditionType.RUNNING, False, "WorkersNotRunning", f"{running}/{nodes} workers running")
    timeout = job.spec.run_policy.scheduling_timeout_seconds
    if timeout and not restarting and seconds_since(_not_running_since(state), observed.now) >= timeout:
        return _unschedulable(state, why, f"{running}/{nodes} workers started within "
                                          f"schedulingTimeoutSeconds ({timeout})")
    return _waiting_phase(state, running)


def _waiting_phase(state: Next, running: int) -> Decision:
    return state.finish(Phase.INITIALIZING if running else Phase.PENDING)


def _not_running_since(state: Next) -> str:
    running = find(state.status.conditions, ConditionType.RUNNING)
    return running.last_transition_time if running and running.status == "False" else state.status.start_time


def _unschedulable(state: Next, why: Optional[Waiting], summary: str) -> Decision:
    if why is None:
        return state.fail("Unschedulable", summary)
    return state.fail(why.failure, f"{summary}: {why.reason}: {why.message}")
