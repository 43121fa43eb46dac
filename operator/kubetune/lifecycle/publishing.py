"""Publishing: the publish Job uploads the model to each target of spec.output.publish that applies
to the verdict, and what it uploaded lands in status.output.published.

A publish Job that completed with its pod gone is deleted after RESULT_GRACE_SECONDS and made
anew, and uploads again (uploads are idempotent).
"""

from __future__ import annotations

from typing import Optional

from ..api.models import FineTuneJob
from ..contract.publish import PublishSummary
from .conditions import ConditionType
from .observed import EvaluationRun, Observed
from .phases import Phase
from .state import Action, Decision, Event, Next

RESULT_LOST = ("the publish Job completed but its pod, whose termination message says what was uploaded, is gone "
               "(garbage-collected, its node lost, or deleted while the operator was down): uploading again with "
               "a new Job")


def publishing(job: FineTuneJob, state: Next, observed: Observed) -> Optional[Decision]:
    """The publish Job, when a target of spec.output.publish applies to the verdict; None once
    it is done (or there is nothing to publish)."""
    evaluated = state.status.evaluation
    verdict_now = evaluated.verdict if evaluated else None
    targets = [t for t in job.spec.output.publish if t.applies(verdict_now)]
    if not targets or state.status.output.published:
        return None
    run = observed.publish
    if run is not None and run.result_lost(state.now):
        state.actions.append(Action("delete_publish_job"))
        state.warn_on_change(ConditionType.PUBLISHED, False, "PublishResultLost", RESULT_LOST)
        return state.finish(Phase.PUBLISHING)
    if run is None or not run.settled:
        state.actions.append(Action("ensure_publish_job"))
        return state.finish(Phase.PUBLISHING)
    if run.failed:
        return state.fail_batch_job("PublishFailed", run, "publish")
    _published(state, run)
    return None


def _published(state: Next, run: EvaluationRun) -> None:
    published = state.status.output.published = PublishSummary.read(run.message).published
    state.condition(ConditionType.PUBLISHED, True, "Uploaded", ", ".join(item.url for item in published or []))
    for item in published or []:
        state.events.append(Event("Normal", "Published", f"{item.target}: {item.files} files, "
                                                         f"{item.url} ({item.revision or 'no revision'})"))
