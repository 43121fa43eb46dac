"""Rank 0's progress: a TrainerCallback that follows training, served as Prometheus metrics on
/metrics and as the contract's Progress document on /progress (port contract.METRICS_PORT)
for the operator to read.
"""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from transformers import TrainerCallback

from kubetune.contract.plan import mfu
from kubetune.contract.progress import PROGRESS_PATH, THROUGHPUT_UNITS, Progress, rl_numbers

from ..serving import serve_routes

# Progress fields exported as gauges, by metric name (the help text is the field's description).
GAUGES = {
    "kubetune_training_step": "step",
    "kubetune_training_total_steps": "total_steps",
    "kubetune_training_epoch": "epoch",
    "kubetune_training_loss": "loss",
    "kubetune_training_learning_rate": "learning_rate",
    "kubetune_training_tokens_per_second": "tokens_per_second",
    "kubetune_training_samples_per_second": "samples_per_second",
    "kubetune_training_progress_ratio": "progress",
    "kubetune_training_eta_seconds": "eta_seconds",
    "kubetune_training_mfu_ratio": "mfu",
    "kubetune_training_reward": "reward",
    "kubetune_training_reward_std": "reward_std",
    "kubetune_training_completion_mean_length": "completion_mean_length",
    "kubetune_training_kl": "kl",
    "kubetune_training_entropy": "entropy",
    "kubetune_training_generation_tokens_per_second": "generation_tokens_per_second",
}
FUNCTION_REWARD_GAUGE = "kubetune_training_function_reward"  # labelled by reward function


# The trainer's log keys for its mean rate since training began, by the field each fills while no
# step-to-step rate exists (a one-step run). Samples/s arrives only at the end of training.
MEAN_RATE_KEYS = {"tokens_per_second": "train_tokens_per_second", "samples_per_second": "train_samples_per_second"}
assert set(MEAN_RATE_KEYS) == set(THROUGHPUT_UNITS)


def samples_per_step(args) -> int:
    """Training samples one optimizer step takes, all ranks together."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def logged_loss(logs: dict[str, Any], reported: Progress) -> Optional[float]:
    """The step's loss; a run shorter than logging_steps logs only its mean, at the end."""
    loss = logs.get("loss")
    return logs.get("train_loss") if loss is None and reported.loss is None else loss


def mean_rate(logs: dict[str, Any], reported: Progress) -> dict[str, float]:
    """The trainer's mean rate, while no step-to-step rate is reported."""
    if reported.throughput() is not None:
        return {}
    return next(({field: logs[key]} for field, key in MEAN_RATE_KEYS.items() if logs.get(key)), {})


class ProgressState:
    """What rank 0 knows about the run; updated by the callback, read by the HTTP server."""

    def __init__(self, job: str, namespace: str):
        self.labels = {"job": job, "namespace": namespace}
        self._lock = threading.Lock()
        self._progress = Progress()

    def update(self, **values: Any) -> None:
        with self._lock:
            changes = {k: v for k, v in values.items() if v is not None}
            self._progress = self._progress.model_copy(update=changes)

    def snapshot(self) -> Progress:
        with self._lock:
            return self._progress

    def collect(self):
        snapshot = self.snapshot()
        for name, field in GAUGES.items():
            value = getattr(snapshot, field)
            if value is not None:
                gauge = GaugeMetricFamily(name, Progress.model_fields[field].description, labels=list(self.labels))
                gauge.add_metric(list(self.labels.values()), float(value))
                yield gauge
        if snapshot.rewards:
            gauge = GaugeMetricFamily(FUNCTION_REWARD_GAUGE, Progress.model_fields["rewards"].description,
                                      labels=[*self.labels, "function"])
            for function, value in snapshot.rewards.items():
                gauge.add_metric([*self.labels.values(), function], float(value))
            yield gauge


class ProgressCallback(TrainerCallback):
    def __init__(self, progress: ProgressState):
        self.progress = progress
        self._started = 0.0
        self._start_step: Optional[int] = None
        self._last: Optional[tuple[float, int, int]] = None  # (time, tokens, step) at the previous step
        self._flops_per_token: Optional[float] = None
        self._peak_flops: Optional[float] = None

    def count_flops(self, flops_per_token: Optional[float], peak_flops: Optional[float]) -> None:
        """Report MFU next to tokens/s (on a GPU whose peak the plan's table knows)."""
        self._flops_per_token, self._peak_flops = flops_per_token, peak_flops

    def _mfu(self, tokens_per_second: Optional[float]) -> Optional[float]:
        if tokens_per_second is None or not self._flops_per_token or not self._peak_flops:
            return None
        return mfu(tokens_per_second, self._flops_per_token, self._peak_flops)

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.monotonic()
        self.progress.update(phase="training", total_steps=state.max_steps, step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if self._start_step is None:
            # Taken at the first step, not at on_train_begin: a resumed run's state is restored
            # after on_train_begin, and rates and ETA count from where this run started.
            self._start_step = state.global_step - 1
        rate = self._rate(args, state, now)
        total = state.max_steps or None
        eta = None
        if total and state.global_step:
            elapsed = now - self._started
            eta = elapsed / max(state.global_step - self._start_step, 1) * (total - state.global_step)
        # The Trainer evaluates, then saves, right after this callback: say so, so the stall
        # watchdog gives them more time.
        phase = "evaluating" if control.should_evaluate else "checkpointing" if control.should_save else "training"
        self.progress.update(step=state.global_step, epoch=state.epoch, mfu=self._mfu(rate.get("tokens_per_second")),
                             phase=phase, progress=(state.global_step / total) if total else None, eta_seconds=eta,
                             **rate)

    def _rate(self, args, state, now: float) -> dict[str, float]:
        """Since the previous step: tokens/s where the trainer counts tokens (every TRL trainer does
        with include_num_input_tokens_seen, GRPO and RLOO always), else samples/s."""
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        previous, self._last = self._last, (now, tokens, state.global_step)
        if previous is None or now <= previous[0] or tokens < previous[1]:
            return {}
        seconds = now - previous[0]
        if tokens:
            return {"tokens_per_second": (tokens - previous[1]) / seconds}
        return {"samples_per_second": (state.global_step - previous[2]) * samples_per_step(args) / seconds}

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs, reported = logs or {}, self.progress.snapshot()
        self.progress.update(loss=logged_loss(logs, reported), learning_rate=logs.get("learning_rate"),
                             **mean_rate(logs, reported), **rl_numbers(logs))

    def on_evaluate(self, args, state, control, **kwargs):
        self.progress.update(phase="checkpointing" if control.should_save else "training")

    def on_save(self, args, state, control, **kwargs):
        self.progress.update(checkpoint=f"checkpoint-{state.global_step}", phase="training")

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.update(phase="saving", step=state.global_step, progress=1.0, eta_seconds=0.0)


def serve(progress: ProgressState, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the metrics and progress server in a daemon thread; port 0 picks a free port."""
    registry = CollectorRegistry()
    registry.register(progress)
    return serve_routes({"/metrics": lambda: (generate_latest(registry), "text/plain; version=0.0.4"),
                         PROGRESS_PATH: lambda: (progress.snapshot().encode().encode(), "application/json")},
                        port, host, "kubetune-progress")
