"""The real kopf operator against the emulated API server: every phase and condition transition,
driven by writing pod and Job states the way the kubelet and Job controller would."""

import copy
import logging
import time
from pathlib import Path

import pytest
import yaml

from conftest import MINIMAL_JOB
from kubetune.api.models import GROUP, PLURAL, VERSION
from operator_harness import Harness, allowed_requests, eventually

# Elastic 1..4 with the per-device batch kept: the default global batch does not split at 3.
ELASTIC = {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False}

NS = "ml"
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def harness():
    with Harness() as running:
        yield running
        # Every request the operator made is allowed by the RBAC rules the chart installs.
        assert running.requests() <= allowed_requests(), running.requests() - allowed_requests()


def job_document(name="demo", **spec):
    document = copy.deepcopy(MINIMAL_JOB)
    document["metadata"] = {"name": name, "namespace": NS}
    document["spec"].update(spec)
    return document


def create_job(harness, document):
    harness.cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, document)
    return get_job(harness, document["metadata"]["name"])


def get_job(harness, name="demo"):
    return harness.cluster.fine_tune_job(NS, name)


def patch_spec(harness, name, spec):
    harness.cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {"spec": spec})


def phase(harness, name="demo"):
    return ((get_job(harness, name) or {}).get("status") or {}).get("phase")


def condition(harness, kind, name="demo"):
    for item in (get_job(harness, name).get("status") or {}).get("conditions", []):
        if item["type"] == kind:
            return item
    return None


def wait_phase(harness, expected, name="demo", timeout=20):
    return eventually(lambda: phase(harness, name) == expected, timeout, f"{name} phase {expected}")


def replicas(harness, name="demo", role="worker"):
    return harness.cluster.stateful_set(NS, f"{name}-{role}")["spec"]["replicas"]


def container_status(state="running", exit_code=None, message="", restarts=0, last=None, name="trainer"):
    status = {"name": name, "ready": state == "running", "restartCount": restarts, "image": "x", "imageID": "",
              "state": {}}
    if state == "running":
        status["state"] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    elif state == "terminated":
        status["state"] = {"terminated": {"exitCode": exit_code, "message": message, "reason": "Error"}}
    elif state == "crashloop":
        status["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    else:  # a kubelet waiting reason, such as ImagePullBackOff
        status["state"] = {"waiting": {"reason": state, "message": message}}
    if last is not None:
        status["lastState"] = {"terminated": {"exitCode": last[0], "message": last[1], "reason": "Error"}}
    return status


def owner(controller):
    """The ownerReference a controller (StatefulSet, Job) puts on the pods it makes."""
    return {"apiVersion": controller.get("apiVersion", "v1"), "kind": controller.get("kind", ""), "controller": True,
            "name": controller["metadata"]["name"], "uid": controller["metadata"]["uid"]}


def set_worker_pod(harness, ordinal, status, job="demo", pod_ip=None, conditions=(), role="worker"):
    """Write a worker (or generation server) pod the way the StatefulSet controller and kubelet
    (or the scheduler) would."""
    name = f"{job}-{role}-{ordinal}"
    workers = harness.cluster.stateful_set(NS, f"{job}-{role}")
    template = workers["spec"]["template"]
    pod_status = {"phase": "Running" if status else "Pending", "containerStatuses": [status] if status else [],
                  "conditions": list(conditions)}
    if pod_ip:
        pod_status["podIP"] = pod_ip
    core = harness.cluster.core
    try:
        core.read_namespaced_pod(name, NS)
        core.patch_namespaced_pod_status(name, NS, {"status": pod_status})
    except Exception:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": NS, "labels": dict(template["metadata"]["labels"]),
                            "ownerReferences": [owner(workers)]},
               "spec": template["spec"], "status": pod_status}
        core.create_namespaced_pod(NS, pod)


def test_create_makes_each_child_once_with_owner_references(harness):
    harness.start_operator()
    created = create_job(harness, job_document(resources={"nodes": 2}))
    wait_phase(harness, "Pending")
    for kind in ["ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet"]:
        objects = eventually(lambda: harness.objects(kind, "demo"), what=kind)
        assert len(objects) == 1, kind
        owner = objects[0]["metadata"]["ownerReferences"][0]
        assert owner["uid"] == created["metadata"]["uid"] and owner["controller"] is True
    assert replicas(harness) == 2
    assert condition(harness, "Created")["status"] == "True"
    assert get_job(harness)["status"]["output"] == {"claimName": "demo-output", "path": "model"}


def batch_job_of(harness, job="demo", role="evaluator"):
    """The job's evaluation (or publish) Job, whatever its name."""
    found = [j for j in harness.objects("Job", job) if j["metadata"]["labels"].get("kubetune.io/role") == role]
    return found[-1] if found else None


