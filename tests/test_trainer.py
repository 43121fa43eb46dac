"""The trainer entrypoint: every TRL method trains for real on the CPU with builtin://tiny."""

import json
import math
import os
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import with_spec
from local_pods import kill_pod, start_pod, wait_all, write_local_config
from kubetune.contract.output import CompletionRecord, is_complete, newest_complete_checkpoint
from kubetune.contract.methods import REWARD_METHODS
from kubetune.contract.progress import Progress, TrainingNumbers
from trainer_entrypoint.train.worker import train

SMALL = {"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "max_length": 64}
ONLINE = {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
          "max_completion_length": 8, "logging_steps": 1}
METHODS = {
    "sft": {"training": SMALL},
    "dpo": {"training": SMALL},
    # Shorter than logging_steps: the loss reported is the run's mean.
    "kto": {"training": {**SMALL, "logging_steps": 10}},
    # A trainer that counts no tokens reports samples/s.
    "reward": {"training": {**SMALL, "include_num_input_tokens_seen": False}},
    "grpo": {"training": ONLINE, "rewards": [{"function": "answer_match"}, {"function": "think_format_reward"}]},
    "rloo": {"training": ONLINE, "rewards": [{"function": "answer_match"}]},
}


def load_saved(model_dir, method):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    model_class = AutoModelForSequenceClassification if method == "reward" else AutoModelForCausalLM
    return model_class.from_pretrained(model_dir)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_trains_and_saves_a_loadable_model(method, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBETUNE_METRICS_PORT", "0")
    _, config = write_local_config(with_spec(method=method, **METHODS[method]), tmp_path, uid=f"uid-{method}")
    summary = train(config)

    assert summary["globalStep"] == METHODS[method]["training"]["max_steps"]
    assert math.isfinite(summary["trainLoss"])
    model = load_saved(config.output.model, method)
    assert sum(p.numel() for p in model.parameters()) > 0
    record = CompletionRecord.read(Path(config.output.completion_record), f"uid-{method}")
    assert record.global_step == summary["globalStep"]
    reported = TrainingNumbers.model_validate(summary["progress"])
    assert math.isfinite(reported.loss) and reported.step == summary["globalStep"]
    if method == "kto":
        assert reported.loss == pytest.approx(summary["trainLoss"])
    rate, unit = reported.throughput()
    assert rate > 0 and unit == ("samples/s" if method == "reward" else "tok/s")
    if method in REWARD_METHODS:  # what an RL run's users watch
        assert math.isfinite(reported.reward) and reported.reward_std >= 0 and math.isfinite(reported.entropy)
        assert set(reported.rewards) == {reward["function"] for reward in METHODS[method]["rewards"]}
        assert 0 < reported.completion_mean_length <= ONLINE["max_completion_length"]
    else:
        assert reported.reward is None and reported.rewards is None


def test_lora_adapter_is_saved_and_loads_with_transformers(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBETUNE_METRICS_PORT", "0")
    document = with_spec(method="sft", training=SMALL, peft={"r": 4, "alpha": 8})
    _, config = write_local_config(document, tmp_path)
    train(config)
    model_dir = config.output.model
    assert os.path.exists(os.path.join(model_dir, "adapter_config.json"))
    model = load_saved(model_dir, "sft")
    assert any("lora" in name for name, _ in model.named_parameters())


def digest_of_saved_model(model_dir):
    """The same digest the ranks compute, over the saved (consolidated) weights."""
    import hashlib

    model = load_saved(model_dir, "sft")
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters(), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(parameter.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("strategy", ["ddp", "zero2", "zero3"])
def test_rendered_env_forms_a_real_two_node_group(strategy, tmp_path):
    """Two pods' processes, started with exactly the env rendering gives each (ordinal and
    127.0.0.1 substituted), form one gloo group and end with identical weights."""
    document = with_spec(training={**SMALL, "max_steps": 4}, resources={"nodes": 2},
                         distributed={"strategy": strategy}, checkpointing={"everySteps": 2})
    objects, config = write_local_config(document, tmp_path)
    digests = tmp_path / "digests"
    digests.mkdir()
    extra = {"KUBETUNE_WEIGHT_DIGEST_DIR": str(digests)}
    pods = [start_pod(objects, ordinal, tmp_path, f"pod-{ordinal}.log", extra) for ordinal in range(2)]
    codes = wait_all(pods, timeout=480)
    logs = [(tmp_path / f"pod-{ordinal}.log").read_text() for ordinal in range(2)]
    assert codes == [0, 0], logs[0][-3000:]

    summaries = [json.loads(log.split("kubetune: training finished: ")[1].splitlines()[0]) for log in logs]
    assert sorted(s["rank"] for s in summaries) == [0, 1]
    assert all(s["worldSize"] == 2 and s["globalStep"] == 4 for s in summaries)
    rank_digests = {json.loads(f.read_text())["sha256"] for f in digests.iterdir()}
    assert len(list(digests.iterdir())) == 2 and len(rank_digests) == 1
    # The saved model is the full model, consolidated from the shards under ZeRO-3.
    assert digest_of_saved_model(config.output.model) == rank_digests.pop()


def test_killed_worker_resumes_from_its_last_complete_checkpoint(tmp_path):
    steps = 150
    document = with_spec(training={**SMALL, "max_steps": steps, "logging_steps": 10},
                         checkpointing={"everySteps": 10, "keep": 3})
    objects, config = write_local_config(document, tmp_path)
    checkpoints = Path(config.output.checkpoints)
    first = start_pod(objects, 0, tmp_path, "first.log")
    deadline = time.monotonic() + 240
    while newest_complete_checkpoint(checkpoints) is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "training ended before a checkpoint could be interrupted"
    kill_pod(first)
    resumed_at = newest_complete_checkpoint(checkpoints)
    assert resumed_at is not None and int(resumed_at.name.split("-")[1]) < steps
    # A save the kill cut short, newer than every complete one, must be skipped.
    torn = checkpoints / f"checkpoint-{steps + 10}"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    assert not is_complete(torn)

    second = start_pod(objects, 0, tmp_path, "second.log")
    assert wait_all([second], timeout=300) == [0]
    log = (tmp_path / "second.log").read_text()
    resumed_from = log.split("kubetune: resuming from ")[1].split()[0]
    assert resumed_from == resumed_at.name
    assert "removed incomplete checkpoint" in log and not torn.exists()
    record = CompletionRecord.read(Path(config.output.completion_record), "uid-test")
    assert record.global_step == steps
    state = json.loads((checkpoints / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == steps


def test_a_restart_after_success_exits_at_once_without_training(tmp_path):
    objects, config = write_local_config(with_spec(training=SMALL), tmp_path)
    assert wait_all([start_pod(objects, 0, tmp_path, "first.log")], timeout=300) == [0]
    started = time.monotonic()
    assert wait_all([start_pod(objects, 0, tmp_path, "again.log")], timeout=60) == [0]
    elapsed = time.monotonic() - started
    log = (tmp_path / "again.log").read_text()
    assert "already finished training at step 3" in log
    assert "torch.distributed" not in log and "resuming" not in log
    assert elapsed < 20


def test_wrong_dataset_columns_fail_permanently_naming_column_and_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"question": "q", "reply": "a"}) + "\n")
    document = with_spec(method="dpo", dataset={"source": str(data)}, training=SMALL)
    objects, config = write_local_config(document, tmp_path)
    started = time.monotonic()
    assert wait_all([start_pod(objects, 0, tmp_path, "pod.log")], timeout=300) == [3]
    report = termination_report(tmp_path)
    message = report.message
    assert report.reason == "PermanentError"
    assert "chosen" in message and "rejected" in message and str(data / "train.jsonl") in message
    assert "\n" not in message.strip()
    assert time.monotonic() - started < 120


def test_missing_model_fails_permanently_naming_the_source(tmp_path):
    document = with_spec(model={"source": str(tmp_path / "no-such-model")}, training=SMALL)
    objects, config = write_local_config(document, tmp_path)
    assert wait_all([start_pod(objects, 0, tmp_path, "pod.log")], timeout=300) == [3]
    message = termination_report(tmp_path).message
    assert str(tmp_path / "no-such-model") in message and "does not exist" in message


def test_rank_zero_serves_progress_and_prometheus_metrics(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    document = with_spec(training={**SMALL, "max_steps": 200, "logging_steps": 5},
                         checkpointing={"everySteps": 1000})
    objects, config = write_local_config(document, tmp_path)
    pod = start_pod(objects, 0, tmp_path, "pod.log", {"KUBETUNE_METRICS_PORT": str(port)})
    progress, metrics = None, ""
    deadline = time.monotonic() + 240
    try:
        while pod.poll() is None and time.monotonic() < deadline:
            try:
                reply = urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=2)
                progress = Progress.decode(reply.read())
                if progress.step >= 20 and progress.loss is not None:
                    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                    break
            except OSError:
                pass
            time.sleep(0.2)
    finally:
        assert wait_all([pod], timeout=300) == [0]
    assert progress and progress.total_steps == 200 and 0 < progress.progress <= 1
    assert progress.tokens_per_second > 0 and math.isfinite(progress.loss) and progress.phase == "training"
    # auto on a CPU: ddp, reported with why; no GPU peak, so no MFU.
    assert progress.distributed.strategy == "ddp" and "no GPUs" in progress.distributed.reason
    assert progress.mfu is None
    for name in ["kubetune_training_step", "kubetune_training_total_steps", "kubetune_training_loss",
                 "kubetune_training_learning_rate", "kubetune_training_tokens_per_second",
                 "kubetune_training_progress_ratio", "kubetune_training_epoch"]:
        assert f'{name}{{job="demo",namespace="ml"}}' in metrics, name


# --- failures say what they are -----------------------------------------------------------------

FAULTS = Path(__file__).resolve().parent / "faults"


def termination_report(root, ordinal=0):
    from kubetune.contract.failure import FailureReport

    return FailureReport.read((root / f"pod-{ordinal}" / "termination-log").read_text())


def test_a_pasted_eos_token_the_tokenizer_lacks_fails_once_naming_the_key(tmp_path):
    objects, _ = write_local_config(with_spec(training={**SMALL, "eos_token": "<|im_end|>"}), tmp_path)
    assert wait_all([start_pod(objects, 0, tmp_path, "pod.log")], timeout=300) == [3]
    report = termination_report(tmp_path)
    assert report.reason == "PermanentError"
    assert report.message.startswith("spec.training.eos_token: SFTTrainer refused it: The specified `eos_token`")
    assert "<|im_end|>" in report.last_logs  # the pod's own last lines come along


def test_an_out_of_memory_error_is_reported_with_its_class_and_what_to_lower(tmp_path):
    objects, _ = write_local_config(with_spec(training=SMALL), tmp_path)
    extra = {"PYTHONPATH": str(FAULTS), "KUBETUNE_TEST_OOM_AT_STEP": "1"}
    assert wait_all([start_pod(objects, 0, tmp_path, "pod.log", extra)], timeout=300) == [1]  # retryable
    report = termination_report(tmp_path)
    assert report.reason == "OutOfMemory" and "CUDA out of memory" in report.message
    assert "per_device_train_batch_size" in report.message
    assert "OutOfMemoryError" in report.last_logs and "ChildFailedError" not in report.message


def test_report_to_tensorboard_trains_and_writes_event_files_under_the_output(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBETUNE_METRICS_PORT", "0")
    _, config = write_local_config(with_spec(training={**SMALL, "report_to": ["tensorboard"]}), tmp_path)
    assert train(config)["globalStep"] == SMALL["max_steps"]
    assert list(Path(config.output.dir).glob("**/events.out.tfevents.*"))


@pytest.mark.timeout(360)
def test_the_grpo_example_trains_on_builtin_tiny(tmp_path):
    """examples/grpo.yaml as written (TRL's accuracy_reward, which needs math-verify, a weighted
    format reward, LoRA, DAPO loss, generation with vLLM colocated), with the tiny model and data,
    on the CPU, for two steps. In a process of its own: vLLM sets up torch.distributed and the
    rank's env, which must not leak into the tests after it."""
    import yaml

    from conftest import REPO

    document = yaml.safe_load((REPO / "examples" / "grpo.yaml").read_text())
    spec = document["spec"]
    spec["model"] = {"source": "builtin://tiny"}
    spec["dataset"] = {"source": "builtin://tiny"}
    spec["training"].update(max_steps=2, num_generations=4, max_completion_length=8, per_device_train_batch_size=4,
                            gradient_accumulation_steps=1, logging_steps=1)
    spec.update(distributed={"strategy": "ddp"}, resources={"nodes": 1}, evaluation={"enabled": False})
    objects, config = write_local_config(document, tmp_path)
    assert [reward.function for reward in config.rewards] == ["accuracy_reward", "think_format_reward"]
    pod = start_pod(objects, 0, tmp_path, "pod.log", {"KUBETUNE_METRICS_PORT": "0"})
    assert wait_all([pod], timeout=300) == [0]
    log = (tmp_path / "pod.log").read_text()
    assert "kubetune: generating with vLLM (colocate)" in log and "kubetune: vLLM weight sync 2 " in log
    assert CompletionRecord.read(Path(config.output.completion_record), "uid-test").global_step == 2
