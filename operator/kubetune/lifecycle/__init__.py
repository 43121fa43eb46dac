"""Pure lifecycle: spec + status + observed children -> phase, conditions, actions, events."""

from .conditions import ConditionType
from .decide import decide, reads_claim, reads_progress
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
from .phases import Phase
from .state import Action, Decision, Event

__all__ = ["Action", "ConditionType", "Decision", "Event", "Phase", "decide", "reads_claim", "reads_progress",
           "EvaluationRun", "Observed", "Termination", "WorkerPod", "WorkerSet", "claim_pending", "evaluation_run",
           "worker_pod", "worker_set"]