def set_evaluation(harness, outcome, message, job="demo", role="evaluator"):
    """Write the evaluation (or publish) Job's pod and conditions as the Job controller would."""
    batch_job = batch_job_of(harness, job, role)
    name, template = batch_job["metadata"]["name"], batch_job["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{name}-abcde", "namespace": NS,
                        "labels": dict(template["metadata"]["labels"]), "ownerReferences": [owner(batch_job)]},
           "spec": template["spec"],
           "status": {"phase": "Succeeded" if outcome == "Complete" else "Failed", "containerStatuses": [
               container_status("terminated", 0 if outcome == "Complete" else 3, message, name=role)]}}
    harness.cluster.core.create_namespaced_pod(NS, pod)
    harness.cluster.batch.patch_namespaced_job_status(name, NS, {"status": {"conditions": [
        {"type": outcome, "status": "True", "reason": outcome, "message": ""}]}})


def events_of(harness, job="demo"):
    return [(kind, reason, message) for name, kind, reason, message in harness.events if name == job]


def test_success_protocol_train_scale_to_zero_evaluate_succeed(harness):
    from kubetune.contract.plan import StrategyChoice
    from trainer_entrypoint.train.progress import ProgressState, serve

    harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2}))
    wait_phase(harness, "Pending")
    # Rank 0's real progress server, reached through worker 0's pod IP.
    progress = ProgressState("demo", NS)
    progress.update(phase="training", step=30, total_steps=120, loss=1.5, tokens_per_second=800.0,
                    eta_seconds=90.0, checkpoint="checkpoint-25", mfu=0.42,
                    distributed=StrategyChoice(strategy="zero2", reason="zero2 needs 30.0 GiB per GPU"))
    server = serve(progress, 9470, host="127.0.0.1")
    try:
        set_worker_pod(harness, 0, container_status("running"), pod_ip="127.0.0.1")
        wait_phase(harness, "Initializing")
        set_worker_pod(harness, 1, container_status("running"))
        wait_phase(harness, "Training")
        assert condition(harness, "Running")["status"] == "True"
        eventually(lambda: get_job(harness)["status"].get("progress", {}).get("display") == "30/120 (25%)",
                   what="progress mirrored")
    finally:
        server.shutdown()
        server.server_close()
    assert get_job(harness)["status"]["progress"]["loss"] == 1.5
    assert get_job(harness)["status"]["progress"]["mfu"] == 0.42
    assert get_job(harness)["status"]["distributed"] == {"strategy": "zero2", "offload": "none",
                                                        "reason": "zero2 needs 30.0 GiB per GPU"}
    # Training succeeded: the workers exit 0 (and would be restarted by the StatefulSet).
    for ordinal in range(2):
        set_worker_pod(harness, ordinal, container_status("running", restarts=1, last=(0, "")))
    wait_phase(harness, "Evaluating")
    assert condition(harness, "Trained")["status"] == "True"
    eventually(lambda: replicas(harness) == 0, what="workers scaled to zero")
    assert len(harness.objects("Job", "demo")) == 1
    summary = '{"metrics": {"loss": {"tuned": 1.2, "base": 2.4}}, "report": "/output/evaluation/report.json"}'
    set_evaluation(harness, "Complete", summary)
    wait_phase(harness, "Succeeded")
    status = get_job(harness)["status"]
    assert status["evaluation"]["metrics"]["loss"] == {"tuned": 1.2, "base": 2.4, "delta": pytest.approx(-1.2)}
    assert condition(harness, "Succeeded")["status"] == "True" and status["completionTime"]
    expected = {"Pending", "Initializing", "Training", "Checkpoint", "StrategyChosen", "Evaluating", "Trained",
                "Succeeded", "Evaluated"}
    try:
        eventually(lambda: expected <= {reason for _, reason, _ in events_of(harness)}, what="events")
    except AssertionError:
        raise AssertionError(f"events: {events_of(harness)}")
    phase_events = [reason for _, reason, _ in events_of(harness) if reason in
                    ("Pending", "Initializing", "Training", "Evaluating", "Succeeded")]
    assert phase_events == ["Pending", "Initializing", "Training", "Evaluating", "Succeeded"]  # once each
    # After success, a worker the StatefulSet restarts is scaled away again: nothing trains twice.
    harness.cluster.patch_stateful_set(NS, "demo-worker", {"spec": {"replicas": 2}})
    eventually(lambda: replicas(harness) == 0, what="workers kept at zero")
    assert len(harness.objects("Job", "demo")) == 1
    metrics = harness.context.metrics
    assert metrics.jobs.labels(NS, "Succeeded")._value.get() == 1
    assert metrics.evaluation.labels(NS, "demo", "loss", "tuned")._value.get() == 1.2


