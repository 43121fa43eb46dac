"""Rank 0's progress: a TrainerCallback that follows training, served as Prometheus metrics on
/metrics and as JSON on /progress (port contract.METRICS_PORT) for the operator to read.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from transformers import TrainerCallback

GAUGES = {
    # progress key: (metric name, help)
    "step": ("kubetune_training_step", "Optimizer steps completed."),
    "totalSteps": ("kubetune_training_total_steps", "Optimizer steps the run will take."),
    "epoch": ("kubetune_training_epoch", "Fractional epoch reached."),
    "loss": ("kubetune_training_loss", "Training loss at the last logging step."),
    "learningRate": ("kubetune_training_learning_rate", "Learning rate at the last logging step."),
    "tokensPerSecond": ("kubetune_training_tokens_per_second", "Input tokens per second, all ranks."),
    "progress": ("kubetune_training_progress_ratio", "step / totalSteps."),
    "etaSeconds": ("kubetune_training_eta_seconds", "Estimated seconds until training ends."),
}


class Progress:
    """What rank 0 knows about the run; updated by the callback, read by the HTTP server."""

    def __init__(self, job: str, namespace: str):
        self.labels = {"job": job, "namespace": namespace}
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"phase": "starting", "step": 0}

    def update(self, **values: Any) -> None:
        with self._lock:
            self._state.update({k: v for k, v in values.items() if v is not None})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def collect(self):
        snapshot = self.snapshot()
        for key, (name, help_text) in GAUGES.items():
            if isinstance(snapshot.get(key), (int, float)):
                gauge = GaugeMetricFamily(name, help_text, labels=list(self.labels))
                gauge.add_metric(list(self.labels.values()), float(snapshot[key]))
                yield gauge


class ProgressCallback(TrainerCallback):
    def __init__(self, progress: Progress):
        self.progress = progress
        self._started = 0.0
        self._start_step: Optional[int] = None
        self._last: Optional[tuple[float, int]] = None  # (time, tokens) at the previous step

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.monotonic()
        self.progress.update(phase="training", totalSteps=state.max_steps, step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        now, tokens = time.monotonic(), int(getattr(state, "num_input_tokens_seen", 0) or 0)
        if self._start_step is None:
            # Taken at the first step, not at on_train_begin: a resumed run's state is restored
            # after on_train_begin, and rates and ETA count from where this run started.
            self._start_step = state.global_step - 1
        rate = None
        if self._last and now > self._last[0] and tokens >= self._last[1]:
            rate = (tokens - self._last[1]) / (now - self._last[0])
        self._last = (now, tokens)
        total = state.max_steps or None
        eta = None
        if total and state.global_step:
            elapsed = now - self._started
            eta = elapsed / max(state.global_step - self._start_step, 1) * (total - state.global_step)
        self.progress.update(step=state.global_step, epoch=state.epoch, tokensPerSecond=rate,
                             progress=(state.global_step / total) if total else None, etaSeconds=eta)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        self.progress.update(loss=logs.get("loss"), learningRate=logs.get("learning_rate"))

    def on_save(self, args, state, control, **kwargs):
        self.progress.update(checkpoint=f"checkpoint-{state.global_step}")

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.update(phase="saving", step=state.global_step, progress=1.0, etaSeconds=0.0)


def serve(progress: Progress, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the metrics and progress server in a daemon thread; port 0 picks a free port."""
    registry = CollectorRegistry()
    registry.register(progress)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/metrics"):
                body, kind = generate_latest(registry), "text/plain; version=0.0.4"
            elif self.path.startswith("/progress"):
                body, kind = json.dumps(progress.snapshot()).encode(), "application/json"
            elif self.path.startswith("/healthz"):
                body, kind = b"ok", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the training log readable
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="kubetune-progress").start()
    return server
