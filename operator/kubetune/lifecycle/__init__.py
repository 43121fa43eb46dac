"""Pure lifecycle: spec + status + observed children -> phase, conditions, actions, events."""

from .decide import Action, Decision, Event, decide, reads_claim, reads_progress
from .observed import (
    EvaluationRun,
    Observed,
    Termination,
    WorkerPod,
    WorkerSet,
    claim_pending,
    evaluation_run,
    worker_pod,
    worker_set,
)

__all__ = ["Action", "Decision", "Event", "decide", "reads_claim", "reads_progress", "EvaluationRun", "Observed",
           "Termination", "WorkerPod", "WorkerSet", "claim_pending", "evaluation_run", "worker_pod", "worker_set"]