def test_permanent_exit_code_fails_at_once_with_the_message(harness):
    harness.start_operator()
    create_job(harness, job_document(runPolicy={"backoffLimit": 5}))
    wait_phase(harness, "Pending")
    message = "dataset /inputs/data/train.jsonl: method dpo needs columns (chosen, prompt, rejected)"
    set_worker_pod(harness, 0, container_status("terminated", 3, message))
    wait_phase(harness, "Failed")
    failed = condition(harness, "Failed")
    assert failed["reason"] == "PermanentError" and failed["message"] == message
    eventually(lambda: replicas(harness) == 0, what="scaled to zero")
    assert ("Warning", "Failed", message) in events_of(harness)


def test_restarts_beyond_backoff_limit_fail_the_job_with_the_last_logs(harness):
    harness.start_operator()
    create_job(harness, job_document(runPolicy={"backoffLimit": 1}))
    wait_phase(harness, "Pending")
    set_worker_pod(harness, 0, container_status("crashloop", restarts=1, last=(1, "RuntimeError: NCCL timeout")))
    eventually(lambda: condition(harness, "Restarting") and condition(harness, "Restarting")["status"] == "True",
               what="Restarting")
    assert phase(harness) != "Failed"
    set_worker_pod(harness, 0, container_status("crashloop", restarts=2, last=(137, "OOMKilled")))
    wait_phase(harness, "Failed")
    failed = condition(harness, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded" and "OOMKilled" in failed["message"]


def test_a_worker_that_cannot_pull_its_image_says_so_once(harness):
    harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2}))
    wait_phase(harness, "Pending")
    set_worker_pod(harness, 0, container_status("running"))
    message = 'Back-off pulling image "registry.example/trainer:9"'
    set_worker_pod(harness, 1, container_status("ImagePullBackOff", message=message))
    eventually(lambda: condition(harness, "Running")["reason"] == "ImagePullBackOff", what="the reason")
    assert condition(harness, "Running")["message"] == f"demo-worker-1: {message}"
    time.sleep(1.5)  # several resyncs
    warnings = [event for event in events_of(harness) if event[1] == "ImagePullBackOff"]
    assert warnings == [("Warning", "ImagePullBackOff", f"demo-worker-1: {message}")]


def test_unschedulable_workers_fail_after_the_scheduling_timeout(harness):
    harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2}, runPolicy={"schedulingTimeoutSeconds": 2}))
    wait_phase(harness, "Pending")
    set_worker_pod(harness, 0, container_status("running"))
    scheduler = "0/12 nodes are available: 12 Insufficient nvidia.com/gpu."
    set_worker_pod(harness, 1, None, conditions=[{"type": "PodScheduled", "status": "False",
                                                  "reason": "Unschedulable", "message": scheduler}])
    eventually(lambda: condition(harness, "Running")["reason"] == "Unschedulable", what="the reason")
    wait_phase(harness, "Failed", timeout=20)
    failure = get_job(harness)["status"]["failure"]
    assert failure["reason"] == "Unschedulable" and scheduler in failure["message"]
    assert "schedulingTimeoutSeconds (2)" in failure["message"]
    eventually(lambda: replicas(harness) == 0, what="scaled to zero")


def test_a_recreated_worker_pod_does_not_reset_the_restart_count(harness):
    harness.start_operator()
    create_job(harness, job_document(runPolicy={"backoffLimit": 3}))
    wait_phase(harness, "Pending")
    set_worker_pod(harness, 0, container_status("crashloop", restarts=2, last=(1, "boom")))
    eventually(lambda: get_job(harness)["status"]["workers"]["restarts"] == 2, what="two restarts")
    harness.cluster.core.delete_namespaced_pod("demo-worker-0", NS)  # node lost: a new pod, restartCount 0
    set_worker_pod(harness, 0, container_status("running"))
    wait_phase(harness, "Training")
    assert get_job(harness)["status"]["workers"]["restarts"] == 2
    assert harness.context.metrics.job_restarts.labels(NS, "demo")._value.get() == 2  # what the alert reads
    set_worker_pod(harness, 0, container_status("crashloop", restarts=2, last=(1, "boom")))
    wait_phase(harness, "Failed")
    failure = get_job(harness)["status"]["failure"]
    assert failure["reason"] == "BackoffLimitExceeded" and failure["message"].startswith("4 worker restarts")
    assert failure["worker"] == "demo-worker-0"


def test_suspend_scales_to_zero_and_resume_scales_back(harness):
    harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2}))
    wait_phase(harness, "Pending")
    patch_spec(harness, "demo", {"runPolicy": {"suspend": True}})
    wait_phase(harness, "Suspended")
    eventually(lambda: replicas(harness) == 0, what="suspended to zero")
    assert condition(harness, "Suspended")["status"] == "True"
    patch_spec(harness, "demo", {"runPolicy": {"suspend": False}})
    eventually(lambda: replicas(harness) == 2, what="resumed")
    eventually(lambda: condition(harness, "Suspended")["reason"] == "Resumed", what="Suspended=False")


