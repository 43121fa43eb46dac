"""An elastic job resized for real: `kubetune run` starts it on 2 nodes (real torchrun agents,
c10d rendezvous, gloo), `kubetune scale` takes it to 1 after a checkpoint and back to 2, and it
succeeds with its planned step count and a loss curve that goes on where it was. With DDP,
with ZeRO-2, whose partitioned checkpoint is converted to a universal one at each resize, and
with FSDP (gloo on the CPU), whose checkpoint holds gathered states."""

import json

import pytest
import yaml
from click.testing import CliRunner

from conftest import with_spec
from elastic_trial import elastic_job, run_trial
from kubetune.cli import main

MAX_STEPS = 400
pytestmark = pytest.mark.timeout(1200)


@pytest.mark.parametrize("strategy", ["ddp", "zero2", "fsdp"])
def test_an_elastic_job_resized_from_2_to_1_to_2_nodes_succeeds_with_its_plan(tmp_path, strategy):
    trial = run_trial(elastic_job(tmp_path, strategy, MAX_STEPS, logging_steps=10), tmp_path / "run")
    assert trial.returncode == 0, trial.output[-4000:]
    resized = [line for line in trial.output.splitlines() if line.startswith("Resized: ")]
    assert [line.split(";")[0] for line in resized] == [
        "Resized: resized from 2 to 1 nodes", "Resized: resized from 1 to 2 nodes"], trial.output[-3000:]
    assert "WorkerRestarted" not in trial.output  # the pod a scale-down removes is not a failure
    # Worker 0 holds rank 0 at every size: its /progress reported the checkpoints.
    before_resize = trial.output[:trial.output.index("Resized: ")]
    assert "Checkpoint: saved checkpoint-" in before_resize, trial.output[-3000:]

    log = trial.worker_log  # worker 0's: these notes come from rank 0 alone
    down, up = trial.resizes
    assert f"checkpoint-{down.resumed_from} was saved by 2 process(es), resuming on 1" in log
    assert f"checkpoint-{up.resumed_from} was saved by 1 process(es), resuming on 2" in log
    assert "1 process(es): gradient_accumulation_steps 2 keeps the global batch at 16" in log
    assert 0 < down.resumed_from < up.resumed_from < MAX_STEPS
    if strategy == "zero2":
        assert log.count("to a universal checkpoint in") == 2, log[-3000:]

    record = json.loads(next((trial.run_dir / "output").glob("**/COMPLETED.json")).read_text())
    assert record["globalStep"] == MAX_STEPS
    losses = {entry["step"]: entry["loss"] for entry in trial.log_history() if "loss" in entry}
    assert sorted(losses) == list(range(10, MAX_STEPS + 1, 10))  # every logging step once: the plan held
    for resumed in (down.resumed_from, up.resumed_from):
        before, after = losses[resumed], losses[resumed + 10]
        assert after < before * 1.2, losses  # it went on from the checkpoint
    assert max(loss for step, loss in losses.items() if step > down.resumed_from) < losses[10] / 2, losses


def scale(run_dir, nodes):
    return CliRunner().invoke(main, ["scale", str(run_dir), str(nodes)])


def test_kubetune_scale_applies_the_rules_of_a_cluster_update(tmp_path):
    assert scale(tmp_path, 2).exit_code == 2  # no run here
    fixed = with_spec(resources={"nodes": 2})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(fixed))
    refused = scale(tmp_path, 1)
    assert refused.exit_code == 2 and "spec.resources.nodes: nodes can change while a job runs only when elastic" \
        in refused.output
    elastic = with_spec(resources={"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 2}})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(elastic))
    beyond = scale(tmp_path, 3)
    assert beyond.exit_code == 2 and "elastic.minNodes..elastic.maxNodes" in beyond.output
    assert not (tmp_path / "nodes").exists()
    done = scale(tmp_path, 1)
    assert done.exit_code == 0 and "scaling from 2 to 1 nodes" in done.output
    assert (tmp_path / "nodes").read_text() == "1"
