"""The lifecycle as a table: spec + status + observed children -> phase, conditions, actions."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jsonschema
import pytest

from conftest import with_spec
from kubetune.api.crd import generate_crd
from kubetune.api.models import FineTuneJobStatus
from kubetune.api.validation import parse_job
from kubetune.contract.failure import FAILURE_CLASSES, FailureReport
from kubetune.contract.initialization import InitializationReport
from kubetune.contract.plan import StrategyChoice
from kubetune.contract.progress import Progress
from kubetune.lifecycle import (Action, ConditionType, EvaluationRun, Observed, Phase, Termination, WorkerPod,
                                WorkerSet)
from kubetune.lifecycle import decide as decide_typed
from kubetune.lifecycle import evaluation_run, worker_pod
from kubetune.lifecycle.observed import RESULT_GRACE_SECONDS

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


def running(name="demo-worker-0", restarts=0, uid=None):
    return WorkerPod(name, running=True, ready=True, restarts=restarts, uid=uid or f"uid-{name}")


def exited(code, message="", name="demo-worker-0", restarts=0, still=True):
    termination = Termination(code, message)
    if still:
        return WorkerPod(name, terminated=termination, restarts=restarts, uid=f"uid-{name}")
    return WorkerPod(name, running=True, last_terminated=termination, restarts=restarts, uid=f"uid-{name}")


def crashing(restarts, message="boom", name="demo-worker-0", uid=None, reason=""):
    return WorkerPod(name, restarts=restarts, waiting_reason="CrashLoopBackOff", uid=uid or f"uid-{name}",
                     last_terminated=Termination(1 if reason != "OOMKilled" else 137, message, reason))


def waiting(reason, message, name="demo-worker-1"):
    return WorkerPod(name, waiting_reason=reason, waiting_message=message, uid=f"uid-{name}", scheduled=True)


def unschedulable(message="0/12 nodes are available: 12 Insufficient nvidia.com/gpu.", name="demo-worker-1"):
    return WorkerPod(name, scheduled=False, scheduling_message=message, uid=f"uid-{name}")


def condition(kind, status, reason):
    return {"type": kind, "status": status, "reason": reason}


@dataclass(frozen=True)
class Absent:
    """In a table row: a condition type, or an action, that the decision must not have."""

    what: object


def holds(kind, status, reason, since, message=""):
    """A condition already in the stored status."""
    return {**condition(kind, status, reason), "message": message, "lastTransitionTime": since}


def elastic(nodes, min_nodes=1, max_nodes=4, keep=True, **spec):
    """An elastic job's spec at `nodes`; a global batch that splits at every size up to 4 nodes."""
    return {"resources": {"nodes": nodes, "elastic": {"minNodes": min_nodes, "maxNodes": max_nodes,
                                                      "keepGlobalBatch": keep}},
            "training": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3}, **spec}


def resized_from(nodes, checkpoint="checkpoint-20"):
    """A training job's status whose last decision wanted `nodes` workers."""
    return {**training_for(60, 5), "workers": {"desired": nodes},
            "progress": {"step": 25, "phase": "training", "lastCheckpoint": checkpoint, "lastStepTime": ago(5)}}


def report(reason, message):
    return FailureReport(reason=reason, message=message, last_logs="...\n" + message).fitted()


def training_for(seconds, step_seconds_ago=None, step=40, phase="training", **workers):
    """The status of a job whose workers all run since `seconds` ago, its step last moving then."""
    progress = {"step": step, "phase": phase}
    if step_seconds_ago is not None:
        progress["lastStepTime"] = ago(step_seconds_ago)
    return {"phase": "Training", "startTime": ago(seconds + 60), "progress": progress, "workers": workers,
            "conditions": [holds("Created", "True", "ChildrenCreated", ago(seconds + 60)),
                           holds("Running", "True", "WorkersRunning", ago(seconds))]}


def stalled_pods(step=40, phase="training"):
    return dict(workers=WorkerSet(2, 2), pods=(running(), running("demo-worker-1")),
                progress=Progress(step=step, phase=phase))


# Every worker runs on, and nothing is restarted.
QUIET_WATCHDOG_CONDITIONS = [condition("Running", "True", "WorkersRunning"), Absent("Stalled")]
QUIET_WATCHDOG_ACTIONS = [Action("ensure_training_objects"), Action("scale_workers", 2),
                          Absent(Action("restart_workers"))]


EVAL_SUMMARY = json.dumps({"metrics": {"loss": {"tuned": 1.5, "base": 2.0}, "exact_match": {"tuned": 0.25}},
                           "report": "/output/evaluation/report.json"})
TWO_NODES = {"resources": {"nodes": 2}}
EVALUATING = {"phase": "Evaluating", "conditions": [holds("Trained", "True", "TrainingSucceeded", ago(5))]}


PUBLISHED = json.dumps({"published": [{"target": "s3://models/demo", "revision": "9b2cf535f27731c974343645a3985328",
                                       "url": "s3://models/demo", "files": 7}]})


def publishing(delta, interval, run=None, when="gatesPassed"):
    """A gated job that publishes to s3://models/demo, its evaluation done, its publish Job `run`."""
    spec, status, observed = gated(delta, interval)
    spec["output"] = {"publish": [{"target": "s3://models/demo", "when": when}]}
    return spec, status, Observed(NOW, WorkerSet(0), evaluation=observed.evaluation, publish=run)


def gated(delta, interval, on_regression="keep"):
    """A job gated on pass@1 rising (confidently), and its evaluation having measured `delta`."""
    spec = {"evaluation": {"metrics": ["pass@1"], "compareBase": True, "onRegression": on_regression,
                           "gates": [{"metric": "pass@1", "minDelta": 0.0, "confident": True}]}}
    summary = json.dumps({"metrics": {"pass@1": {"tuned": 0.4 + delta, "base": 0.4, "deltaInterval": interval,
                                                 "rows": 200}}})
    status = {"phase": "Evaluating", "conditions": [holds("Trained", "True", "TrainingSucceeded", ago(5))]}
    return spec, status, Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(succeeded=True, message=summary))

# A GRPO job whose generation server runs on one GPU pod.
SERVER = {"method": "grpo", "rewards": [{"function": "answer_match"}], "resources": {"gpusPerNode": 1},
          "generation": {"gpusPerNode": 1}}


