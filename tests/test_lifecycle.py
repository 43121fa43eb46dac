"""The lifecycle as a table: spec + status + observed children -> phase, conditions, actions."""

import json
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest

from conftest import with_spec
from kubetune.api.crd import generate_crd
from kubetune.api.models import FineTuneJobStatus
from kubetune.api.validation import parse_job
from kubetune.contract.progress import Progress
from kubetune.lifecycle import Action, Observed, Termination, WorkerPod, WorkerSet, EvaluationRun
from kubetune.lifecycle import decide as decide_typed
from kubetune.lifecycle import evaluation_run, worker_pod

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class Result:
    """A decision with its status as stored (camelCase JSON), as the operator writes it."""

    def __init__(self, decision):
        self.phase, self.actions, self.events = decision.phase, decision.actions, decision.events
        self.status = decision.wire_status()


def decide(job, problems, status, observed, generation=None):
    return Result(decide_typed(job, problems, FineTuneJobStatus.model_validate(status), observed, generation))


def ago(seconds):
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def running(name="demo-worker-0", restarts=0):
    return WorkerPod(name, running=True, ready=True, restarts=restarts)


def exited(code, message="", name="demo-worker-0", restarts=0, still=True):
    termination = Termination(code, message)
    if still:
        return WorkerPod(name, terminated=termination, restarts=restarts)
    return WorkerPod(name, running=True, last_terminated=termination, restarts=restarts)


def crashing(restarts, message="boom", name="demo-worker-0"):
    return WorkerPod(name, restarts=restarts, waiting_reason="CrashLoopBackOff",
                     last_terminated=Termination(1, message))


def condition(kind, status, reason):
    return {"type": kind, "status": status, "reason": reason}


EVAL_SUMMARY = json.dumps({"metrics": {"loss": {"tuned": 1.5, "base": 2.0}, "exact_match": {"tuned": 0.25}},
                           "report": "/output/evaluation/report.json"})
TWO_NODES = {"resources": {"nodes": 2}}

