"""`kubetune get|describe|logs|wait|scale|suspend|resume|delete` against the emulated API
server with the real operator, through a kubeconfig file (as kubectl reads one)."""

import json
import threading

import pytest
import yaml
from click.testing import CliRunner

from kubetune import Client
from kubetune.cli import main
from operator_harness import eventually
from test_client import ELASTIC, emulated_cluster, failing_worker
from test_operator import NS, container_status, job_document, replicas, set_evaluation, set_worker_pod

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(harness, client, run): `run(*args)` is `kubetune ARGS --kubeconfig CONFIG`."""
    with emulated_cluster(tmp_path_factory.mktemp("kube")) as (harness, config):
        def run(*args):
            return CliRunner().invoke(main, [*args, "--kubeconfig", config])

        yield harness, Client(kubeconfig=config), run


def succeeded(harness, client, name):
    """A job trained and evaluated (the pods' and Job's states written as the kubelet would)."""
    client.create(job_document(name))
    client.wait(name, until="Pending", timeout_s=20)
    set_worker_pod(harness, 0, container_status("running"), job=name)
    client.wait(name, until="Training", timeout_s=20)
    set_worker_pod(harness, 0, container_status("running", restarts=1, last=(0, "")), job=name)
    client.wait(name, until="Evaluating", timeout_s=20)
    summary = {"metrics": {"loss": {"tuned": 1.2, "base": 2.4, "tunedInterval": [1.1, 1.3],
                                    "deltaInterval": [-1.4, -1.0]}},
               "report": "/output/evaluation/report.json"}
    eventually(lambda: [j for j in harness.objects("Job", name)
                        if j["metadata"]["labels"]["kubetune.io/role"] == "evaluator"], what="the evaluation Job")
    set_evaluation(harness, "Complete", json.dumps(summary), job=name)
    return client.wait(name, timeout_s=20)


def test_get_lists_with_the_crds_columns_and_describe_says_why_workers_wait(cluster):
    harness, client, run = cluster
    client.create(job_document("stuck", resources={"nodes": 2}))
    client.wait("stuck", until="Pending", timeout_s=20)
    set_worker_pod(harness, 0, container_status("running"), job="stuck")
    pulling = 'Back-off pulling image "registry.example/trainer:9"'
    set_worker_pod(harness, 1, container_status("ImagePullBackOff", message=pulling), job="stuck")
    eventually(lambda: client.get("stuck").status.conditions[1].reason == "ImagePullBackOff", what="the reason")

    listed = run("get")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.output.splitlines()
    assert header.split()[:4] == ["NAME", "METHOD", "PHASE", "PROGRESS"] and header.split()[-1] == "AGE"
    row = next(r for r in rows if r.startswith("stuck "))
    assert "sft" in row and "Initializing" in row and "ImagePullBackOff" in row
    wide = run("get", "stuck", "-o", "wide")
    assert "NODES" in wide.output and "STRATEGY" in wide.output
    everywhere = run("get", "-A")
    assert everywhere.output.split()[:2] == ["NAMESPACE", "NAME"] and f"{NS} " in everywhere.output
    as_json = json.loads(run("get", "stuck", "-o", "json").output)
    assert as_json["metadata"]["name"] == "stuck" and as_json["status"]["phase"] == "Initializing"
    assert yaml.safe_load(run("get", "-o", "yaml").output)["kind"] == "List"
    missing = run("get", "nope")
    assert missing.exit_code == 1 and 'finetunejob "nope" not found' in missing.output

    described = run("describe", "stuck")
    assert described.exit_code == 0, described.output
    text = described.output
    assert "Phase:        Initializing" in text and "Conditions:" in text
    assert "stuck-worker-1" in text and f"ImagePullBackOff: {pulling}" in text  # the pod's waiting reason
    assert "Events:" in text and "Pending" in text


def test_describe_shows_the_evaluation_and_where_the_model_went_and_a_failure_with_its_lines(cluster):
    harness, client, run = cluster
    succeeded(harness, client, "done")
    text = run("describe", "done").output
    assert "Phase:        Succeeded" in text
    assert "verdict NoGates" in text and "report /output/evaluation/report.json" in text
    loss = next(line for line in text.splitlines() if line.strip().startswith("loss "))
    assert "1.2 [1.1, 1.3]" in loss and "2.4" in loss and "-1.2 [-1.4, -1]" in loss
    assert "Model:        claim done-output, folder model" in text

    client.create(job_document("crashed"))
    client.wait("crashed", until="Pending", timeout_s=20)
    failing_worker(harness, "crashed")
    client.wait("crashed", until="Failed", timeout_s=20)
    text = run("describe", "crashed").output
    assert "Failure:      PermanentError: dataset: no column 'prompt'" in text
    assert "worker crashed-worker-0, exit code 3" in text and "    KeyError: 'prompt'" in text


def test_wait_exits_0_when_succeeded_1_when_failed_and_124_on_timeout(cluster):
    harness, client, run = cluster
    client.create(job_document("waited"))
    client.wait("waited", until="Pending", timeout_s=20)
    threading.Thread(target=lambda: failing_worker(harness, "waited"), daemon=True).start()
    failed = run("wait", "waited", "--timeout", "30s")
    assert failed.exit_code == 1, failed.output
    assert "waited failed: PermanentError: dataset: no column 'prompt'" in failed.output
    assert "KeyError: 'prompt'" in failed.output  # the last lines
    assert run("wait", "waited", "--for", "failed").exit_code == 0

    succeeded(harness, client, "passed")
    done = run("wait", "passed", "--timeout", "1m")
    assert done.exit_code == 0 and "finetunejob.kubetune.io/passed Succeeded" in done.output

    client.create(job_document("pending"))
    timed_out = run("wait", "pending", "--for", "Training", "--timeout", "1s")
    assert timed_out.exit_code == 124 and "timed out" in timed_out.output
    assert run("wait", "pending", "--for", "Sleeping").exit_code == 2


def test_logs_print_a_pods_lines_and_follow_until_the_job_ends(cluster):
    harness, client, run = cluster
    client.create(job_document("talker"))
    client.wait("talker", until="Pending", timeout_s=20)
    set_worker_pod(harness, 0, container_status("running"), job="talker")
    harness.api_server.write_pod_log(NS, "talker-worker-0", "loading\nstep 1 loss 4.2\n")
    printed = run("logs", "talker")
    assert printed.exit_code == 0 and printed.output == "loading\nstep 1 loss 4.2\n"
    assert run("logs", "talker", "--tail", "1").output == "step 1 loss 4.2\n"
    harness.api_server.write_pod_log(NS, "talker-worker-0", "ValueError: bad row\n")
    failing_worker(harness, "talker")
    harness.api_server.end_pod_log(NS, "talker-worker-0")
    followed = run("logs", "talker", "-f")
    assert followed.exit_code == 0 and followed.output.splitlines()[-1] == "ValueError: bad row"
    missing = run("logs", "talker", "--role", "evaluator")
    assert missing.exit_code == 1 and "no evaluator pod" in missing.output


def test_scale_suspend_resume_and_delete_a_cluster_job(cluster):
    harness, client, run = cluster
    client.create(job_document("resized", resources={"nodes": 2, "elastic": ELASTIC}))
    eventually(lambda: harness.cluster.stateful_set(NS, "resized-worker") and replicas(harness, "resized") == 2,
               what="two workers")
    scaled = run("scale", "resized", "3")
    assert scaled.exit_code == 0 and "resized: scaling from 2 to 3 nodes" in scaled.output
    eventually(lambda: replicas(harness, "resized") == 3, what="three workers")
    refused = run("scale", "resized", "9")
    assert refused.exit_code == 2 and "spec.resources.nodes" in refused.output
    assert run("suspend", "resized").exit_code == 0
    eventually(lambda: replicas(harness, "resized") == 0, what="suspended")
    assert run("resume", "resized").exit_code == 0
    eventually(lambda: replicas(harness, "resized") == 3, what="resumed")
    deleted = run("delete", "resized", "--wait")
    assert deleted.exit_code == 0 and 'finetunejob.kubetune.io "resized" deleted' in deleted.output
    assert run("get", "resized").exit_code == 1


def test_without_a_cluster_the_commands_say_so(tmp_path):
    result = CliRunner().invoke(main, ["get", "--kubeconfig", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "kubeconfig" in result.output