# A job whose model comes from the Hub: the initializer downloads it first.
FROM_HUB = {"model": {"source": "hf://Qwen/Qwen2.5-0.5B"}}
FETCHED = json.dumps({"sources": [{"source": "hf://Qwen/Qwen2.5-0.5B", "location": {"kind": "hf",
                                   "ref": "Qwen/Qwen2.5-0.5B"}, "revision": "a1b2c3", "path": "/model-cache/e/1",
                                   "bytesDone": 988000000, "bytesTotal": 988000000, "cached": True}],
                      "seconds": 1.5})
HALF_FETCHED = FETCHED.replace('"bytesDone": 988000000', '"bytesDone": 494000000').replace(
    '"path": "/model-cache/e/1", ', "")
INITIALIZED = {"phase": "Initializing", "conditions": [holds("Initialized", "True", "SourcesReady", ago(5))]}


def server_pod(**state):
    return WorkerPod("demo-generation-0", uid="uid-demo-generation-0", **state)


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
     Observed(NOW, WorkerSet(1), (crashing(4, "NCCL error: unhandled system error"),)),
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
    ("gates that pass: Passed", *gated(0.05, [0.01, 0.09]),
     "Succeeded", [condition("GatesPassed", "True", "Passed"), condition("Succeeded", "True", "EvaluationSucceeded")],
     []),
    ("a gain within the noise is Regressed, kept", *gated(0.02, [-0.01, 0.05]),
     "Succeeded", [condition("GatesPassed", "False", "Regressed")], []),
    ("Regressed with onRegression fail fails", *gated(0.02, [-0.01, 0.05], on_regression="fail"),
     "Failed", [condition("GatesPassed", "False", "Regressed"), condition("Failed", "True", "Regressed")],
     [Action("scale_workers", 0)]),
    ("gates passed: the model is published", *publishing(0.05, [0.01, 0.09]),
     "Publishing", [condition("GatesPassed", "True", "Passed")], [Action("ensure_publish_job")]),
    ("published: Succeeded", *publishing(0.05, [0.01, 0.09], EvaluationRun(succeeded=True, message=PUBLISHED)),
     "Succeeded", [condition("Succeeded", "True", "EvaluationSucceeded")], []),
    ("publishing failed past its retries", *publishing(0.05, [0.01, 0.09], EvaluationRun(failed=True, message=report(
        "PublishFailed", "s3://models/demo: ClientError: An error occurred (NoSuchBucket)"))),
     "Failed", [condition("Failed", "True", "PublishFailed")], [Action("scale_workers", 0)]),
    ("regressed: gatesPassed targets are not published", *publishing(0.02, [-0.01, 0.05]),
     "Succeeded", [condition("GatesPassed", "False", "Regressed")], []),
    ("regressed: always targets are published", *publishing(0.02, [-0.01, 0.05], when="always"),
     "Publishing", [], [Action("ensure_publish_job")]),
    ("no gates: NoGates", {}, {"phase": "Evaluating", "conditions": [
        {**condition("Trained", "True", "TrainingSucceeded"), "message": "", "lastTransitionTime": ago(5)}]},
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(succeeded=True, message=EVAL_SUMMARY)),
     "Succeeded", [condition("GatesPassed", "True", "NoGates")], []),
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
    # --- elastic jobs ---
    ("elastic resize up scales the workers and trains on meanwhile", elastic(3), resized_from(2),
     Observed(NOW, WorkerSet(2, 2), (running(), running("demo-worker-1"))),
     "Training", [condition("Running", "True", "ElasticPartial")], [Action("scale_workers", 3)]),
    ("elastic resize down: the pod leaving is no failure", elastic(1), resized_from(2),
     Observed(NOW, WorkerSet(1, 1), (running(), crashing(3, "Connection reset by peer", "demo-worker-1"))),
     "Training", [condition("Running", "True", "WorkersRunning")], [Action("scale_workers", 1)]),
    ("elastic with a lost worker trains on at minNodes", elastic(2), training_for(60, 10, desired=2),
     Observed(NOW, WorkerSet(2, 1), (running(), unschedulable())),
     "Training", [condition("Running", "True", "ElasticPartial")], [Action("scale_workers", 2)]),
    ("elastic below minNodes waits past schedulingTimeoutSeconds",
     elastic(2, 2, runPolicy={"schedulingTimeoutSeconds": 60}), training_for(600, 300, desired=2),
     Observed(NOW, WorkerSet(2, 1), (running(), unschedulable())),
     "Initializing", [condition("Running", "False", "BelowMinNodes")], [Action("scale_workers", 2)]),
    # --- why workers do not run ---
    ("an image that cannot be pulled is the reason", TWO_NODES, {"phase": "Pending"},
     Observed(NOW, WorkerSet(2), (running(), waiting("ImagePullBackOff", "Back-off pulling image \"trainer:9\""))),
     "Initializing", [condition("Running", "False", "ImagePullBackOff")], [Action("scale_workers", 2)]),
    ("an invalid image name fails at once", TWO_NODES, {"phase": "Pending"},
     Observed(NOW, WorkerSet(2), (running(), waiting("InvalidImageName", "couldn't parse image name \"Trainer\""))),
     "Failed", [condition("Failed", "True", "ImagePull")], [Action("scale_workers", 0)]),
    ("a missing Secret fails at once", TWO_NODES, {"phase": "Pending"},
     Observed(NOW, WorkerSet(2), (waiting("CreateContainerConfigError", 'secret "hf" not found', "demo-worker-0"),
                                  waiting("ContainerCreating", ""))),
     "Failed", [condition("Failed", "True", "ContainerConfig")], [Action("scale_workers", 0)]),
    ("no node has a free GPU", TWO_NODES, {"phase": "Pending"},
     Observed(NOW, WorkerSet(2), (running(), unschedulable())),
     "Initializing", [condition("Running", "False", "Unschedulable")], [Action("scale_workers", 2)]),
    ("the output claim does not bind", {}, {"phase": "Pending"},
     Observed(NOW, WorkerSet(1), (unschedulable("0/3 nodes: pod has unbound immediate PersistentVolumeClaims",
                                                "demo-worker-0"),),
              claim_pending="persistentvolumeclaim demo-output is Pending (not bound to a volume)"),
     "Pending", [condition("Running", "False", "Unschedulable")], []),
    ("unscheduled past schedulingTimeoutSeconds fails", {"runPolicy": {"schedulingTimeoutSeconds": 600}, **TWO_NODES},
     {"phase": "Initializing", "startTime": ago(900), "conditions": [
         holds("Running", "False", "Unschedulable", ago(601), "demo-worker-1: 0/12 nodes are available")]},
     Observed(NOW, WorkerSet(2), (running(), unschedulable())),
     "Failed", [condition("Failed", "True", "Unschedulable")], [Action("scale_workers", 0)]),
    ("within schedulingTimeoutSeconds it waits", {"runPolicy": {"schedulingTimeoutSeconds": 600}, **TWO_NODES},
     {"phase": "Initializing", "startTime": ago(900), "conditions": [
         holds("Running", "False", "Unschedulable", ago(599), "demo-worker-1: 0/12 nodes are available")]},
     Observed(NOW, WorkerSet(2), (running(), unschedulable())), "Initializing", [], []),
    # --- the restart budget ---
    ("restarts add up across a recreated pod", {"runPolicy": {"backoffLimit": 2}},
     {"phase": "Training", "workers": {"restarts": 2, "seen": {"uid-old": {"restarts": 2}}}},
     Observed(NOW, WorkerSet(1), (crashing(1, "boom", uid="uid-new"),)),
     "Failed", [condition("Failed", "True", "BackoffLimitExceeded")], []),
    ("an eviction does not use the backoff budget", {"runPolicy": {"backoffLimit": 0}, **TWO_NODES},
     {"phase": "Training", "workers": {"restarts": 0}},
     Observed(NOW, WorkerSet(2, 1), (running(), WorkerPod("demo-worker-1", uid="uid-1", disrupted=True))),
     "Initializing", [], [Action("scale_workers", 2)]),
    ("evictions past maxDisruptions fail", {"runPolicy": {"maxDisruptions": 1}, **TWO_NODES},
     {"phase": "Training", "workers": {"disruptions": 1}},
     Observed(NOW, WorkerSet(2, 1), (running(), WorkerPod("demo-worker-1", uid="uid-1", disrupted=True))),
     "Failed", [condition("Failed", "True", "TooManyDisruptions")], []),
    ("a first out-of-memory is retried", {}, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (crashing(1, report("OutOfMemory", "CUDA out of memory")),)),
     "Pending", [condition("Restarting", "True", "WorkerRestarting")], [Action("scale_workers", 1)]),
    ("a second out-of-memory fails with what to lower", {}, {"phase": "Training", "workers": {
        "restarts": 1, "outOfMemory": 1, "seen": {"uid-demo-worker-0": {"restarts": 1}}}},
     Observed(NOW, WorkerSet(1), (crashing(2, "", reason="OOMKilled"),)),
     "Failed", [condition("Failed", "True", "OutOfMemory")], [Action("scale_workers", 0)]),
    ("a rendezvous timeout is named when the budget runs out", {"runPolicy": {"backoffLimit": 0}}, {"phase": "Pending"},
     Observed(NOW, WorkerSet(1), (crashing(1, report("RendezvousTimeout", "RendezvousTimeoutError")),)),
     "Failed", [condition("Failed", "True", "BackoffLimitExceeded")], []),
    ("a collective timeout is named when the budget runs out", {"runPolicy": {"backoffLimit": 0}},
     {"phase": "Training"}, Observed(NOW, WorkerSet(1), (crashing(1, "Watchdog caught collective operation timeout"),)),
     "Failed", [condition("Failed", "True", "BackoffLimitExceeded")], []),
    # --- the stall watchdog ---
    ("a step that does not move restarts the workers", TWO_NODES, training_for(2000, 1800),
     Observed(NOW, **stalled_pods()), "Training", [condition("Stalled", "True", "NoProgress")],
     [Action("restart_workers")]),
    ("a step that moves is progress", TWO_NODES, training_for(2000, 1800),
     Observed(NOW, **stalled_pods(step=41)), "Training", QUIET_WATCHDOG_CONDITIONS, QUIET_WATCHDOG_ACTIONS),
    ("a checkpoint save gets twice the deadline", TWO_NODES, training_for(4000, 1800),
     Observed(NOW, **stalled_pods(phase="checkpointing")), "Training", QUIET_WATCHDOG_CONDITIONS,
     QUIET_WATCHDOG_ACTIONS),
    ("no first step within startupDeadlineSeconds", TWO_NODES, training_for(3600),
     Observed(NOW, WorkerSet(2, 2), (running(), running("demo-worker-1"))), "Training",
     [condition("Stalled", "True", "NoProgress")], [Action("restart_workers")]),
    ("stalls past backoffLimit fail", {"runPolicy": {"backoffLimit": 1}, **TWO_NODES},
     training_for(2000, 1800, restarts=1), Observed(NOW, **stalled_pods()),
     "Failed", [condition("Failed", "True", "Stalled")], [Action("scale_workers", 0)]),
    ("progressDeadlineSeconds 0 turns the watchdog off", {"runPolicy": {"progressDeadlineSeconds": 0}, **TWO_NODES},
     training_for(90000, 90000), Observed(NOW, **stalled_pods()), "Training", QUIET_WATCHDOG_CONDITIONS,
     QUIET_WATCHDOG_ACTIONS),
    ("an evaluator that cannot pull its image says so", {}, {"phase": "Evaluating", "conditions": [
        holds("Trained", "True", "TrainingSucceeded", ago(5))]},
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(pod=waiting("ErrImagePull", "not found", "demo-eval-x"))),
     "Evaluating", [condition("Evaluated", "False", "ErrImagePull")], [Action("ensure_evaluation_job")]),
    # --- a batch Job that completed with its pod gone ---
    ("a completed evaluation whose pod is gone runs again", {}, EVALUATING,
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(succeeded=True, completed_at=ago(RESULT_GRACE_SECONDS))),
     "Evaluating", [condition("Evaluated", "False", "EvaluationResultLost")],
     [Action("delete_evaluation_job"), Absent(Action("ensure_evaluation_job"))]),
    ("a completed evaluation's pod may reach the cache late", {}, EVALUATING,
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(succeeded=True, completed_at=ago(RESULT_GRACE_SECONDS - 1))),
     "Evaluating", [Absent("Evaluated")], [Action("ensure_evaluation_job"), Absent(Action("delete_evaluation_job"))]),
    ("a completed evaluation whose pod is still there is read, however late", {}, EVALUATING,
     Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(succeeded=True, message=EVAL_SUMMARY,
                                                          pod=exited(0, EVAL_SUMMARY, "demo-eval-x"),
                                                          completed_at=ago(3600))),
     "Succeeded", [condition("Evaluated", "True", "EvaluationSucceeded")], [Absent(Action("delete_evaluation_job"))]),
    ("a completed publish whose pod is gone uploads again",
     *publishing(0.05, [0.01, 0.09], EvaluationRun(succeeded=True, completed_at=ago(RESULT_GRACE_SECONDS))),
     "Publishing", [condition("Published", "False", "PublishResultLost")],
     [Action("delete_publish_job"), Absent(Action("ensure_publish_job"))]),
    # --- the initializer (hf:// and s3:// sources) ---
    ("a job with a hub model runs its initializer first, the workers at zero", FROM_HUB, {}, Observed(NOW),
     "Initializing", [condition("Initialized", "False", "Downloading"),
                      condition("Running", "False", "WaitingForInitialization")],
     [Action("ensure_training_objects"), Action("scale_workers", 0), Absent(Action("scale_workers", 1))]),
    ("the initializer's progress reaches status", FROM_HUB, {"phase": "Initializing"},
     Observed(NOW, initialization=EvaluationRun(),
              initialization_progress=InitializationReport.decode(HALF_FETCHED)),
     "Initializing", [condition("Initialized", "False", "Downloading")], [Action("scale_workers", 0)]),
    ("the initializer's success starts the workers", FROM_HUB, {"phase": "Initializing"},
     Observed(NOW, WorkerSet(0), initialization=EvaluationRun(succeeded=True, message=FETCHED)),
     "Pending", [condition("Initialized", "True", "SourcesReady")], [Action("scale_workers", 1)]),
    ("once initialized, the initializer is not waited for again", FROM_HUB, INITIALIZED,
     Observed(NOW, WorkerSet(1, 1), (running(),)),
     "Training", [condition("Running", "True", "WorkersRunning")], [Action("scale_workers", 1)]),
    ("a source that cannot exist fails the job at once, naming it", FROM_HUB, {"phase": "Initializing"},
     Observed(NOW, initialization=EvaluationRun(failed=True, message=report(
         "PermanentError", "model hf://Qwen/Qwen2.5-0.5B: RepositoryNotFoundError: 404"))),
     "Failed", [condition("Failed", "True", "PermanentError")], [Action("scale_workers", 0)]),
    ("an initializer failing past backoffLimit fails the job", FROM_HUB, {"phase": "Initializing"},
     Observed(NOW, initialization=EvaluationRun(failed=True, message=report("Crashed", "HTTP 500 from the Hub"))),
     "Failed", [condition("Failed", "True", "InitializationFailed")], [Action("scale_workers", 0)]),
    ("a generation server waits for the initializer", {**SERVER, **FROM_HUB}, {}, Observed(NOW),
     "Initializing", [condition("Initialized", "False", "Downloading")],
     [Action("scale_generation", 0), Action("scale_workers", 0)]),
    # --- a generation server (spec.generation) ---
    ("a generation server starts first, the workers held at zero", SERVER, {}, Observed(NOW),
     "Pending", [condition("GenerationReady", "False", "ServerStarting"),
                 condition("Running", "False", "WaitingForGeneration")],
     [Action("ensure_training_objects"), Action("scale_generation", 1), Action("scale_workers", 0)]),
    ("a loading generation server keeps the workers held", SERVER, {"phase": "Pending"},
     Observed(NOW, generation_pods=(server_pod(running=True),)),
     "Initializing", [condition("GenerationReady", "False", "ServerStarting")],
     [Action("scale_generation", 1), Action("scale_workers", 0), Absent(Action("scale_workers", 1))]),
    ("a ready generation server lets the workers start", SERVER, {"phase": "Initializing"},
     Observed(NOW, WorkerSet(0), generation_pods=(server_pod(running=True, ready=True),)),
     "Pending", [condition("GenerationReady", "True", "ServerReady")],
     [Action("scale_generation", 1), Action("scale_workers", 1)]),
    ("the generation server trains alongside the workers", SERVER, {"phase": "Initializing"},
     Observed(NOW, WorkerSet(1, 1), (running(),), generation_pods=(server_pod(running=True, ready=True),)),
     "Training", [condition("GenerationReady", "True", "ServerReady"), condition("Running", "True", "WorkersRunning")],
     [Action("scale_generation", 1), Action("scale_workers", 1)]),
    ("a generation server that cannot pull its image fails at once", SERVER, {"phase": "Pending"},
     Observed(NOW, generation_pods=(server_pod(waiting_reason="InvalidImageName", waiting_message="bad name"),)),
     "Failed", [condition("Failed", "True", "ImagePull")], [Action("scale_generation", 0), Action("scale_workers", 0)]),
    ("a generation server's permanent error fails the job", SERVER, {"phase": "Pending"},
     Observed(NOW, generation_pods=(server_pod(terminated=Termination(3, report("PermanentError",
                                                                                 "model hf://x: not found"))),)),
     "Failed", [condition("Failed", "True", "PermanentError")], [Action("scale_generation", 0)]),
    ("a generation server restarting past backoffLimit fails the job", {**SERVER, "runPolicy": {"backoffLimit": 1}},
     {"phase": "Pending"},
     Observed(NOW, generation_pods=(crashing(2, "engine core died", name="demo-generation-0"),)),
     "Failed", [condition("Failed", "True", "BackoffLimitExceeded")], [Action("scale_generation", 0)]),
    ("a crash-looping generation server is named in GenerationReady", SERVER, {"phase": "Pending"},
     Observed(NOW, generation_pods=(crashing(1, "engine core died", name="demo-generation-0"),)),
     "Pending", [condition("GenerationReady", "False", "ServerRestarting")], [Action("scale_workers", 0)]),
    ("the generation server goes to zero with the workers after training", SERVER, {"phase": "Training"},
     Observed(NOW, WorkerSet(1), (exited(0),), generation_pods=(server_pod(running=True, ready=True),)),
     "Evaluating", [condition("Trained", "True", "TrainingSucceeded")],
     [Action("scale_workers", 0), Action("scale_generation", 0)]),
    ("a suspended job's generation server goes to zero", {**SERVER, "runPolicy": {"suspend": True}},
     {"phase": "Training"}, Observed(NOW, WorkerSet(1), (running(),), generation_pods=(server_pod(running=True),)),
     "Suspended", [], [Action("scale_workers", 0), Action("scale_generation", 0)]),
    ("a job without spec.generation scales no server", {}, {}, Observed(NOW),
     "Pending", [Absent("GenerationReady")], [Absent(Action("scale_generation", 0)),
                                              Absent(Action("scale_generation", 1))]),
    ("a completed publish's pod may reach the cache late",
     *publishing(0.05, [0.01, 0.09], EvaluationRun(succeeded=True, completed_at=ago(RESULT_GRACE_SECONDS - 1))),
     "Publishing", [Absent("Published")], [Action("ensure_publish_job"), Absent(Action("delete_publish_job"))]),
]


