"""kubetune.Client: against the emulated API server with the real operator (the pods' states
written as the kubelet would), and on this machine with a real training run."""

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from kubetune import Client, FineTuneJob, JobFailed
from kubetune.api.validation import InvalidJob
from kubetune.client import ApiError, JobNotFound, Phase, errors
from kubetune.client.display import progress_display
from kubetune.contract.failure import FailureReport
from operator_harness import Harness, allowed_requests, eventually
from test_operator import NS, container_status, job_document, replicas, set_evaluation, set_worker_pod

ELASTIC = {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False}


def write_kubeconfig(url: str, path: Path, namespace: str = NS) -> str:
    """A kubeconfig whose current context is the emulated API server."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulated",
        "clusters": [{"name": "emulated", "cluster": {"server": url}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tests", "namespace": namespace}}],
        "users": [{"name": "tests", "user": {}}]}))
    return str(path)


@contextlib.contextmanager
def emulated_cluster(folder: Path):
    """(harness, kubeconfig path): the real operator runs against the emulated API server."""
    with Harness() as harness:
        harness.start_operator()
        yield harness, write_kubeconfig(harness.url, folder / "config")
        assert harness.requests() <= allowed_requests(), harness.requests() - allowed_requests()


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """(harness, client): a Client on the emulated cluster, through a kubeconfig."""
    with emulated_cluster(tmp_path_factory.mktemp("kube")) as (harness, config):
        yield harness, Client(kubeconfig=config)


def requests_of_users(harness) -> int:
    """Requests not made by the operator (the client's and the tests' own)."""
    return sum(r["count"] for r in harness.api_server.stats()["requests"] if r["agent"] == "other")


def phase_of(harness, name):
    return ((harness.cluster.fine_tune_job(NS, name) or {}).get("status") or {}).get("phase")


def failing_worker(harness, name, message="dataset: no column 'prompt'", logs="loading data\nKeyError: 'prompt'",
                   restarts=0):
    """Worker 0 exits with the permanent error code and the trainer's report."""
    report = FailureReport(reason="PermanentError", message=message, last_logs=logs).encode()
    set_worker_pod(harness, 0, container_status("terminated", 3, report, restarts=restarts), job=name)


@pytest.mark.timeout(60)
def test_create_get_list_and_wait_on_a_watch_until_succeeded(emulated):
    harness, client = emulated
    job = FineTuneJob.model_validate(job_document("happy", resources={"nodes": 2}))
    job.metadata.labels = {"team": "nlp"}
    created = client.create(job)
    assert created.name == "happy" and created.namespace == NS and created.uid and created.phase is None
    assert client.get("happy").uid == created.uid
    assert "happy" in [j.name for j in client.list()]
    assert [j.name for j in client.list(label_selector="team=nlp")] == ["happy"]
    assert client.list(label_selector="team=vision") == []

    def kubelet():  # the pods' states as the kubelet writes them, then the evaluation Job's result
        eventually(lambda: phase_of(harness, "happy") == "Pending", what="Pending")
        for ordinal in (0, 1):
            set_worker_pod(harness, ordinal, container_status("running"), job="happy")
        eventually(lambda: phase_of(harness, "happy") == "Training", what="Training")
        for ordinal in (0, 1):
            set_worker_pod(harness, ordinal, container_status("running", restarts=1, last=(0, "")), job="happy")
        eventually(lambda: [j for j in harness.objects("Job", "happy")
                            if j["metadata"]["labels"]["kubetune.io/role"] == "evaluator"], what="the evaluation Job")
        set_evaluation(harness, "Complete", json.dumps({"metrics": {"loss": {"tuned": 1.2, "base": 2.4}},
                                                         "report": "/output/evaluation/report.json"}), job="happy")

    thread = threading.Thread(target=kubelet, daemon=True)
    thread.start()
    seen = []
    final = client.wait("happy", timeout_s=45, poll_interval_s=0.2, callback=lambda j: seen.append(j.phase))
    thread.join(5)
    assert final.phase == Phase.SUCCEEDED and final.phase == "Succeeded"
    phases = [p for p in dict.fromkeys(seen) if p]
    assert phases[0] == "Pending" and phases[-1] == "Succeeded" and {"Training", "Evaluating"} <= set(phases)
    watches = [r for r in harness.api_server.stats()["requests"]
               if r["agent"] == "other" and r["verb"] == "watch" and r["resource"] == "kubetune.io/finetunejobs"]
    assert watches  # followed on a watch, not by polling
    assert client.evaluation("happy").metrics["loss"].delta == pytest.approx(-1.2)
    assert client.checkpoints("happy").output.claim_name == "happy-output"
    assert [j.name for j in client.list(phase="Succeeded")] == ["happy"]
    events = client.events("happy")
    assert {"Training", "Evaluating", "Succeeded"} <= {e.reason for e in events}
    assert all(e.time is not None and e.time.tzinfo for e in events)
    with pytest.raises(ApiError) as taken:
        client.create(job)
    assert taken.value.code == 409


