"""The stall watchdog: training that makes no step for too long is restarted.

The clock starts when all workers run (or when the watchdog last restarted them). Until the
first step of that run, startupDeadlineSeconds applies (loading the model and data); after it,
progressDeadlineSeconds from the last change of the step, doubled while rank 0 says it saves a
checkpoint or evaluates. Rank 0 not answering at all is the same as a step that does not move.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from ..api.models import ProgressStatus, RunPolicySpec
from ..contract.progress import BUSY_PHASES
from .conditions import seconds_since


def stall(policy: RunPolicySpec, progress: Optional[ProgressStatus], watching_since: str,
          now: datetime) -> Optional[str]:
    """Why training counts as stalled now, or None."""
    if not policy.progress_deadline_seconds:
        return None
    stepped = progress is not None and progress.last_step_time and progress.last_step_time >= watching_since
    if stepped:
        busy = progress.phase in BUSY_PHASES
        limit = policy.progress_deadline_seconds * (2 if busy else 1)
        since, what = progress.last_step_time, f"step {progress.step} did not advance"
        what += f" (rank 0: {progress.phase})" if busy else ""
    else:
        limit, since = policy.startup_deadline_seconds, watching_since
        what = "no training step since the workers started"
    waited = seconds_since(since, now)
    if not limit or waited < limit:
        return None
    return f"{what} for {waited:.0f} s (limit {limit} s)"