@pytest.mark.parametrize("case,spec,status,observed,phase,conditions,actions", TABLE, ids=[row[0] for row in TABLE])
def test_transition(case, spec, status, observed, phase, conditions, actions):
    decision = decide(parse_job(with_spec(**spec)), [], status, observed, generation=4)
    assert decision.phase == phase == decision.status["phase"]
    kinds = [c["type"] for c in decision.status["conditions"]]
    for expected in conditions:
        if isinstance(expected, Absent):
            assert expected.what not in kinds, decision.status["conditions"]
            continue
        actual = next(c for c in decision.status["conditions"] if c["type"] == expected["type"])
        assert {k: actual[k] for k in expected} == expected, actual
        assert actual["observedGeneration"] == 4
    for action in actions:
        if isinstance(action, Absent):
            assert action.what not in decision.actions, decision.actions
        else:
            assert action in decision.actions, decision.actions


def test_every_status_the_table_writes_is_valid_under_the_crd_schema():
    schema = generate_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    validator = jsonschema.Draft4Validator(schema)
    for case, spec, status, observed, *_ in TABLE:
        written = decide(parse_job(with_spec(**spec)), [], status, observed, generation=4).status
        assert not list(validator.iter_errors(written)), (case, written)
        assert (written["output"]["claimName"], written["output"]["path"]) == ("demo-output", "model")


