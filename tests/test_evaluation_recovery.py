"""The real operator against the emulated API server: an evaluation or publish Job that completed
with its pod gone (its result was in that pod's termination message) runs again, and says why."""

from datetime import datetime, timedelta, timezone

import pytest

from kubetune.lifecycle.observed import RESULT_GRACE_SECONDS
from operator_harness import eventually
from test_operator import (  # noqa: F401 (harness is a fixture)
    NS,
    batch_job_of,
    condition,
    container_status,
    create_job,
    events_of,
    get_job,
    harness,
    job_document,
    replicas,
    set_evaluation,
    set_worker_pod,
    wait_phase,
)

pytestmark = pytest.mark.timeout(120)

SUMMARY = '{"metrics": {"loss": {"tuned": 1.2, "base": 2.4, "deltaInterval": [-1.3, -1.1], "rows": 32}}}'
PUBLISHED = '{"published": [{"target": "s3://models/demo", "revision": "e7", "url": "s3://models/demo", "files": 9}]}'
GATED = {"metrics": ["loss"], "compareBase": True, "gates": [{"metric": "loss", "maxDelta": 0.0, "confident": True}]}


def trained(harness, **spec):
    """A job whose worker finished training: it is Evaluating."""
    harness.start_operator()
    create_job(harness, job_document(**spec))
    eventually(lambda: replicas(harness) == 1, what="the worker")
    set_worker_pod(harness, 0, container_status("running", restarts=1, last=(0, "")))
    wait_phase(harness, "Evaluating")


def complete_without_a_pod(harness, role):
    """The Job controller's Complete, long enough ago, with the pod already gone: the uid of that Job."""
    batch_job = eventually(lambda: batch_job_of(harness, role=role), what=f"the {role} Job")
    completed = (datetime.now(timezone.utc) - timedelta(seconds=RESULT_GRACE_SECONDS + 30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    harness.cluster.batch.patch_namespaced_job_status(batch_job["metadata"]["name"], NS, {"status": {
        "completionTime": completed, "succeeded": 1,
        "conditions": [{"type": "Complete", "status": "True", "reason": "Completed", "lastTransitionTime": completed}]}})
    return batch_job["metadata"]["uid"]


def made_anew(harness, role, old_uid):
    """The Job of that role after the operator replaced the one whose result was lost."""
    return eventually(lambda: (batch_job_of(harness, role=role) or {"metadata": {"uid": old_uid}})["metadata"][
        "uid"] != old_uid, timeout=60, what=f"a new {role} Job")


def test_an_evaluation_completed_without_a_readable_pod_is_evaluated_again(harness):
    trained(harness)
    lost = complete_without_a_pod(harness, "evaluator")
    made_anew(harness, "evaluator", lost)
    evaluated = condition(harness, "Evaluated")
    assert (evaluated["status"], evaluated["reason"]) == ("False", "EvaluationResultLost")
    assert "evaluating again with a new Job" in evaluated["message"]
    assert ("Warning", "EvaluationResultLost", evaluated["message"]) in events_of(harness)
    assert len(harness.objects("Job", "demo")) == 1 and replicas(harness) == 0  # no training again
    set_evaluation(harness, "Complete", SUMMARY)
    wait_phase(harness, "Succeeded")
    assert condition(harness, "Evaluated")["reason"] == "EvaluationSucceeded"
    assert get_job(harness)["status"]["evaluation"]["metrics"]["loss"]["tuned"] == 1.2
    assert [reason for _, reason, _ in events_of(harness)].count("EvaluationResultLost") == 1


def test_a_publish_completed_without_a_readable_pod_uploads_again(harness):
    trained(harness, evaluation=GATED, output={"publish": [{"target": "s3://models/demo"}]})
    set_evaluation(harness, "Complete", SUMMARY)
    wait_phase(harness, "Publishing")
    lost = complete_without_a_pod(harness, "publisher")
    made_anew(harness, "publisher", lost)
    published = condition(harness, "Published")
    assert (published["status"], published["reason"]) == ("False", "PublishResultLost")
    assert ("Warning", "PublishResultLost", published["message"]) in events_of(harness)
    assert phase_of(harness) == "Publishing"
    set_evaluation(harness, "Complete", PUBLISHED, role="publisher")
    wait_phase(harness, "Succeeded")
    assert get_job(harness)["status"]["output"]["published"][0]["revision"] == "e7"
    assert condition(harness, "Published")["status"] == "True"


def phase_of(harness):
    return get_job(harness)["status"]["phase"]