@pytest.mark.timeout(60)
def test_a_failed_job_raises_its_failure_class_with_the_last_log_lines(emulated, tmp_path):
    harness, client = emulated
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(job_document("broken")))
    client.create(path)
    client.wait("broken", until="Pending", timeout_s=20)
    failing_worker(harness, "broken")
    with pytest.raises(errors.PermanentError) as failed:
        client.wait("broken", timeout_s=20)
    assert isinstance(failed.value, JobFailed) and failed.value.reason == "PermanentError"
    assert failed.value.message == "dataset: no column 'prompt'" and failed.value.worker == "broken-worker-0"
    assert failed.value.last_logs.splitlines()[-1] == "KeyError: 'prompt'"
    assert "KeyError: 'prompt'" in str(failed.value)
    assert client.wait("broken", until=("Failed",), timeout_s=5).phase == "Failed"


@pytest.mark.timeout(60)
def test_wait_times_out_and_a_missing_job_is_not_found(emulated, capsys):
    harness, client = emulated
    client.create(job_document("slow"))
    started = time.monotonic()
    with pytest.raises(TimeoutError) as timed_out:
        client.wait("slow", timeout_s=1.5, progress=True)
    assert 1.5 <= time.monotonic() - started < 6
    assert timed_out.value.job.name == "slow" and "slow is" in str(timed_out.value)
    assert "Pending" in capsys.readouterr().err  # the progress bar (tqdm, as in a notebook)
    with pytest.raises(JobNotFound):
        client.get("nope")
    with pytest.raises(JobNotFound):
        client.wait("nope", timeout_s=1)


@pytest.mark.timeout(60)
def test_logs_follow_a_worker_across_a_restart(emulated):
    harness, client = emulated
    api, pod = harness.api_server, "chatty-worker-0"
    client.create(job_document("chatty"))
    client.wait("chatty", until="Pending", timeout_s=20)
    set_worker_pod(harness, 0, container_status("running"), job="chatty")
    api.write_pod_log(NS, pod, "step 1\nstep 2\n")
    assert list(client.logs("chatty", tail_lines=1)) == ["step 2"]
    followed = []
    follower = threading.Thread(target=lambda: followed.extend(client.logs("chatty", follow=True)), daemon=True)
    follower.start()
    eventually(lambda: followed == ["step 1", "step 2"], 10, "the first container's lines")
    # The container crashes and restarts: the follower goes on with the new one.
    set_worker_pod(harness, 0, container_status("running", restarts=1, last=(1, "RuntimeError: boom")), job="chatty")
    api.restart_pod_log(NS, pod)
    api.write_pod_log(NS, pod, "resuming from checkpoint-5\n")
    eventually(lambda: followed[-1:] == ["resuming from checkpoint-5"], 10, "the restarted container's lines")
    assert list(client.logs("chatty", previous=True)) == ["step 1", "step 2"]
    # It fails for good: the follow ends once the job has.
    api.write_pod_log(NS, pod, "ValueError: bad data\n")
    failing_worker(harness, "chatty", restarts=1)
    api.end_pod_log(NS, pod)
    follower.join(20)
    assert not follower.is_alive()
    assert followed == ["step 1", "step 2", "resuming from checkpoint-5", "ValueError: bad data"]
    with pytest.raises(ApiError) as missing:
        list(client.logs("chatty", role="evaluator"))
    assert missing.value.code == 404


@pytest.mark.timeout(60)
def test_scale_suspend_resume_and_delete_change_what_the_operator_sees(emulated):
    harness, client = emulated
    client.create(job_document("elastic", resources={"nodes": 2, "elastic": ELASTIC}))
    eventually(lambda: harness.cluster.stateful_set(NS, "elastic-worker") and replicas(harness, "elastic") == 2,
               what="two workers")
    assert client.scale("elastic", 3).spec.resources.nodes == 3
    eventually(lambda: replicas(harness, "elastic") == 3, what="three workers")
    before = requests_of_users(harness)
    with pytest.raises(InvalidJob) as refused:
        client.scale("elastic", 5)
    assert [p.path for p in refused.value.problems] == ["spec.resources.nodes"]
    assert requests_of_users(harness) == before + 1  # read the job; nothing written
    client.suspend("elastic")
    assert client.wait("elastic", until="Suspended", timeout_s=20).phase == "Suspended"
    eventually(lambda: replicas(harness, "elastic") == 0, what="suspended to zero")
    client.resume("elastic")
    eventually(lambda: replicas(harness, "elastic") == 3, what="resumed")
    client.delete("elastic", wait=True)
    with pytest.raises(JobNotFound):
        client.get("elastic")
    eventually(lambda: not harness.objects("StatefulSet", "elastic"), what="its children deleted")
    with pytest.raises(JobNotFound):
        client.delete("elastic")


