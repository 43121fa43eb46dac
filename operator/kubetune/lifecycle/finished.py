"""Succeeded and Failed: the phase stays, the workers stay at zero, and ttlSecondsAfterFinished
deletes the job."""

from __future__ import annotations

from ..api.models import FineTuneJob
from .conditions import seconds_since
from .observed import Observed
from .state import Action, Decision, Next


def finished(job: FineTuneJob, state: Next, observed: Observed) -> Decision:
    if observed.workers and observed.workers.replicas > 0:
        state.actions.append(Action("scale_workers", 0))
    ttl = job.spec.run_policy.ttl_seconds_after_finished
    finished_at = state.status.completion_time
    if ttl is not None and finished_at and seconds_since(finished_at, observed.now) >= ttl:
        state.actions.append(Action("delete_job"))
    return state.finish(state.status.phase)