def test_invalid_spec_fails_with_the_field_and_creates_nothing():
    decision = decide(None, ["spec.resources.nodes: Input should be greater than or equal to 1"], {}, Observed(NOW))
    failed = next(c for c in decision.status["conditions"] if c["type"] == "Failed")
    assert decision.phase == "Failed" and failed["reason"] == "InvalidSpec"
    assert "spec.resources.nodes" in failed["message"]
    assert decision.actions == []


def test_failure_keeps_the_workers_last_words_in_status_and_event():
    logs = "Traceback ...\nRuntimeError: NCCL timeout"
    decision = decide(parse_job(with_spec(runPolicy={"backoffLimit": 0})), [], {"phase": "Training"},
                      Observed(NOW, WorkerSet(1), (crashing(1, logs),)))
    failed = next(c for c in decision.status["conditions"] if c["type"] == "Failed")
    assert failed["message"] == "1 worker restarts exceed backoffLimit 0: CollectiveTimeout: RuntimeError: NCCL timeout"
    assert decision.status["failure"] == {"reason": "BackoffLimitExceeded", "message": failed["message"],
                                          "worker": "demo-worker-0", "exitCode": 1, "lastLogs": logs}
    assert decision.events[0].type == "Warning" and "NCCL timeout" in decision.events[0].message


