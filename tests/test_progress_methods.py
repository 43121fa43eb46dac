"""Every method's rank 0 reports loss and a rate with its unit: tokens/s where the trainer counts
tokens, else samples/s; status and the live line say which. (The real TRL runs of every method
are in test_trainer.py.)"""

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from conftest import with_spec
from kubetune.api.models import FineTuneJobStatus, ProgressStatus
from kubetune.api.validation import parse_job
from kubetune.contract.progress import Progress, TrainingNumbers
from kubetune.lifecycle import Observed, WorkerPod, WorkerSet, decide
from kubetune.local.console import RunDisplay, summary_table, throughput_text
from trainer_entrypoint.train.progress import ProgressCallback, ProgressState

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
CONTROL = SimpleNamespace(should_evaluate=False, should_save=False)
# 4 per device x 2 accumulated x 2 ranks: 16 samples an optimizer step.
ARGS = SimpleNamespace(per_device_train_batch_size=4, gradient_accumulation_steps=2, world_size=2)


def following():
    state = ProgressState("demo", "ml")
    return state, ProgressCallback(state)


def step(callback, number, tokens=0):
    callback.on_step_end(ARGS, SimpleNamespace(global_step=number, max_steps=10, epoch=number / 10,
                                               num_input_tokens_seen=tokens), CONTROL)
    return callback._last[0]


def test_a_trainer_that_counts_no_tokens_reports_samples_per_second_and_its_gauge():
    state, callback = following()
    callback.count_flops(3.0e9, 989e12)
    started = step(callback, 1)
    ended = step(callback, 3)
    snapshot = state.snapshot()
    assert snapshot.samples_per_second == pytest.approx(2 * 16 / (ended - started))
    assert snapshot.tokens_per_second is None and snapshot.mfu is None  # MFU counts tokens
    assert snapshot.throughput() == (snapshot.samples_per_second, "samples/s")
    registry = CollectorRegistry()
    registry.register(state)
    assert b'kubetune_training_samples_per_second{job="demo",namespace="ml"}' in generate_latest(registry)


def test_a_trainer_that_counts_tokens_reports_tokens_per_second_only():
    state, callback = following()
    started = step(callback, 1, tokens=100)
    ended = step(callback, 2, tokens=600)
    snapshot = state.snapshot()
    assert snapshot.throughput() == (pytest.approx(500 / (ended - started)), "tok/s")
    assert snapshot.samples_per_second is None


def test_a_run_shorter_than_logging_steps_reports_its_mean_loss_and_rate_at_the_end():
    state, callback = following()
    step(callback, 1)
    callback.on_log(ARGS, None, CONTROL, logs={"train_loss": 0.69, "train_runtime": 2.0,
                                               "train_samples_per_second": 8.0, "train_steps_per_second": 0.5})
    assert state.snapshot().loss == 0.69 and state.snapshot().throughput() == (8.0, "samples/s")


def test_the_mean_at_the_end_replaces_neither_the_last_step_loss_nor_a_measured_rate():
    state, callback = following()
    step(callback, 1, tokens=100)
    step(callback, 2, tokens=600)
    callback.on_log(ARGS, None, CONTROL, logs={"loss": 0.5, "learning_rate": 1e-4})
    measured = state.snapshot().tokens_per_second
    callback.on_log(ARGS, None, CONTROL, logs={"train_loss": 0.69, "train_samples_per_second": 8.0})
    snapshot = state.snapshot()
    assert snapshot.loss == 0.5 and snapshot.tokens_per_second == measured and snapshot.samples_per_second is None


def test_a_first_logging_step_reports_the_trainers_mean_token_rate_until_one_is_measured():
    state, callback = following()
    step(callback, 1, tokens=100)
    callback.on_log(ARGS, None, CONTROL, logs={"loss": 2.0, "train_tokens_per_second": 40.0})
    assert state.snapshot().throughput() == (40.0, "tok/s")


def test_progress_from_an_older_trainer_without_samples_is_read_and_a_newer_one_keeps_its_unit():
    older = Progress.decode('{"step": 3, "tokensPerSecond": 900.0, "phase": "training"}')
    assert older.samples_per_second is None and older.throughput() == (900.0, "tok/s")
    newer = Progress.decode('{"step": 3, "samplesPerSecond": 12.5, "phase": "training", "future": 1}')
    assert TrainingNumbers.of(newer).wire() == {"step": 3, "samplesPerSecond": 12.5}
    assert ProgressStatus.model_validate({"step": 3}).throughput() is None


def test_status_mirrors_samples_per_second_beside_the_loss():
    reported = Progress(step=5, total_steps=20, loss=0.69, samples_per_second=12.5, phase="training")
    decision = decide(parse_job(with_spec(method="dpo")), [], FineTuneJobStatus(phase="Training"),
                      Observed(NOW, WorkerSet(1), (WorkerPod("demo-worker-0", running=True, ready=True, uid="u"),),
                               progress=reported))
    progress = decision.wire_status()["progress"]
    assert progress["samplesPerSecond"] == 12.5 and progress["loss"] == 0.69 and "tokensPerSecond" not in progress


@pytest.mark.parametrize("numbers, text", [
    ({"tokens_per_second": 4730.0}, "4.73e+03 tok/s"),
    ({"samples_per_second": 12.5}, "12.5 samples/s"),
    ({}, "rate -"),
])
def test_the_rate_is_shown_with_its_unit(numbers, text):
    assert throughput_text(ProgressStatus(step=2, **numbers)) == text