def test_an_invalid_job_is_refused_naming_its_fields_before_any_request(emulated):
    harness, client = emulated
    before = requests_of_users(harness)
    with pytest.raises(InvalidJob) as refused:
        client.create(job_document("invalid", resources={"nodes": "2"}, training={"learning_rat": 1.0e-3}))
    paths = [p.path for p in refused.value.problems]
    assert "spec.resources.nodes" in paths, refused.value.problems
    with pytest.raises(InvalidJob) as elsewhere:
        client.create({**job_document("elsewhere"), "metadata": {"name": "elsewhere", "namespace": "other"}})
    assert [p.path for p in elsewhere.value.problems] == ["metadata.namespace"]
    with pytest.raises(InvalidJob) as training:
        client.create(job_document("typo", training={"learning_rat": 1.0e-3}))
    assert [p.path for p in training.value.problems] == ["spec.training.learning_rat"]
    assert requests_of_users(harness) == before


def test_a_job_auto_cannot_fit_is_refused_by_create_as_validate_refuses_it(emulated, tmp_path):
    from model_shapes import LLAMA3_70B

    harness, client = emulated
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA3_70B))
    before = requests_of_users(harness)
    with pytest.raises(InvalidJob) as refused:
        client.create(job_document("huge", model={"source": str(model)}, training={
            "per_device_train_batch_size": 32, "max_length": 4096, "gradient_checkpointing": False},
            resources={"gpusPerNode": 1, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40S"}}))
    problem, = refused.value.problems
    assert problem.path == "spec.distributed.strategy" and "does not fit 1 GPU(s)" in str(problem)
    assert requests_of_users(harness) == before


def test_the_progress_bar_shows_in_ipython_only(monkeypatch):
    import types

    assert progress_display(None) is None
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: object()))
    display = progress_display(None)
    assert display is not None
    display.close()
    assert progress_display(False) is None


# --- on this machine ------------------------------------------------------------------------

def local_job(name: str) -> dict:
    """examples/quickstart.yaml, long enough (the tiny model takes 20-60 steps a second here)
    that it is still training a few seconds after its first checkpoint."""
    document = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"]["training"].update(max_steps=400, logging_steps=20)
    document["spec"]["checkpointing"] = {"everySteps": 20, "keep": 2}
    return document


@pytest.mark.timeout(300)
def test_the_same_on_this_machine_with_a_real_training_run_suspended_and_resumed(tmp_path):
    client = Client.local(tmp_path / "runs")
    created = client.create(local_job("local"))
    assert created.name == "local" and created.phase in (None, "Pending")
    with pytest.raises(ApiError) as taken:
        client.create(local_job("local"))
    assert taken.value.code == 409
    with pytest.raises(TimeoutError):
        client.wait("local", timeout_s=0.5)
    with pytest.raises(InvalidJob) as refused:
        client.scale("local", 1)  # not elastic
    assert [p.path for p in refused.value.problems] == ["spec.resources.nodes"]
    # Suspended after the first checkpoint (stopped as Ctrl-C does), resumed from it.
    eventually(lambda: client.checkpoints("local").last, 180, "the first checkpoint")
    suspended = client.suspend("local")
    assert suspended.phase == "Suspended"
    assert any(c.type == "Suspended" and c.status == "True" for c in suspended.status.conditions)
    client.resume("local")
    seen = []
    final = client.wait("local", timeout_s=240, poll_interval_s=0.5, callback=lambda j: seen.append(j.phase))
    assert final.phase == "Succeeded", (final.status.conditions, (tmp_path / "runs/local/run.log").read_text())
    assert "Training" in seen and "Evaluating" in seen
    metrics = client.evaluation("local").metrics
    assert metrics["loss"].tuned < metrics["loss"].base
    assert [job.name for job in client.list()] == ["local"]
    assert {"Suspended", "Succeeded", "Checkpoint"} <= {e.reason for e in client.events("local")}
    worker_log = list(client.logs("local", worker=0))
    assert any("resuming from checkpoint-" in line for line in worker_log), worker_log[-20:]
    assert list(client.logs("local", worker=1, follow=True, tail_lines=3)) == list(client.logs("local", worker=1))[-3:]
    assert list(client.logs("local", role="evaluator"))
    client.delete("local", remove_files=True)
    assert not (tmp_path / "runs" / "local").exists()
    with pytest.raises(JobNotFound):
        client.get("local")


@pytest.mark.timeout(300)
def test_the_python_client_example_runs(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "examples" / "python_client.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "python-client: Succeeded" in result.stdout
    assert "loss" in result.stdout and "exact_match" in result.stdout