def test_evaluation_results_land_in_status_with_base_and_delta():
    status = {"phase": "Evaluating", "conditions": [
        {**condition("Trained", "True", "TrainingSucceeded"), "message": "", "lastTransitionTime": ago(5)}]}
    decision = decide(parse_job(with_spec()), [], status,
                      Observed(NOW, evaluation=EvaluationRun(succeeded=True, message=EVAL_SUMMARY)))
    assert decision.status["evaluation"] == {
        "metrics": {"loss": {"tuned": 1.5, "base": 2.0, "delta": -0.5}, "exact_match": {"tuned": 0.25}},
        "report": "/output/evaluation/report.json", "verdict": "NoGates", "gates": [],
        "digest": parse_job(with_spec()).spec.evaluation.digest(), "previousReports": []}
    assert decision.status["completionTime"] == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [e.reason for e in decision.events] == ["Succeeded", "Evaluated"]


def test_progress_is_mirrored_with_a_display_and_a_checkpoint_event():
    progress = Progress(step=50, total_steps=200, loss=1.25, tokens_per_second=900.0, eta_seconds=30.0,
                        checkpoint="checkpoint-50", phase="training")
    first = decide(parse_job(with_spec()), [], {"phase": "Training"},
                   Observed(NOW, WorkerSet(1), (running(),), progress=progress))
    assert first.status["progress"] == {"step": 50, "totalSteps": 200, "loss": 1.25, "tokensPerSecond": 900.0,
                                        "etaSeconds": 30.0, "display": "50/200 (25%)", "phase": "training",
                                        "lastCheckpoint": "checkpoint-50", "lastStepTime": ago(0)}
    assert [e.reason for e in first.events] == ["Checkpoint"]
    again = decide(parse_job(with_spec()), [], first.status,
                   Observed(NOW, WorkerSet(1), (running(),), progress=progress))
    assert again.events == []  # no phase change, no new checkpoint