def test_a_generation_server_runs_first_then_the_workers_then_goes_to_zero_with_them(harness):
    harness.start_operator()
    create_job(harness, job_document(method="grpo", rewards=[{"function": "answer_match"}],
                                     generation={"gpusPerNode": 0}))
    eventually(lambda: replicas(harness, "demo", "generation") == 1, what="the server scaled up")
    assert replicas(harness) == 0 and condition(harness, "GenerationReady")["reason"] == "ServerStarting"
    set_worker_pod(harness, 0, container_status("crashloop", name="server", restarts=1,
                                                last=(1, "RuntimeError: engine core died")), role="generation")
    eventually(lambda: condition(harness, "GenerationReady")["reason"] == "ServerRestarting", what="its crash named")
    assert "engine core died" in condition(harness, "GenerationReady")["message"] and replicas(harness) == 0
    set_worker_pod(harness, 0, container_status(name="server", restarts=1), role="generation")
    eventually(lambda: replicas(harness) == 1, what="the workers started once it was ready")
    assert condition(harness, "GenerationReady")["status"] == "True"
    assert get_job(harness)["status"]["generation"]["restarts"] == 1
    set_worker_pod(harness, 0, container_status("terminated", exit_code=0))
    eventually(lambda: replicas(harness, "demo", "generation") == 0, what="the server scaled to zero after training")


def test_the_initializer_runs_first_and_the_workers_read_its_cache_read_only(harness):
    from kubetune.contract.initialization import FetchedSource, InitializationReport
    from kubetune.contract.sources import Location

    harness.start_operator()
    create_job(harness, job_document(model={"source": "hf://Qwen/Qwen2.5-0.5B"}))
    wait_phase(harness, "Initializing")
    assert condition(harness, "Initialized")["reason"] == "Downloading" and replicas(harness) == 0
    initializer = batch_job_of(harness, "demo", "initializer")["spec"]["template"]["spec"]["containers"][0]
    assert initializer["command"][-1] == "initialize"
    assert {"name": "output", "mountPath": "/model-cache", "readOnly": False,
            "subPath": ".kubetune-cache"} in initializer["volumeMounts"]
    workers = harness.cluster.stateful_set(NS, "demo-worker")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "output", "mountPath": "/model-cache", "readOnly": True,
            "subPath": ".kubetune-cache"} in workers["volumeMounts"]
    fetched = FetchedSource(source="hf://Qwen/Qwen2.5-0.5B", location=Location(kind="hf", ref="Qwen/Qwen2.5-0.5B"),
                            revision="a1b2c3", path="/model-cache/entries/hf/Qwen/Qwen2.5-0.5B/a1b2c3",
                            bytes_done=4000, bytes_total=4000, cached=True)
    set_evaluation(harness, "Complete", InitializationReport(sources=[fetched], seconds=0.5).encode(),
                   role="initializer")
    eventually(lambda: replicas(harness) == 1, what="the workers started once the sources were in the cache")
    assert condition(harness, "Initialized")["message"] == "hf://Qwen/Qwen2.5-0.5B@a1b2c3: cached"
    status = get_job(harness)["status"]["initialization"]
    assert status["sources"][0]["revision"] == "a1b2c3" and status["display"] == "4.0 kB/4.0 kB"
    eventually(lambda: ("Normal", "SourceCached", "hf://Qwen/Qwen2.5-0.5B@a1b2c3: cached") in events_of(harness),
               what="the cached source's Event")
    assert harness.context.metrics.initializer_bytes.labels("hf", "cached")._value.get() == 4000


def test_active_deadline_fails_the_job(harness):
    harness.start_operator()
    create_job(harness, job_document(runPolicy={"activeDeadlineSeconds": 2}))
    # Not waiting to see Pending: startTime has whole seconds, so that phase can last a few ms.
    eventually(lambda: harness.cluster.stateful_set(NS, "demo-worker"), what="the workers")
    set_worker_pod(harness, 0, container_status("running"))
    wait_phase(harness, "Failed", timeout=20)
    assert condition(harness, "Failed")["reason"] == "DeadlineExceeded"
    eventually(lambda: replicas(harness) == 0, what="scaled to zero")


def test_ttl_after_finished_deletes_the_job_and_its_children(harness):
    harness.start_operator()
    create_job(harness, job_document(evaluation={"enabled": False}, runPolicy={"ttlSecondsAfterFinished": 3}))
    wait_phase(harness, "Pending")
    set_worker_pod(harness, 0, container_status("terminated", 0))
    wait_phase(harness, "Succeeded")
    try:
        eventually(lambda: get_job(harness) is None, what="job deleted by TTL")
    except AssertionError:
        stuck = get_job(harness)
        raise AssertionError(f"not deleted: {stuck['metadata']} {stuck['status'].get('phase')}")
    eventually(lambda: not harness.objects("StatefulSet", "demo") and not harness.objects("ConfigMap", "demo"),
               what="children collected")


