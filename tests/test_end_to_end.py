"""The operator end to end: a FineTuneJob applied to the emulated API server is reconciled by
the real kopf operator, whose StatefulSet and evaluation Job the test kubelet runs as real
processes (torchrun, TRL, the evaluator), until the job reaches Succeeded."""

import json

import pytest

from conftest import MINIMAL_JOB
from kubetune.api.models import GROUP, PLURAL, VERSION
from local_kubelet import NS, LocalKubelet
from operator_harness import Harness, allowed_requests, eventually

pytestmark = pytest.mark.timeout(600)
TRAINING = {"max_steps": 30, "per_device_train_batch_size": 4, "learning_rate": 1.0e-3, "max_length": 64,
            "logging_steps": 5}
EVALUATION = {"engine": "transformers", "metrics": ["loss", "exact_match"], "compareBase": True,
              "sampling": {"maxTokens": 8}}


def apply(harness, name, **spec):
    document = json.loads(json.dumps(MINIMAL_JOB))
    document["metadata"] = {"name": name, "namespace": NS}
    document["spec"].update(spec)
    harness.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, document)


def status(harness, name):
    return (harness.cluster.fine_tune_job(NS, name) or {}).get("status") or {}


def wait_finished(harness, kubelet, name, timeout=420):
    def finished():
        assert not kubelet.errors, kubelet.errors
        return status(harness, name).get("phase") in ("Succeeded", "Failed")

    eventually(finished, timeout, f"{name} to finish")
    return status(harness, name)


def logs(kubelet, name):
    """The last lines of every pod of the job, for failure messages."""
    return "\n".join(f"--- {f.parent.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-30:])
                     for f in sorted((kubelet.folders(name).root / "pods").glob("*/log.txt")))


@pytest.fixture
def cluster(tmp_path):
    with Harness() as harness:
        harness.start_operator(interval=1.0)
        with LocalKubelet(harness, tmp_path) as kubelet:
            yield harness, kubelet
        assert harness.requests() <= allowed_requests(), harness.requests() - allowed_requests()


def test_a_job_trains_on_two_pods_evaluates_and_succeeds(cluster):
    harness, kubelet = cluster
    apply(harness, "e2e", training=TRAINING, resources={"nodes": 2}, evaluation=EVALUATION)
    final = wait_finished(harness, kubelet, "e2e")
    assert final["phase"] == "Succeeded", (final.get("conditions"), logs(kubelet, "e2e"))
    metrics = final["evaluation"]["metrics"]
    assert set(metrics) == {"loss", "exact_match"}
    assert metrics["loss"]["tuned"] < metrics["loss"]["base"] and "delta" in metrics["loss"]
    record = json.loads(next((kubelet.folders("e2e").root / "output").glob("**/COMPLETED.json")).read_text())
    assert record["globalStep"] == 30
    assert harness.cluster.stateful_set(NS, "e2e-worker")["spec"]["replicas"] == 0
    # Events are posted after the status that caused them is written.
    eventually(lambda: {"Trained", "Evaluated", "Succeeded"} <= {r for j, _, r, _ in harness.events if j == "e2e"},
               10, "the job's Events")


def test_a_worker_killed_after_a_checkpoint_is_restarted_resumes_and_the_job_succeeds(cluster):
    harness, kubelet = cluster
    apply(harness, "fault", training=TRAINING, resources={"nodes": 2}, checkpointing={"everySteps": 5, "keep": 3},
          runPolicy={"backoffLimit": 6}, evaluation={"enabled": False})
    checkpoints = kubelet.folders("fault").root / "output"
    eventually(lambda: list(checkpoints.glob("**/checkpoint-5/trainer_state.json")), 300, "the first checkpoint")
    kubelet.kill_worker("fault", 1)
    final = wait_finished(harness, kubelet, "fault")
    assert final["phase"] == "Succeeded", (final.get("conditions"), logs(kubelet, "fault"))
    assert "fault-worker-1" in kubelet.restarted
    assert any(c["type"] == "Restarting" for c in final["conditions"])  # the operator saw it
    record = json.loads(next(checkpoints.glob("**/COMPLETED.json")).read_text())
    assert record["globalStep"] == 30
    worker_logs = logs(kubelet, "fault")
    assert "resuming from checkpoint-" in worker_logs


def test_a_frozen_rank_is_restarted_by_the_operators_watchdog_and_the_job_succeeds(cluster):
    from local_pods import freeze_pod

    harness, kubelet = cluster
    training = {**TRAINING, "max_steps": 160, "logging_steps": 10}
    apply(harness, "frozen", training=training, resources={"nodes": 2}, checkpointing={"everySteps": 20, "keep": 2},
          runPolicy={"progressDeadlineSeconds": 15, "backoffLimit": 2}, evaluation={"enabled": False})
    output = kubelet.folders("frozen").root / "output"
    eventually(lambda: list(output.glob("**/checkpoint-20/trainer_state.json")), 300, "the first checkpoint")
    freeze_pod("frozen-worker-1")
    eventually(lambda: any(r == "Stalled" for j, _, r, _ in harness.events if j == "frozen"), 60,
               "the watchdog's Stalled Event")
    final = wait_finished(harness, kubelet, "frozen")
    assert final["phase"] == "Succeeded", (final.get("conditions"), logs(kubelet, "frozen"))
    assert {"frozen-worker-0", "frozen-worker-1"} <= set(kubelet.recreated)  # deleted by the operator, made anew
    assert final["workers"]["restarts"] >= 1
    record = json.loads(next(output.glob("**/COMPLETED.json")).read_text())
    assert record["globalStep"] == 160
    assert "resuming from checkpoint-" in logs(kubelet, "frozen")