def test_the_strategy_rank_0_trains_with_is_recorded_with_one_event_and_mfu_is_mirrored():
    chosen = StrategyChoice(strategy="zero2", reason="zero2 needs 29.8 GiB per GPU of 74.7 GiB usable; ddp would "
                                                     "need 128.7 GiB", per_gpu_bytes=32 * 2**30)
    progress = Progress(step=5, total_steps=200, tokens_per_second=9000.0, mfu=0.41, phase="training",
                        distributed=chosen)
    first = decide(parse_job(with_spec()), [], {"phase": "Training"},
                   Observed(NOW, WorkerSet(1), (running(),), progress=progress))
    assert first.status["distributed"] == {"strategy": "zero2", "offload": "none", "reason": chosen.reason,
                                           "perGpuBytes": 32 * 2**30}
    assert first.status["progress"]["mfu"] == 0.41
    assert [(e.reason, e.message) for e in first.events] == [
        ("StrategyChosen", f"training with zero2: {chosen.reason}")]
    again = decide(parse_job(with_spec()), [], first.status,
                   Observed(NOW, WorkerSet(1), (running(),), progress=progress))
    assert again.events == [] and again.status["distributed"] == first.status["distributed"]


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
    assert phases == set(Phase)
    assert kinds == set(ConditionType)


def test_every_failure_class_is_reached_by_the_table():
    reached = set()
    for _, spec, status, observed, *_ in TABLE:
        failure = decide(parse_job(with_spec(**spec)), [], status, observed).status.get("failure")
        if failure:
            reached.add(failure["reason"])
            reached |= {cls for cls in FAILURE_CLASSES if f": {cls}: " in failure["message"]}
    reached.add(decide(None, ["spec: bad"], {}, Observed(NOW)).status["failure"]["reason"])
    assert reached >= set(FAILURE_CLASSES) - {"Crashed"}


def test_a_waiting_reason_is_one_warning_event_per_change():
    job, pods = parse_job(with_spec(**TWO_NODES)), (running(), unschedulable())
    first = decide(job, [], {"phase": "Pending"}, Observed(NOW, WorkerSet(2), pods))
    again = decide(job, [], first.status, Observed(NOW, WorkerSet(2), pods))
    other = decide(job, [], again.status, Observed(NOW, WorkerSet(2), (running(), waiting("ErrImagePull", "no"))))
    assert [(e.type, e.reason) for e in first.events] == [("Normal", "Initializing"), ("Warning", "Unschedulable")]
    assert "Insufficient nvidia.com/gpu" in first.events[1].message
    assert again.events == []
    assert [(e.type, e.reason) for e in other.events] == [("Warning", "ErrImagePull")]


def test_each_restart_is_an_event_naming_its_reason():
    pod = crashing(1, report("OutOfMemory", "CUDA out of memory. Tried to allocate 2.00 GiB"))
    decision = decide(parse_job(with_spec()), [], {"phase": "Training"}, Observed(NOW, WorkerSet(1), (pod,)))
    (restart,) = [e for e in decision.events if e.reason == "WorkerRestarted"]
    assert restart.type == "Warning" and "demo-worker-0 restarted after OutOfMemory (exit code 1)" in restart.message
    assert "1 of backoffLimit 3" in restart.message
    workers = decision.status["workers"]
    assert (workers["restarts"], workers["outOfMemory"]) == (1, 1)
    again = decide(parse_job(with_spec()), [], decision.status, Observed(NOW, WorkerSet(1), (pod,)))
    assert again.status["workers"]["restarts"] == 1 and not [e for e in again.events if e.reason == "WorkerRestarted"]


def test_an_out_of_memory_failure_says_what_to_lower_and_keeps_the_logs():
    pod = crashing(2, report("OutOfMemory", "CUDA out of memory"))
    status = {"phase": "Training", "workers": {"restarts": 1, "outOfMemory": 1,
                                               "seen": {"uid-demo-worker-0": {"restarts": 1}}}}
    failure = decide(parse_job(with_spec()), [], status, Observed(NOW, WorkerSet(1), (pod,))).status["failure"]
    assert failure["reason"] == "OutOfMemory" and "per_device_train_batch_size" in failure["message"]
    assert failure["worker"] == "demo-worker-0" and failure["lastLogs"].endswith("CUDA out of memory")


def test_the_watchdog_restart_is_counted_once_and_cleared_by_the_next_step():
    job = parse_job(with_spec(**TWO_NODES))
    stalled = decide(job, [], training_for(2000, 1800), Observed(NOW, **stalled_pods()))
    assert stalled.status["workers"]["restarts"] == 1 and stalled.status["workers"]["restartedAt"] == ago(0)
    assert any(e.reason == "Stalled" and "step 40 did not advance for 1800 s" in e.message for e in stalled.events)
    # The old pods still run a moment later: no second restart until the watchdog's clock runs out again.
    later = decide(job, [], stalled.status, Observed(NOW + timedelta(seconds=30), **stalled_pods()))
    assert Action("restart_workers") not in later.actions and later.status["workers"]["restarts"] == 1
    moved = decide(job, [], later.status, Observed(NOW + timedelta(seconds=60), **stalled_pods(step=41)))
    assert next(c for c in moved.status["conditions"] if c["type"] == "Stalled")["status"] == "False"


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
    run = evaluation_run(job, [eval_pod])
    assert (run.succeeded, run.failed, run.message, run.pod.name) == (True, False, EVAL_SUMMARY, "demo-eval-x")
    assert evaluation_run(None, []) is None


def test_a_resize_is_recorded_once_with_its_checkpoint_and_the_global_batch():
    job = parse_job(with_spec(**elastic(1)))
    leaving = crashing(3, "Connection reset by peer", "demo-worker-1")
    observed = Observed(NOW, WorkerSet(1, 1), (running(), leaving))
    first = decide(job, [], resized_from(2), observed)
    resized = [event for event in first.events if event.reason == "Resized"]
    assert len(resized) == 1 and resized[0].type == "Normal"
    assert resized[0].message == ("resized from 2 to 1 nodes; training goes on from the newest complete "
                                  "checkpoint (last reported: checkpoint-20); global batch kept at 24")
    assert first.status["workers"]["resizes"] == [
        {"from": 2, "to": 1, "time": ago(0), "checkpoint": "checkpoint-20", "globalBatchSize": 24}]
    assert first.status["workers"]["restarts"] == 0  # the pod leaving does not count
    again = decide(job, [], first.status, observed)
    assert not [event for event in again.events if event.reason == "Resized"]
    assert len(again.status["workers"]["resizes"]) == 1