def test_elastic_resize_changes_the_worker_count(harness):
    harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2, "elastic": ELASTIC}))
    eventually(lambda: replicas(harness) == 2, what="two workers")
    patch_spec(harness, "demo", {"resources": {"nodes": 3, "elastic": ELASTIC}})
    eventually(lambda: replicas(harness) == 3, what="three workers")
    env = harness.cluster.stateful_set(NS, "demo-worker")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PET_NNODES", "value": "1:4"} in env


def test_a_running_elastic_job_resized_down_records_it_and_its_leaving_pod_is_no_restart(harness):
    harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2, "elastic": ELASTIC}))
    eventually(lambda: replicas(harness) == 2, what="two workers")
    for ordinal in (0, 1):
        set_worker_pod(harness, ordinal, container_status())
    wait_phase(harness, "Training")
    patch_spec(harness, "demo", {"resources": {"nodes": 1, "elastic": ELASTIC}})
    eventually(lambda: replicas(harness) == 1, what="one worker")
    # The pod being removed ends with its peers' gloo error before it goes.
    set_worker_pod(harness, 1, container_status("terminated", 1, "Connection reset by peer", restarts=1))
    eventually(lambda: get_job(harness)["status"]["workers"].get("resizes"), what="the resize recorded")
    time.sleep(0.5)
    status = get_job(harness)["status"]
    assert [(r["from"], r["to"]) for r in status["workers"]["resizes"]] == [(2, 1)]
    assert status["workers"]["restarts"] == 0 and status["phase"] == "Training"
    resized = [event for event in events_of(harness) if event[1] == "Resized"]
    assert len(resized) == 1 and resized[0][2].startswith("resized from 2 to 1 nodes"), events_of(harness)


def test_deleting_a_job_removes_everything_it_created(harness):
    harness.start_operator()
    create_job(harness, job_document())
    eventually(lambda: harness.objects("StatefulSet", "demo"), what="children")
    harness.cluster.delete_job(NS, "demo")
    eventually(lambda: all(not harness.objects(kind, "demo")
                           for kind in ["ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet"]),
               what="children deleted")


class CrashingCluster:
    """The operator's cluster access, dying after a number of creates (an operator crash)."""

    def __init__(self, cluster, creates_before_crash):
        self._cluster, self._left = cluster, creates_before_crash

    def __getattr__(self, name):
        return getattr(self._cluster, name)

    def create(self, manifest):
        if self._left == 0:
            raise RuntimeError("operator killed mid-reconcile")
        self._left -= 1
        return self._cluster.create(manifest)


@pytest.mark.parametrize("creates_before_crash", [0, 1, 2, 3])
def test_an_operator_restarted_mid_reconcile_leaves_one_of_each_child(harness, creates_before_crash):
    from kubetune.handlers.cluster import Cluster
    import kubernetes.client

    crashing = CrashingCluster(Cluster(kubernetes.client.ApiClient(
        kubernetes.client.Configuration(host=harness.url)), request_timeout=3), creates_before_crash)
    crashed = harness.start_operator(cluster=crashing)
    create_job(harness, job_document())
    eventually(lambda: crashed.metrics.reconcile_errors.labels(NS)._value.get() > 0, what="the crash")
    assert len([k for k in ["ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet"]
                if harness.objects(k, "demo")]) == creates_before_crash
    harness.stop_operator()
    harness.start_operator()
    wait_phase(harness, "Pending")
    for kind in ["ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet"]:
        assert len(harness.objects(kind, "demo")) == 1, kind
    harness.stop_operator()
    harness.start_operator()  # and once more, with everything already there
    set_worker_pod(harness, 0, container_status("running"))
    wait_phase(harness, "Training")
    for kind in ["ConfigMap", "PersistentVolumeClaim", "Service", "StatefulSet"]:
        assert len(harness.objects(kind, "demo")) == 1, kind


def test_malformed_job_fails_naming_the_field_and_others_keep_running(harness, caplog):
    caplog.set_level(logging.INFO)
    harness.start_operator()
    bad = job_document("broken")
    bad["spec"]["resources"] = {"nodes": "two"}  # what the CRD schema would have refused
    create_job(harness, bad)
    create_job(harness, job_document("healthy"))
    wait_phase(harness, "Failed", name="broken")
    failed = condition(harness, "Failed", name="broken")
    assert failed["reason"] == "InvalidSpec" and "spec.resources.nodes" in failed["message"]
    wait_phase(harness, "Pending", name="healthy")
    assert not harness.objects("StatefulSet", "broken")
    tracebacks = [r for r in caplog.records if r.exc_info and "kubetune" in str(r.exc_info[1].__traceback__.tb_frame)]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not tracebacks and not errors, [r.getMessage() for r in errors]