TABLE = [
    # (case, spec fields, status before, observed, phase, conditions that must hold, actions that must be there)
    ("new job creates its children", {}, {}, Observed(NOW),
     "Pending", [condition("Created", "True", "ChildrenCreated")],
     [Action("ensure_training_objects"), Action("scale_workers", 1)]),
    ("waits for its upstream job", {"model": {"source": "job://sft"}}, {}, Observed(NOW, upstream={"sft": "Training"}),
     "Pending", [condition("Created", "False", "WaitingForUpstream")], []),
    ("upstream that does not exist yet", {"model": {"source": "job://sft"}}, {}, Observed(NOW, upstream={"sft": None}),
     "Pending", [condition("Created", "False", "WaitingForUpstream")], []),
    ("fails when its upstream failed", {"model": {"source": "job://sft"}}, {},
     Observed(NOW, upstream={"sft": "Failed"}), "Failed", [condition("Failed", "True", "UpstreamFailed")], []),
    ("starts once upstream succeeded", {"model": {"source": "job://sft"}}, {},
     Observed(NOW, upstream={"sft": "Succeeded"}), "Pending", [condition("Created", "True", "ChildrenCreated")],
     [Action("ensure_training_objects")]),
    ("some workers running", TWO_NODES, {"phase": "Pending"},
     Observed(NOW, WorkerSet(2), (running(), WorkerPod("demo-worker-1"))),
     "Initializing", [], [Action("scale_workers", 2)]),
    ("all workers running", TWO_NODES, {"phase": "Initializing"},
     Observed(NOW, WorkerSet(2, 2), (running(), running("demo-worker-1"))),
     "Training", [condition("Running", "True", "WorkersRunning")], []),
    ("a worker crash-loops within backoff", TWO_NODES, {"phase": "Training"},
     Observed(NOW, WorkerSet(2), (running(), crashing(2, name="demo-worker-1"))),
     "Initializing", [condition("Restarting", "True", "WorkerRestarting")], [Action("scale_workers", 2)]),
    ("restarts beyond backoffLimit fail", {"runPolicy": {"backoffLimit": 3}}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (crashing(4, "CUDA error: out of memory"),)),
     "Failed", [condition("Failed", "True", "BackoffLimitExceeded")], [Action("scale_workers", 0)]),
    ("permanent exit code fails at once", {}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (exited(3, "dataset /d/train.jsonl: missing column(s) chosen"),)),
     "Failed", [condition("Failed", "True", "PermanentError")], [Action("scale_workers", 0)]),
    ("permanent exit code seen in lastState", {}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (exited(3, "model not found", still=False),)),
     "Failed", [condition("Failed", "True", "PermanentError")], [Action("scale_workers", 0)]),
    ("deadline exceeded", {"runPolicy": {"activeDeadlineSeconds": 3600}}, {"phase": "Training", "startTime": ago(3601)},
     Observed(NOW, WorkerSet(1), (running(),)),
     "Failed", [condition("Failed", "True", "DeadlineExceeded")], [Action("scale_workers", 0)]),
    ("within the deadline", {"runPolicy": {"activeDeadlineSeconds": 3600}}, {"phase": "Training", "startTime": ago(60)},
     Observed(NOW, WorkerSet(1), (running(),)), "Training", [], []),
    ("suspend scales to zero", {"runPolicy": {"suspend": True}}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (running(),)),
     "Suspended", [condition("Suspended", "True", "Suspended")], [Action("scale_workers", 0)]),
    ("clearing suspend resumes", {}, {"phase": "Suspended", "conditions": [
        {**condition("Suspended", "True", "Suspended"), "message": "", "lastTransitionTime": ago(60)}]},
     Observed(NOW, WorkerSet(0)),
     "Pending", [condition("Suspended", "False", "Resumed")], [Action("scale_workers", 1)]),
    ("worker exit 0 means trained: scale to zero, start evaluation", {}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (exited(0),)),
     "Evaluating", [condition("Trained", "True", "TrainingSucceeded"), condition("Running", "False", "TrainingSucceeded")],
     [Action("scale_workers", 0), Action("ensure_evaluation_job")]),
    ("restarts after success are not failures", {"runPolicy": {"backoffLimit": 0}}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (exited(0, still=False, restarts=5),)),
     "Evaluating", [condition("Trained", "True", "TrainingSucceeded")], [Action("scale_workers", 0)]),
    ("evaluation running", {}, {"phase": "Evaluating", "conditions": [
        {**condition("Trained", "True", "TrainingSucceeded"), "message": "", "lastTransitionTime": ago(5)}]},
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun()),
     "Evaluating", [], [Action("ensure_evaluation_job"), Action("scale_workers", 0)]),
    ("evaluation succeeded", {}, {"phase": "Evaluating", "conditions": [
        {**condition("Trained", "True", "TrainingSucceeded"), "message": "", "lastTransitionTime": ago(5)}]},
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(succeeded=True, message=EVAL_SUMMARY)),
     "Succeeded", [condition("Evaluated", "True", "EvaluationSucceeded"), condition("Succeeded", "True",
                                                                                    "EvaluationSucceeded")], []),
    ("evaluation failed", {}, {"phase": "Evaluating", "conditions": [
        {**condition("Trained", "True", "TrainingSucceeded"), "message": "", "lastTransitionTime": ago(5)}]},
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(failed=True, message="vLLM could not load the model")),
     "Failed", [condition("Failed", "True", "EvaluationFailed")], []),
    ("no evaluation: trained is succeeded", {"evaluation": {"enabled": False}}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (exited(0),)),
     "Succeeded", [condition("Succeeded", "True", "TrainingSucceeded")], [Action("scale_workers", 0)]),
    ("no evaluation data: trained is succeeded", {"dataset": {"source": "builtin://tiny"}}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (exited(0),)),
     "Succeeded", [condition("Succeeded", "True", "TrainingSucceeded")], [Action("scale_workers", 0)]),
    ("succeeded job keeps workers at zero", {}, {"phase": "Succeeded", "completionTime": ago(10)},
     Observed(NOW, WorkerSet(1)), "Succeeded", [], [Action("scale_workers", 0)]),
    ("TTL after finishing deletes the job", {"runPolicy": {"ttlSecondsAfterFinished": 60}},
     {"phase": "Failed", "completionTime": ago(61)}, Observed(NOW), "Failed", [], [Action("delete_job")]),
    ("elastic resize scales the workers", {"resources": {"nodes": 3, "elastic": {"minNodes": 1, "maxNodes": 4}}},
     {"phase": "Training"}, Observed(NOW, WorkerSet(2, 2), (running(), running("demo-worker-1"))),
     "Initializing", [], [Action("scale_workers", 3)]),
]


@pytest.mark.parametrize("case,spec,status,observed,phase,conditions,actions", TABLE, ids=[row[0] for row in TABLE])
def test_transition(case, spec, status, observed, phase, conditions, actions):
    decision = decide(parse_job(with_spec(**spec)), [], status, observed, generation=4)
    assert decision.phase == phase == decision.status["phase"]
    for expected in conditions:
        actual = next(c for c in decision.status["conditions"] if c["type"] == expected["type"])
        assert {k: actual[k] for k in expected} == expected, actual
        assert actual["observedGeneration"] == 4
    for action in actions:
        assert action in decision.actions, decision.actions


def test_every_status_the_table_writes_is_valid_under_the_crd_schema():
    schema = generate_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    validator = jsonschema.Draft4Validator(schema)
    for case, spec, status, observed, *_ in TABLE:
        written = decide(parse_job(with_spec(**spec)), [], status, observed, generation=4).status
        assert not list(validator.iter_errors(written)), (case, written)
        assert written["output"] == {"claimName": "demo-output", "path": "model"}