def test_without_keep_global_batch_the_resize_says_the_batch_changed():
    job = parse_job(with_spec(**elastic(2, keep=False)))
    decision = decide(job, [], resized_from(1), Observed(NOW, WorkerSet(2, 2), (running(), running("demo-worker-1"))))
    message = next(event.message for event in decision.events if event.reason == "Resized")
    assert message.endswith("global batch now 12 (was 6)")
    assert decision.status["workers"]["resizes"][0]["globalBatchSize"] == 12


def test_resuming_from_suspend_is_not_a_resize():
    job = parse_job(with_spec(**elastic(2)))
    status = {"phase": "Suspended", "workers": {"desired": 0}}
    decision = decide(job, [], status, Observed(NOW, WorkerSet(0)))
    assert not [event for event in decision.events if event.reason == "Resized"]
    assert not decision.status["workers"].get("resizes")


def test_the_verdict_lists_each_gate_with_its_value_and_interval():
    spec, status, observed = gated(0.02, [-0.01, 0.05])
    decision = decide(parse_job(with_spec(**spec)), [], status, observed)
    evaluation = decision.status["evaluation"]
    assert evaluation["verdict"] == "Regressed"
    assert evaluation["gates"] == [{"metric": "pass@1", "bound": "minDelta 0", "value": pytest.approx(0.02),
                                    "interval": [-0.01, 0.05], "confident": True, "passed": False}]
    gate = next(c for c in decision.status["conditions"] if c["type"] == "GatesPassed")
    assert gate["message"] == "pass@1 delta +0.02 [-0.01, 0.05] vs minDelta 0 (confident): failed"
    assert [(e.type, e.reason) for e in decision.events if e.reason == "Regressed"] == [("Warning", "Regressed")]


def test_bounds_below_and_above_judge_the_value_or_the_whole_interval():
    from kubetune.contract.evaluation import Gate, MetricValue, judge

    loss = MetricValue(tuned=1.2, base=1.5, tuned_interval=[1.1, 1.3], delta_interval=[-0.4, -0.2])
    assert judge(Gate(metric="loss", max_delta=0.0), loss).passed
    assert judge(Gate(metric="loss", max_delta=-0.25, confident=True), loss).passed is False
    assert judge(Gate(metric="loss", max=1.25), loss).passed
    assert judge(Gate(metric="loss", max=1.25, confident=True), loss).passed is False
    assert judge(Gate(metric="loss", min=1.0, confident=True), loss).passed
    assert judge(Gate(metric="loss", min=1.0), None).passed is False  # a metric the evaluation lacks


def test_what_was_published_lands_in_status_with_an_event_per_target():
    spec, status, observed = publishing(0.05, [0.01, 0.09], EvaluationRun(succeeded=True, message=PUBLISHED))
    decision = decide(parse_job(with_spec(**spec)), [], status, observed)
    assert decision.status["output"]["published"] == json.loads(PUBLISHED)["published"]
    assert [e.message for e in decision.events if e.reason == "Published"] == [
        "s3://models/demo: 7 files, s3://models/demo (9b2cf535f27731c974343645a3985328)"]
    regressed = decide(parse_job(with_spec(**spec)), [], status, publishing(0.02, [-0.01, 0.05])[2])
    assert not [a for a in regressed.actions if a.kind == "ensure_publish_job"]
    assert "published" not in regressed.status["output"]


def test_an_edit_of_spec_evaluation_evaluates_the_trained_model_again_and_keeps_the_earlier_report():
    job = parse_job(with_spec(evaluation={"metrics": ["loss"], "compareBase": True}))
    evaluated = decide(job, [], {"phase": "Evaluating", "conditions": [holds("Trained", "True", "TrainingSucceeded",
                                                                              ago(5))]},
                       Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(succeeded=True, message=EVAL_SUMMARY)))
    assert evaluated.phase == "Succeeded"
    unchanged = decide(job, [], evaluated.status, Observed(NOW, WorkerSet(0)))
    assert unchanged.phase == "Succeeded" and Action("ensure_evaluation_job") not in unchanged.actions
    edited = parse_job(with_spec(evaluation={"metrics": ["loss"], "compareBase": True, "gates": [
        {"metric": "loss", "maxDelta": 0.0}]}))
    again = decide(edited, [], evaluated.status, Observed(NOW, WorkerSet(0)))
    assert again.phase == "Evaluating" and Action("ensure_evaluation_job") in again.actions
    assert Action("ensure_training_objects") not in again.actions and Action("scale_workers", 0) in again.actions
    assert again.status["evaluation"] == {"metrics": {}, "gates": [], "previousReports": [
        f"/output/evaluation/{job.spec.evaluation.digest()}/report.json"]}
    reasons = {c["type"]: c["reason"] for c in again.status["conditions"] if c["status"] == "False"}
    assert reasons["Evaluated"] == reasons["Succeeded"] == "Reevaluating"
    assert [e.reason for e in again.events] == ["Evaluating", "Reevaluating"]
    done = decide(edited, [], again.status, Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(
        succeeded=True, message=EVAL_SUMMARY)))
    assert done.phase == "Succeeded" and done.status["evaluation"]["verdict"] == "Passed"
    assert done.status["evaluation"]["digest"] == edited.spec.evaluation.digest()
    assert done.status["evaluation"]["previousReports"] == again.status["evaluation"]["previousReports"]


def test_a_job_that_failed_in_training_is_not_evaluated_again_by_an_edit():
    job = parse_job(with_spec(evaluation={"metrics": ["loss", "perplexity"]}))
    status = {"phase": "Failed", "failure": {"reason": "OutOfMemory", "message": "x"},
              "evaluation": {"digest": "0000"}, "conditions": [holds("Failed", "True", "OutOfMemory", ago(5))]}
    assert decide(job, [], status, Observed(NOW, WorkerSet(0))).phase == "Failed"


def test_a_succeeded_batch_job_waits_for_its_pods_result_to_reach_the_cache():
    spec, status, observed = publishing(0.05, [0.01, 0.09], EvaluationRun(succeeded=True, message=""))
    early = decide(parse_job(with_spec(**spec)), [], status, observed)
    assert early.phase == "Publishing" and "published" not in early.status["output"]
    evaluation_early = decide(parse_job(with_spec()), [], {"phase": "Evaluating", "conditions": [
        holds("Trained", "True", "TrainingSucceeded", ago(5))]}, Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(
            succeeded=True, pod=running("demo-eval-x"))))
    assert evaluation_early.phase == "Evaluating" and "evaluation" not in evaluation_early.status


