"""Trained, then Evaluating: the workers stay at zero, the evaluation Job measures the model, and
the verdict of spec.evaluation.gates decides between publishing, Succeeded and Failed (Regressed).

An evaluation Job that completed with its pod gone (the result is in that pod's termination
message) is deleted after RESULT_GRACE_SECONDS, and the next reconcile creates it anew under the
same name; the evaluator then answers from the report it left in the output volume.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..api.models import EvaluationStatus, FineTuneJob
from ..contract.evaluation import EvaluationSummary, MetricValue, verdict
from .conditions import ConditionType, find
from .observed import EvaluationRun, Observed
from .phases import Phase
from .publishing import publishing
from .state import Action, Decision, Event, Next
from .workers import waiting

MAX_REPORTS_KEPT = 10
# Failures after training that an edit of spec.evaluation can undo by evaluating again.
EVALUATION_FAILURES = ("Regressed", "EvaluationFailed", "PublishFailed")
RESULT_LOST = ("the evaluation Job completed but its pod, whose termination message holds the result, is gone "
               "(garbage-collected, its node lost, or deleted while the operator was down): evaluating again "
               "with a new Job")


def after_training(job: FineTuneJob, state: Next, observed: Observed) -> Decision:
    if not state.holds(ConditionType.TRAINED):
        state.condition(ConditionType.TRAINED, True, "TrainingSucceeded", "the model is saved in the output volume")
        state.condition(ConditionType.RUNNING, False, "TrainingSucceeded")
        state.clear(ConditionType.RESTARTING, "TrainingSucceeded")
        state.events.append(Event("Normal", "Trained", "training finished; workers scaled to zero"))
    # Workers restart after success (a StatefulSet always does); they must not stay up.
    state.actions.append(Action("scale_workers", 0))
    state.status.workers.desired = 0
    skipped = job.spec.evaluation_skipped_because()
    if skipped:
        return publishing(job, state, observed) or _succeeded(state, "TrainingSucceeded", f"trained; {skipped}")
    evaluation = observed.evaluation
    if evaluation is not None and evaluation.result_lost(state.now):
        return _evaluate_again(state)
    if evaluation is None or not evaluation.settled:
        return _evaluating(state, evaluation)
    if evaluation.failed:
        return _evaluation_failed(job, state, evaluation)
    if not state.holds(ConditionType.EVALUATED):
        _evaluated(job, state, EvaluationSummary.read(evaluation.message))
    evaluated = state.status.evaluation
    if evaluated.verdict == "Regressed" and job.spec.evaluation.on_regression == "fail":
        judged = find(state.status.conditions, ConditionType.GATES_PASSED).message
        return state.fail("Regressed", f"evaluation gates failed: {judged}")
    return publishing(job, state, observed) or _succeeded(state, "EvaluationSucceeded",
                                                          _values(evaluated.metrics) or "trained and evaluated")


def _succeeded(state: Next, reason: str, message: str) -> Decision:
    state.condition(ConditionType.SUCCEEDED, True, reason, message)
    return state.finish(Phase.SUCCEEDED)


def _evaluating(state: Next, evaluation: EvaluationRun | None) -> Decision:
    state.actions.append(Action("ensure_evaluation_job"))
    why = waiting((evaluation.pod,), None) if evaluation and evaluation.pod else None
    if why and why.at_once:
        return state.fail(why.failure, why.message)
    if why:
        state.warn_on_change(ConditionType.EVALUATED, False, why.reason, why.message)
    return state.finish(Phase.EVALUATING)


def _evaluate_again(state: Next) -> Decision:
    """The Job's result cannot be read any more: it goes, and the next reconcile makes it anew."""
    state.actions.append(Action("delete_evaluation_job"))
    state.warn_on_change(ConditionType.EVALUATED, False, "EvaluationResultLost", RESULT_LOST)
    return state.finish(Phase.EVALUATING)


def _evaluation_failed(job: FineTuneJob, state: Next, evaluation: EvaluationRun) -> Decision:
    previous = state.status.evaluation.previous_reports if state.status.evaluation else []
    state.status.evaluation = EvaluationStatus(digest=job.spec.evaluation.digest(), previous_reports=previous)
    return state.fail_batch_job("EvaluationFailed", evaluation, "evaluation")


def evaluates_again(job: FineTuneJob, state: Next) -> bool:
    """A trained job whose spec.evaluation was edited since its evaluation: it is evaluated again
    with a new evaluation Job, and not retrained; the earlier report is kept."""
    last = state.status.evaluation
    failure = state.status.failure
    if not state.holds(ConditionType.TRAINED) or job.spec.evaluation_skipped_because() or last is None \
            or not last.digest:
        return False
    if failure is not None and failure.reason not in EVALUATION_FAILURES:
        return False
    digest = job.spec.evaluation.digest()
    if last.digest == digest:
        return False
    kept = last.previous_reports + ([_kept_report(last.report, last.digest)] if last.report else [])
    state.status.evaluation = EvaluationStatus(previous_reports=kept[-MAX_REPORTS_KEPT:])
    message = f"spec.evaluation changed ({last.digest} -> {digest}): evaluating the trained model again"
    for kind in (ConditionType.EVALUATED, ConditionType.GATES_PASSED, ConditionType.SUCCEEDED, ConditionType.FAILED):
        if find(state.status.conditions, kind):
            state.condition(kind, False, "Reevaluating", message)
    state.status.failure, state.status.completion_time = None, None
    state.events.append(Event("Normal", "Reevaluating", message))
    return True


def _kept_report(report: str, digest: str) -> str:
    """Where the evaluator moves a report when a new evaluation starts: beside the new one."""
    path = PurePosixPath(report)
    return str(path.parent / digest / path.name)


def _evaluated(job: FineTuneJob, state: Next, summary: EvaluationSummary) -> None:
    """The evaluation's values and the verdict on them, recorded once."""
    outcome, gates, judged = verdict(job.spec.evaluation.gates, summary.metrics)
    previous = state.status.evaluation.previous_reports if state.status.evaluation else []
    state.status.evaluation = EvaluationStatus(metrics=summary.metrics, report=summary.report, verdict=outcome,
                                               gates=gates, digest=job.spec.evaluation.digest(),
                                               previous_reports=previous)
    text = _values(summary.metrics) or "evaluation finished"
    state.condition(ConditionType.EVALUATED, True, "EvaluationSucceeded", text)
    state.events.append(Event("Normal", "Evaluated", text))
    state.condition(ConditionType.GATES_PASSED, outcome != "Regressed", outcome, judged)
    if outcome != "NoGates":
        state.events.append(Event("Normal" if outcome == "Passed" else "Warning", outcome, judged))


def _values(metrics: dict[str, MetricValue]) -> str:
    return ", ".join(f"{name}={value.tuned:.4g}" for name, value in metrics.items())