def test_invalid_spec_fails_with_the_field_and_creates_nothing():
    decision = decide(None, ["spec.resources.nodes: Input should be greater than or equal to 1"], {}, Observed(NOW))
    failed = next(c for c in decision.status["conditions"] if c["type"] == "Failed")
    assert decision.phase == "Failed" and failed["reason"] == "InvalidSpec"
    assert "spec.resources.nodes" in failed["message"]
    assert decision.actions == []


def test_failure_keeps_the_workers_last_words_in_condition_and_event():
    logs = "Traceback ...\nRuntimeError: NCCL timeout"
    decision = decide(parse_job(with_spec(runPolicy={"backoffLimit": 0})), [], {"phase": "Training"},
                      Observed(NOW, WorkerSet(1), (crashing(1, logs),)))
    failed = next(c for c in decision.status["conditions"] if c["type"] == "Failed")
    assert logs in failed["message"]
    assert decision.events[0].type == "Warning" and logs in decision.events[0].message


def test_evaluation_results_land_in_status_with_base_and_delta():
    status = {"phase": "Evaluating", "conditions": [
        {**condition("Trained", "True", "TrainingSucceeded"), "message": "", "lastTransitionTime": ago(5)}]}
    decision = decide(parse_job(with_spec()), [], status,
                      Observed(NOW, evaluation=EvaluationRun(succeeded=True, message=EVAL_SUMMARY)))
    assert decision.status["evaluation"] == {
        "metrics": {"loss": {"tuned": 1.5, "base": 2.0, "delta": -0.5}, "exact_match": {"tuned": 0.25}},
        "report": "/output/evaluation/report.json"}
    assert decision.status["completionTime"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e.reason for e in decision.events] == ["Succeeded", "Evaluated"]


def test_progress_is_mirrored_with_a_display_and_a_checkpoint_event():
    progress = Progress(step=50, total_steps=200, loss=1.25, tokens_per_second=900.0, eta_seconds=30.0,
                        checkpoint="checkpoint-50", phase="training")
    first = decide(parse_job(with_spec()), [], {"phase": "Training"},
                   Observed(NOW, WorkerSet(1), (running(),), progress=progress))
    assert first.status["progress"] == {"step": 50, "totalSteps": 200, "loss": 1.25, "tokensPerSecond": 900.0,
                                        "etaSeconds": 30.0, "display": "50/200 (25%)",
                                        "lastCheckpoint": "checkpoint-50"}
    assert [e.reason for e in first.events] == ["Checkpoint"]
    again = decide(parse_job(with_spec()), [], first.status,
                   Observed(NOW, WorkerSet(1), (running(),), progress=progress))
    assert again.events == []  # no phase change, no new checkpoint


def test_condition_transition_time_holds_while_status_holds():
    job = parse_job(with_spec())
    observed = Observed(NOW, WorkerSet(1), (running(),))
    first = decide(job, [], {}, observed)
    later = decide(job, [], first.status, Observed(NOW + timedelta(minutes=5), WorkerSet(1), (running(),)))
    times = {c["type"]: c["lastTransitionTime"] for c in later.status["conditions"]}
    assert times["Running"] == first.status["conditions"][1]["lastTransitionTime"]


def test_every_phase_and_condition_type_is_reached_by_the_table():
    phases, kinds = set(), set()
    for _, spec, status, observed, *_ in TABLE:
        decision = decide(parse_job(with_spec(**spec)), [], status, observed)
        phases.add(decision.phase)
        kinds |= {c["type"] for c in decision.status["conditions"]}
    assert phases == {"Pending", "Initializing", "Training", "Evaluating", "Succeeded", "Failed", "Suspended"}
    assert kinds == {"Created", "Running", "Restarting", "Suspended", "Trained", "Evaluated", "Succeeded", "Failed"}


def test_pods_and_jobs_are_read_from_kubernetes_objects():
    pod = {"metadata": {"name": "demo-worker-0"}, "status": {"containerStatuses": [{
        "name": "trainer", "ready": False, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 3, "message": "bad column", "reason": "Error"}}}]}}
    parsed = worker_pod(pod)
    assert parsed == WorkerPod("demo-worker-0", restarts=2, waiting_reason="CrashLoopBackOff",
                               last_terminated=Termination(3, "bad column", "Error"))
    job = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    eval_pod = {"metadata": {"name": "demo-eval-x"}, "status": {"containerStatuses": [{
        "name": "evaluator", "state": {"terminated": {"exitCode": 0, "message": EVAL_SUMMARY}}}]}}
    assert evaluation_run(job, [eval_pod]) == EvaluationRun(succeeded=True, message=EVAL_SUMMARY)
    assert evaluation_run(None, []) is None