PULL_BACKOFF = 'Back-off pulling image "trainer:9"'
NO_GPU = "0/12 nodes are available: 12 Insufficient nvidia.com/gpu."
WAITING_TABLE = [
    # (case, nodes, pods that do not run, claim pending, the condition that says why, its reason and message)
    ("one pod, one reason", 2, (waiting("ImagePullBackOff", PULL_BACKOFF),), None,
     "Running", "ImagePullBackOff", f"demo-worker-1: {PULL_BACKOFF}"),
    ("two reasons, each with its pods", 3,
     (waiting("ImagePullBackOff", PULL_BACKOFF, "demo-worker-0"), unschedulable(NO_GPU, "demo-worker-1"),
      unschedulable(NO_GPU, "demo-worker-2")), None,
     "Running", "ImagePullBackOff",
     f"demo-worker-0: {PULL_BACKOFF}; also Unschedulable: demo-worker-1, demo-worker-2: {NO_GPU}"),
    ("a reason no wait can fix comes first", 2,
     (unschedulable(NO_GPU, "demo-worker-0"), waiting("InvalidImageName", "couldn't parse image name \"T\"")), None,
     "Failed", "ImagePull",
     f"demo-worker-1: couldn't parse image name \"T\"; also Unschedulable: demo-worker-0: {NO_GPU}"),
    ("the claim that does not bind is one more reason", 1, (unschedulable(NO_GPU, "demo-worker-0"),),
     "persistentvolumeclaim demo-output is Pending (not bound to a volume)",
     "Running", "Unschedulable", f"demo-worker-0: {NO_GPU}; also ClaimPending: persistentvolumeclaim demo-output is "
                                 "Pending (not bound to a volume)"),
    ("a claim a running worker mounted is bound", 2, (running("demo-worker-0"), unschedulable(NO_GPU)),
     "persistentvolumeclaim demo-output is Pending (not bound to a volume)",
     "Running", "Unschedulable", f"demo-worker-1: {NO_GPU}"),
    ("many pods of one reason are counted, not all named", 6,
     tuple(unschedulable(NO_GPU, f"demo-worker-{i}") for i in range(6)), None,
     "Running", "Unschedulable", f"demo-worker-0, demo-worker-1, demo-worker-2, demo-worker-3 and 2 more: {NO_GPU}"),
]


@pytest.mark.parametrize("case,nodes,pods,claim,kind,reason,message", WAITING_TABLE,
                         ids=[row[0] for row in WAITING_TABLE])
def test_every_waiting_reason_is_named_with_its_pods(case, nodes, pods, claim, kind, reason, message):
    decision = decide(parse_job(with_spec(resources={"nodes": nodes})), [], {"phase": "Pending"},
                      Observed(NOW, WorkerSet(nodes), pods, claim_pending=claim))
    said = next(c for c in decision.status["conditions"] if c["type"] == kind)
    assert (said["status"], said["reason"], said["message"]) == ("False" if kind == "Running" else "True", reason,
                                                                 message)


def test_a_waiting_message_is_bounded_and_names_every_reason():
    long = "x" * 5000
    pods = (waiting("ImagePullBackOff", long, "demo-worker-0"), unschedulable(long, "demo-worker-1"))
    decision = decide(parse_job(with_spec(resources={"nodes": 2})), [], {"phase": "Pending"},
                      Observed(NOW, WorkerSet(2), pods))
    running_condition = next(c for c in decision.status["conditions"] if c["type"] == "Running")
    assert running_condition["reason"] == "ImagePullBackOff"
    assert len(running_condition["message"]) <= 1024
    assert "also Unschedulable: demo-worker-1: xxx" in running_condition["message"]


def test_a_lost_evaluation_result_is_one_warning_event_until_the_new_job_reports():
    job, lost = parse_job(with_spec()), EvaluationRun(succeeded=True, completed_at=ago(RESULT_GRACE_SECONDS + 5))
    first = decide(job, [], EVALUATING, Observed(NOW, WorkerSet(0), evaluation=lost))
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "EvaluationResultLost")]
    assert "its pod, whose termination message holds the result, is gone" in first.events[0].message
    # The cache still shows the deleted Job, then none, then the new one running: no second Event.
    for run in (lost, None, EvaluationRun(pod=running("demo-eval-y"))):
        again = decide(job, [], first.status, Observed(NOW, WorkerSet(0), evaluation=run))
        assert again.phase == "Evaluating" and again.events == []
    done = decide(job, [], first.status, Observed(NOW, WorkerSet(0), evaluation=EvaluationRun(
        succeeded=True, message=EVAL_SUMMARY, completed_at=ago(0))))
    evaluated = next(c for c in done.status["conditions"] if c["type"] == "Evaluated")
    assert done.phase == "Succeeded" and (evaluated["status"], evaluated["reason"]) == ("True", "EvaluationSucceeded")


def test_a_batch_job_says_when_it_completed():
    completed = {"status": {"completionTime": "2026-01-01T11:59:00Z", "conditions": [
        {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T11:58:59Z"}]}}
    assert evaluation_run(completed, []).completed_at == "2026-01-01T11:59:00Z"
    without_time = {"status": {"conditions": [{"type": "Complete", "status": "True",
                                               "lastTransitionTime": "2026-01-01T11:58:59Z"}]}}
    assert evaluation_run(without_time, []).completed_at == "2026-01-01T11:58:59Z"
    assert evaluation_run({"status": {}}, []).completed_at is None


def test_rank_0s_last_numbers_left_at_exit_reach_status_when_training_ends_between_reads():
    final = Progress(step=2, total_steps=2, phase="succeeded", loss=0.5, reward=0.75).encode()
    result = decide(parse_job(with_spec()), [], {"phase": "Training"},
                    Observed(NOW, WorkerSet(1), (exited(0, final),)))
    assert result.phase == "Evaluating"
    assert (result.status["progress"]["step"], result.status["progress"]["reward"]) == (2, 0.75)
    assert result.status["progress"]["display"] == "2/2 (100%)"
