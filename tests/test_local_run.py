"""`kubetune run`: the quickstart on this machine, end to end, through the real command."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO

RUN_TIMEOUT = 900


def kubetune_run(*args, cwd):
    command = [str(Path(sys.executable).parent / "kubetune"), "run", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quickstart")
    result = kubetune_run(str(REPO / "examples" / "quickstart.yaml"), "--run-dir", str(folder / "run"), cwd=folder)
    return folder / "run", result


def test_quickstart_succeeds_with_metrics_against_its_base(quickstart):
    run_dir, result = quickstart
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "FineTuneJob Succeeded" in result.stdout
    for metric in ("loss", "perplexity", "exact_match"):
        assert f"{metric} " in result.stdout and "base" in result.stdout
    report = json.loads(next((run_dir / "output").glob("**/evaluation/report.json")).read_text())
    assert report["metrics"]["loss"]["tuned"] < report["metrics"]["loss"]["base"]
    record = json.loads(next((run_dir / "output").glob("**/COMPLETED.json")).read_text())
    assert record["globalStep"] == 40


def test_quickstart_model_loads(quickstart):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = quickstart
    model_dir = next((run_dir / "output").glob("**/model/config.json")).parent
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.vocab_size == len(tokenizer)


def test_quickstart_model_has_its_card_with_the_evaluation(quickstart):
    from huggingface_hub import ModelCard

    run_dir, _ = quickstart
    card = ModelCard.load(next((run_dir / "output").glob("**/model/README.md")))
    assert "kubetune" in card.data.tags and "sft" in card.data.tags
    assert "- Steps: 40" in card.text and "| loss | " in card.text and "| exact_match | " in card.text
    assert "Verdict: **NoGates**" in card.text


def test_running_again_does_not_train_again(quickstart):
    run_dir, _ = quickstart
    again = kubetune_run(str(REPO / "examples" / "quickstart.yaml"), "--run-dir", str(run_dir), cwd=run_dir.parent)
    assert again.returncode == 0, again.stdout[-3000:]
    logs = [p.read_text() for p in sorted((run_dir / "pods").glob("quickstart-worker-*/log.txt"))]
    assert len(logs) == 2 and all("already finished training at step 40" in log for log in logs)


def test_ctrl_c_stops_every_process_and_running_again_resumes(tmp_path):
    import signal
    import time

    import psutil

    run_dir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "kubetune"), "run", str(REPO / "examples" / "quickstart.yaml"),
               "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not list((run_dir / "output").glob("**/checkpoint-20/trainer_state.json")):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    started = {p.pid for p in psutil.Process(process.pid).children(recursive=True)}
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output[-3000:]
    assert "Last checkpoint:" in output and "checkpoint-" in output.split("Last checkpoint:")[1]
    assert not [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]

    again = kubetune_run(str(REPO / "examples" / "quickstart.yaml"), "--run-dir", str(run_dir), cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    log = (run_dir / "pods" / "quickstart-worker-0" / "log.txt").read_text()
    assert "resuming from checkpoint-" in log


def test_invalid_job_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "examples" / "quickstart.yaml").read_text().replace("method: sft", "method: ppo"))
    result = kubetune_run(str(bad), cwd=tmp_path)
    assert result.returncode == 2 and "spec.method" in result.stderr
    assert not (tmp_path / "kubetune-runs").exists()
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    result = kubetune_run(str(binary), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == f"{binary}: not a text file (UTF-8)"


def write_job(folder, name, **spec):
    from conftest import MINIMAL_JOB

    document = json.loads(json.dumps(MINIMAL_JOB))
    document["metadata"] = {"name": name, "namespace": "ml"}
    document["spec"].update(spec)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


STALL_TRAINING = {"max_steps": 160, "per_device_train_batch_size": 4, "max_length": 64, "logging_steps": 10}


def test_a_frozen_rank_is_restarted_by_the_watchdog_and_the_job_succeeds(tmp_path):
    from local_pods import freeze_pod

    job = write_job(tmp_path, "frozen", training=STALL_TRAINING, resources={"nodes": 2},
                    checkpointing={"everySteps": 20, "keep": 2}, evaluation={"enabled": False},
                    runPolicy={"progressDeadlineSeconds": 15, "backoffLimit": 2})
    run_dir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "kubetune"), "run", str(job), "--run-dir", str(run_dir)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not list((run_dir / "output").glob("**/checkpoint-20/trainer_state.json")):
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()[0][-3000:]
            time.sleep(0.2)
        frozen_at = time.monotonic()
        freeze_pod("frozen-worker-1")
        output, _ = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-4000:]
    stalled = [line for line in output.splitlines() if line.startswith("Stalled: ")]
    assert stalled and "did not advance for" in stalled[0] and "restarting the workers" in stalled[0], output[-3000:]
    assert time.monotonic() - frozen_at > 15
    record = json.loads(next((run_dir / "output").glob("**/COMPLETED.json")).read_text())
    assert record["globalStep"] == STALL_TRAINING["max_steps"]
    assert "resuming from checkpoint-" in (run_dir / "pods" / "frozen-worker-0" / "log.txt").read_text()


def test_an_out_of_memory_worker_is_retried_once_then_fails_saying_what_to_lower(tmp_path):
    job = write_job(tmp_path, "oom", training={"max_steps": 5, "per_device_train_batch_size": 4, "max_length": 64},
                    evaluation={"enabled": False})
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "faults"), "KUBETUNE_TEST_OOM_AT_STEP": "1",
           "COLUMNS": "400"}
    result = subprocess.run([str(Path(sys.executable).parent / "kubetune"), "run", str(job), "--run-dir",
                             str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT)
    assert result.returncode == 1, result.stdout[-4000:]
    restarts = [line for line in result.stdout.splitlines() if line.startswith("WorkerRestarted: ")]
    assert restarts and "oom-worker-0 restarted after OutOfMemory" in restarts[0]
    assert "OutOfMemory: a worker ran out of memory twice" in " ".join(result.stdout.split())
    assert "per_device_train_batch_size" in result.stdout
    assert "last lines of oom-worker-0" in result.stdout and "OutOfMemoryError" in result.stdout