def test_the_live_line_and_the_summary_label_samples_per_second():
    console = Console(record=True, width=160, force_terminal=False)
    decision = SimpleNamespace(phase="Training", events=[], status=FineTuneJobStatus(
        phase="Training", progress=ProgressStatus(step=5, total_steps=20, loss=0.69, samples_per_second=12.5)))
    with RunDisplay(console) as display:
        display.tick(decision)
    line = console.export_text()
    assert "loss 0.69" in line and "12.5 samples/s" in line and "tok/s" not in line
    console.print(summary_table(decision, None, "/model", 1.0, None))
    table = console.export_text()
    assert "throughput (last)" in table and "12.5 samples/s" in table


# A GRPO log line as TRL 1.16 writes it (trl/trainer/grpo_trainer.py's metrics), trimmed.
GRPO_LOGS = {"loss": 0.01, "learning_rate": 1e-6, "num_tokens": 512.0, "completions/mean_length": 7.5,
             "completions/max_length": 8.0, "rewards/answer_match/mean": 0.25, "rewards/answer_match/std": 0.4,
             "rewards/think_format_reward/mean": 0.0, "reward": 0.25, "reward_std": 0.43, "kl": 0.002,
             "entropy": 3.9, "clip_ratio/low_mean": 0.0}


def test_an_rl_run_reports_its_reward_per_function_kl_entropy_and_length_with_gauges():
    state, callback = following()
    callback.on_log(ARGS, SimpleNamespace(), CONTROL, logs=GRPO_LOGS)
    snapshot = state.snapshot()
    assert (snapshot.reward, snapshot.reward_std, snapshot.kl, snapshot.entropy, snapshot.completion_mean_length) \
        == (0.25, 0.43, 0.002, 3.9, 7.5)
    assert snapshot.rewards == {"answer_match": 0.25, "think_format_reward": 0.0}
    registry = CollectorRegistry()
    registry.register(state)
    exported = generate_latest(registry).decode()
    assert 'kubetune_training_reward{job="demo",namespace="ml"} 0.25' in exported
    assert 'kubetune_training_function_reward{function="answer_match",job="demo",namespace="ml"} 0.25' in exported
    wired = ProgressStatus.of(snapshot).model_dump(by_alias=True, exclude_none=True)
    assert wired["rewardStd"] == 0.43 and wired["completionMeanLength"] == 7.5 and "rewards" in wired


def test_a_method_that_logs_no_rewards_reports_none():
    state, callback = following()
    callback.on_log(ARGS, SimpleNamespace(), CONTROL, logs={"loss": 0.7, "learning_rate": 1e-5, "rewards/chosen": 0.1})
    snapshot = state.snapshot()
    assert snapshot.reward is None and snapshot.rewards is None  # DPO's rewards/chosen is not a reward function


def test_the_live_line_shows_an_rl_runs_reward():
    assert throughput_text(ProgressStatus(step=2, tokens_per_second=900.0, reward=0.25)) == "900 tok/s  reward 0.25"


def test_the_generation_rate_reaches_progress_its_gauge_and_status():
    state, callback = following()
    logs = {**GRPO_LOGS, "kubetune/generation_tokens_per_second": 850.0}
    callback.on_log(ARGS, SimpleNamespace(), CONTROL, logs=logs)
    snapshot = state.snapshot()
    assert snapshot.generation_tokens_per_second == 850.0
    registry = CollectorRegistry()
    registry.register(state)
    exported = generate_latest(registry).decode()
    assert 'kubetune_training_generation_tokens_per_second{job="demo",namespace="ml"} 850.0' in exported
    wired = ProgressStatus.of(snapshot).model_dump(by_alias=True, exclude_none=True)
    assert wired["generationTokensPerSecond"] == 850.0


def test_the_generation_step_is_timed_without_the_weight_sync_for_all_ranks():
    """TRL 1.16's generation step (_generate_single_turn), as GRPO (ids, logprobs) and RLOO (ids)
    return it, with a 0.2 s weight sync to vLLM inside that the rate leaves out."""
    import time

    from kubetune.contract.progress import GENERATION_RATE_LOG_KEY
    from trainer_entrypoint.train.generation_rate import GenerationMeter

    for returned in (lambda ids: (ids, None), lambda ids: ids):
        logged = []
        vllm = SimpleNamespace(sync_weights=lambda: time.sleep(0.2))

        def generate(prompts, *_, vllm=vllm, returned=returned):
            vllm.sync_weights()
            time.sleep(0.1)
            return returned([[1] * 8 for _ in prompts])

        trainer = SimpleNamespace(use_vllm=True, vllm_generation=vllm, _generate_single_turn=generate,
                                  accelerator=SimpleNamespace(num_processes=2),
                                  _log_metric=lambda name, value: logged.append((name, value)))
        assert GenerationMeter(trainer).install()
        trainer._generate_single_turn([[5, 6]] * 4)
        [(name, rate)] = logged
        # 32 tokens in about 0.1 s of generation on this rank; two ranks generate side by side.
        assert name == GENERATION_RATE_LOG_KEY and 2 * 32 / 0.2 < rate <= 2 * 32 / 0.1