def test_chained_job_waits_for_its_upstream_and_reads_its_output(harness):
    harness.start_operator()
    create_job(harness, job_document("dpo", method="dpo", model={"source": "job://sft"}))
    eventually(lambda: condition(harness, "Created", name="dpo")["reason"] == "WaitingForUpstream", what="waiting")
    assert not harness.objects("StatefulSet", "dpo")
    create_job(harness, job_document("sft", evaluation={"enabled": False}, output={"claimName": "models"}))
    eventually(lambda: harness.objects("StatefulSet", "sft"), what="sft workers")
    set_worker_pod(harness, 0, container_status("terminated", 0), job="sft")
    wait_phase(harness, "Succeeded", name="sft")
    eventually(lambda: harness.objects("StatefulSet", "dpo"), what="dpo starts after sft")
    volumes = harness.objects("StatefulSet", "dpo")[0]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "input-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in volumes


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_kubetune_operator_command_serves_liveness_and_metrics(harness, tmp_path):
    """The command the Helm chart runs, against the API server through a kubeconfig."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": harness.url}}],
        "users": [{"name": "test", "user": {}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
    liveness, metrics = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "kubetune"), "operator", "--namespace", NS,
               "--liveness-port", str(liveness), "--metrics-port", str(metrics), "--interval", "0.5"]
    log = open(tmp_path / "operator.log", "w")
    process = subprocess.Popen(command, env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        def healthy():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=1).status == 200
            except OSError:
                return False

        eventually(healthy, timeout=60, what="liveness endpoint")
        create_job(harness, job_document())
        wait_phase(harness, "Pending", timeout=30)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2).read().decode()
        assert 'kubetune_jobs{namespace="ml",phase="Pending"} 1.0' in text
        assert "kubetune_reconcile_duration_seconds_count" in text
        assert 'kubetune_job_phase{job="demo",namespace="ml",phase="Pending"} 1.0' in text
        eventually(lambda: "kubetune_resync_last_success_timestamp_seconds 1" in urllib.request.urlopen(
            f"http://127.0.0.1:{metrics}/metrics", timeout=2).read().decode(), what="a resync round")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    output = (tmp_path / "operator.log").read_text()
    assert "Traceback" not in output, output[-3000:]


class FlakyCluster:
    """The operator's cluster access, failing once, at its n-th write (a create, patch, delete
    or Event), as an API server error or an operator crash between two writes would."""

    WRITES = {"create", "patch_stateful_set", "patch_job_status", "post_event", "delete_pod", "delete_job"}

    def __init__(self, cluster, fail_at):
        self._cluster, self._left = cluster, fail_at
        self.replicas: list[int] = []  # every worker count the operator set, in order

    def __getattr__(self, name):
        method = getattr(self._cluster, name)
        if name not in self.WRITES:
            return method

        def write(*args, **kwargs):
            self._left -= 1
            if self._left == 0:
                raise RuntimeError(f"the API server failed the operator's {name}")
            result = method(*args, **kwargs)
            if name == "patch_stateful_set":
                self.replicas.append(args[2]["spec"]["replicas"])
            return result
        return write


@pytest.mark.parametrize("fail_at", range(1, 17))
def test_a_failed_write_at_any_point_never_trains_twice_or_loses_an_event(harness, fail_at):
    from kubetune.handlers.cluster import Cluster
    import kubernetes.client

    flaky = FlakyCluster(Cluster(kubernetes.client.ApiClient(kubernetes.client.Configuration(host=harness.url)),
                                 request_timeout=3), fail_at)
    harness.start_operator(cluster=flaky)
    create_job(harness, job_document())
    eventually(lambda: harness.cluster.stateful_set(NS, "demo-worker"), what="the workers")
    set_worker_pod(harness, 0, container_status("running"))
    wait_phase(harness, "Training")
    set_worker_pod(harness, 0, container_status("running", restarts=1, last=(0, "")))  # trained; restarted
    wait_phase(harness, "Evaluating")
    eventually(lambda: batch_job_of(harness), what="the evaluation Job")
    set_evaluation(harness, "Complete", '{"metrics": {"loss": {"tuned": 1.0}}}')
    wait_phase(harness, "Succeeded")
    time.sleep(1)  # a few more resyncs: a lost Event would be posted, a duplicate would show
    phases = [reason for _, reason, _ in events_of(harness) if reason in
              ("Pending", "Initializing", "Training", "Evaluating", "Succeeded", "Failed")]
    assert phases == ["Pending", "Training", "Evaluating", "Succeeded"], events_of(harness)
    assert [reason for _, reason, _ in events_of(harness)].count("Trained") == 1
    # Once scaled to zero after training, the workers are never scaled up again.
    assert 0 in flaky.replicas and not any(flaky.replicas[flaky.replicas.index(0):]), flaky.replicas
    assert replicas(harness) == 0


def test_an_idle_jobs_status_settles(harness):
    """Resyncs of a job where nothing changes write no status and post no Event."""
    harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2}))
    eventually(lambda: harness.cluster.stateful_set(NS, "demo-worker"), what="the workers")
    for ordinal in range(2):
        set_worker_pod(harness, ordinal, container_status("crashloop", restarts=1, last=(1, "boom")))
    eventually(lambda: get_job(harness)["status"]["workers"]["restarts"] == 2, what="restarts counted")
    for ordinal in range(2):
        set_worker_pod(harness, ordinal, container_status("running", restarts=1, last=(1, "boom")))
    wait_phase(harness, "Training")
    harness.cluster.core.delete_namespaced_pod("demo-worker-1", NS)  # recreated: its uid leaves the bookkeeping
    set_worker_pod(harness, 1, container_status("running"))
    time.sleep(1)
    seen = len(list(harness.api_server))
    time.sleep(3)  # about ten resyncs
    requests = [(request.action.name, request.resource.plural, request.subresource)
                for request in list(harness.api_server)[seen:]
                if request.headers.get("User-Agent", "").startswith("kubetune-operator") and request.action]
    assert requests == []  # reads come from the watch-fed cache; nothing changed, so nothing is written
    assert set(get_job(harness)["status"]["workers"]["seen"]) == {
        pod["metadata"]["uid"] for pod in harness.objects("Pod", "demo")}  # no pod gone is kept


def test_the_operators_writes_reuse_one_connection(harness):
    from kubetune.handlers.cluster import Cluster
    import kubernetes.client

    cluster = Cluster(kubernetes.client.ApiClient(kubernetes.client.Configuration(host=harness.url)))
    for index in range(20):
        manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{index}", "namespace": NS}}
        assert cluster.create(manifest) and not cluster.create(manifest)  # created, then 409
        cluster.stateful_set(NS, "absent")  # a 404 read in between
    pools = cluster.core.api_client.rest_client.pool_manager.pools
    (key,) = pools.keys()
    assert pools[key].num_connections == 1


def test_a_spec_is_checked_once_per_generation_and_forgotten_with_its_job(harness, monkeypatch):
    import kubetune.handlers.reconcile as reconcile_module

    parsed = []
    real = reconcile_module.parse_job
    monkeypatch.setattr(reconcile_module, "parse_job", lambda body: parsed.append(body["metadata"]["generation"])
                        or real(body))
    context = harness.start_operator()
    create_job(harness, job_document(resources={"nodes": 2, "elastic": ELASTIC}))
    wait_phase(harness, "Pending")
    time.sleep(1)  # several resyncs
    patch_spec(harness, "demo", {"resources": {"nodes": 3, "elastic": ELASTIC}})
    eventually(lambda: replicas(harness) == 3, what="the new generation applied")
    time.sleep(1)
    assert parsed == [1, 2]
    assert context.metrics.jobs.labels(NS, "Pending")._value.get() == 1
    harness.cluster.delete_job(NS, "demo")
    eventually(lambda: ("ml", "demo") not in context._parsed, what="the job forgotten")
    assert context.metrics.jobs.labels(NS, "Pending")._value.get() == 0  # its metrics go with it
    exposed = {sample.labels.get("job") for family in context.metrics.registry.collect() for sample in family.samples}
    assert "demo" not in exposed


def test_changes_act_at_once_through_watches_not_at_the_next_resync(harness):
    """With a resync a minute away, every reaction here comes from a watch event."""
    harness.start_operator(interval=60)
    create_job(harness, job_document())
    eventually(lambda: harness.cluster.stateful_set(NS, "demo-worker"), timeout=5, what="the workers")
    harness.cluster.core.delete_namespaced_service("demo-workers", NS)  # removed by hand: made anew
    eventually(lambda: harness.objects("Service", "demo") and harness.objects("Service", "demo")[0]["metadata"]
               ["uid"], timeout=5, what="the Service recreated")
    set_worker_pod(harness, 0, container_status("running"))
    wait_phase(harness, "Training", timeout=5)
    set_worker_pod(harness, 0, container_status("running", restarts=1, last=(0, "")))
    wait_phase(harness, "Evaluating", timeout=5)
    eventually(lambda: batch_job_of(harness), timeout=5, what="the evaluation Job")
    set_evaluation(harness, "Complete", '{"metrics": {"loss": {"tuned": 1.0}}}')
    wait_phase(harness, "Succeeded", timeout=5)  # the evaluation Job is watched like the workers


def test_only_the_replica_holding_the_lease_reconciles_and_another_takes_over(harness):
    import threading

    import kubernetes.client
    from kubetune.handlers.cluster import Cluster
    from kubetune.handlers.reconcile import OperatorContext
    from kubetune.handlers.registry import Controller, Leadership

    def replica(identity):
        context = OperatorContext(Cluster(kubernetes.client.ApiClient(kubernetes.client.Configuration(
            host=harness.url)), request_timeout=3), progress_timeout=0.5)
        lost = threading.Event()
        controller = Controller(context, interval=0.3, workers=2, leadership=Leadership(
            "kubetune", "kubetune-operator", identity, on_lost=lost.set, lease_seconds=3, renew_seconds=2,
            retry_seconds=1))
        controller.start()
        return controller, lost

    first, first_lost = replica("first")
    eventually(first.leading.is_set, timeout=10, what="the first replica leading")
    second, _ = replica("second")
    create_job(harness, job_document("one"))
    wait_phase(harness, "Pending", name="one")
    time.sleep(2)  # the second keeps trying the Lease
    assert not second.leading.is_set()
    holder = kubernetes.client.CoordinationV1Api(harness.client).read_namespaced_lease("kubetune-operator", "kubetune")
    assert holder.spec.holder_identity == "first"
    first.stop()  # stops renewing, as a replica that died would
    eventually(second.leading.is_set, timeout=15, what="the second replica taking over")
    create_job(harness, job_document("two"))
    wait_phase(harness, "Pending", name="two")
    second.stop()
    assert not first_lost.is_set()  # stopping is not losing


def test_a_gated_job_gets_its_verdict_then_publishes_and_records_where_the_model_went(harness):
    harness.start_operator()
    evaluation = {"metrics": ["loss"], "compareBase": True, "gates": [{"metric": "loss", "maxDelta": 0.0,
                                                                       "confident": True}]}
    create_job(harness, job_document(evaluation=evaluation, output={"publish": [{"target": "s3://models/demo"}]}))
    eventually(lambda: replicas(harness) == 1, what="the worker")
    set_worker_pod(harness, 0, container_status("running", restarts=1, last=(0, "")))
    wait_phase(harness, "Evaluating")
    set_evaluation(harness, "Complete", '{"metrics": {"loss": {"tuned": 1.2, "base": 2.4, "deltaInterval": '
                                        '[-1.3, -1.1], "rows": 32}}}')
    wait_phase(harness, "Publishing")
    assert condition(harness, "GatesPassed")["reason"] == "Passed"
    assert get_job(harness)["status"]["evaluation"]["verdict"] == "Passed"
    publish = harness.cluster.batch_job(NS, "demo-publish")
    assert publish["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "publish"
    set_evaluation(harness, "Complete", '{"published": [{"target": "s3://models/demo", "revision": "e7", '
                                        '"url": "s3://models/demo", "files": 9}]}', role="publisher")
    wait_phase(harness, "Succeeded")
    assert get_job(harness)["status"]["output"]["published"] == [
        {"target": "s3://models/demo", "revision": "e7", "url": "s3://models/demo", "files": 9}]
    eventually(lambda: {"Passed", "Published"} <= {reason for _, reason, _ in events_of(harness)}, what="events")


def test_editing_spec_evaluation_of_a_trained_job_evaluates_again_without_training(harness):
    from kubetune.contract.config import TrainerConfig

    harness.start_operator()
    create_job(harness, job_document(evaluation={"metrics": ["loss"], "compareBase": True}))
    eventually(lambda: replicas(harness) == 1, what="the worker")
    set_worker_pod(harness, 0, container_status("running", restarts=1, last=(0, "")))
    wait_phase(harness, "Evaluating")
    first = batch_job_of(harness)["metadata"]["name"]
    set_evaluation(harness, "Complete", '{"metrics": {"loss": {"tuned": 1.2, "base": 2.4}}, '
                                        '"report": "/output/evaluation/report.json"}')
    wait_phase(harness, "Succeeded")
    gated = {"metrics": ["loss", "perplexity"], "compareBase": True, "gates": [{"metric": "loss", "maxDelta": 0.0}]}
    patch_spec(harness, "demo", {"evaluation": gated})
    wait_phase(harness, "Evaluating")
    eventually(lambda: batch_job_of(harness)["metadata"]["name"] != first, what="a new evaluation Job")
    assert {j["metadata"]["name"] for j in harness.objects("Job", "demo")} >= {first}  # the earlier one stays
    config = TrainerConfig.decode(harness.cluster.core.read_namespaced_config_map("demo-config", NS).data[
        "config.json"])
    assert config.evaluation.metrics == ["loss", "perplexity"] and config.evaluation.gates[0].max_delta == 0.0
    assert replicas(harness) == 0  # no worker is started again
    set_evaluation(harness, "Complete", '{"metrics": {"loss": {"tuned": 1.1, "base": 2.4}}, '
                                        '"report": "/output/evaluation/report.json"}')
    wait_phase(harness, "Succeeded")
    evaluation = get_job(harness)["status"]["evaluation"]
    assert evaluation["verdict"] == "Passed" and evaluation["metrics"]["loss"]["tuned"] == 1.1
    assert len(evaluation["previousReports"]) == 1 and evaluation["previousReports"][0].endswith("/report.json")
    assert "Reevaluating" in {reason for _, reason, _ in events_of(harness)}
