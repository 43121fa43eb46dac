"""The operator's Prometheus metrics (kubetune_ prefix, Prometheus naming conventions)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from ..api.models import FineTuneJobStatus
from ..contract.evaluation import MetricValue
from ..lifecycle.conditions import is_true


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.jobs = Gauge("kubetune_jobs", "FineTuneJobs by phase.", ["namespace", "phase"], registry=self.registry)
        self.transitions = Counter("kubetune_job_phase_transitions_total", "Phase changes of FineTuneJobs.",
                                   ["namespace", "phase"], registry=self.registry)
        self.reconcile_seconds = Histogram("kubetune_reconcile_duration_seconds", "Time to reconcile one job.",
                                           registry=self.registry)
        self.reconcile_errors = Counter("kubetune_reconcile_errors_total", "Reconciles that raised an error.",
                                        ["namespace"], registry=self.registry)
        self.job_duration = Histogram("kubetune_job_duration_seconds", "Start to finish of a FineTuneJob.",
                                      ["phase"], buckets=(60, 300, 900, 1800, 3600, 7200, 21600, 86400, 259200),
                                      registry=self.registry)
        self.evaluation = Gauge("kubetune_evaluation_metric", "Evaluation results of finished jobs.",
                                ["namespace", "job", "metric", "model"], registry=self.registry)
        # Per job, for alerts (the chart's PrometheusRule).
        self.job_phase = Gauge("kubetune_job_phase", "1 for the phase each FineTuneJob is in.",
                               ["namespace", "job", "phase"], registry=self.registry)
        self.job_restarts = Gauge("kubetune_job_restarts", "Worker restarts of each FineTuneJob (status.workers).",
                                  ["namespace", "job"], registry=self.registry)
        self.job_stalled = Gauge("kubetune_job_stalled", "1 while a FineTuneJob's training makes no progress.",
                                 ["namespace", "job"], registry=self.registry)
        self.resync_time = Gauge("kubetune_resync_last_success_timestamp_seconds",
                                 "When the operator last reconciled every job (Unix time).", registry=self.registry)
        # What the operator holds in memory, so a leak shows (objects cached, per-job entries).
        self.kept = Gauge("kubetune_operator_kept", "Objects the operator keeps in memory, by what they are.",
                          ["what"], registry=self.registry)
        self.queue_depth = Gauge("kubetune_operator_queue_depth", "Jobs waiting for a reconcile.",
                                 registry=self.registry)
        self.initializer_bytes = Counter(
            "kubetune_initializer_bytes", "Bytes of job sources the initializers fetched (outcome downloaded) or "
            "found in the cache (outcome cached), by source scheme.", ["source_scheme", "outcome"],
            registry=self.registry)
        self._phase_of: dict[tuple[str, str], str] = {}
        self._evaluated: dict[tuple[str, str], set[tuple[str, str]]] = {}  # (metric, model) series per job

    def observe_phase(self, namespace: str, name: str, phase: str) -> bool:
        """Record a job's phase; True when it changed."""
        key = (namespace, name)
        previous = self._phase_of.get(key)
        if previous == phase:
            return False
        if previous:
            self.jobs.labels(namespace, previous).dec()
            self.job_phase.remove(namespace, name, previous)
        self.jobs.labels(namespace, phase).inc()
        self.job_phase.labels(namespace, name, phase).set(1)
        self.transitions.labels(namespace, phase).inc()
        self._phase_of[key] = phase
        return True

    def observe_status(self, namespace: str, name: str, status: FineTuneJobStatus) -> None:
        self.job_restarts.labels(namespace, name).set(status.workers.restarts if status.workers else 0)
        self.job_stalled.labels(namespace, name).set(1 if is_true(status.conditions, "Stalled") else 0)

    def forget(self, namespace: str, name: str) -> None:
        previous = self._phase_of.pop((namespace, name), None)
        if previous:
            self.jobs.labels(namespace, previous).dec()
            self.job_phase.remove(namespace, name, previous)
        for gauge in (self.job_restarts, self.job_stalled):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass
        for metric, model in self._evaluated.pop((namespace, name), set()):
            self.evaluation.remove(namespace, name, metric, model)

    def observe_initialization(self, status: FineTuneJobStatus) -> None:
        """Once per job, when its initializer's report arrives."""
        for source in status.initialization.sources if status.initialization else []:
            outcome, count = ("cached", source.bytes_done) if source.cached else ("downloaded", source.downloaded_bytes)
            self.initializer_bytes.labels(source.location.kind, outcome).inc(count)

    def observe_evaluation(self, namespace: str, name: str, metrics: dict[str, MetricValue]) -> None:
        for metric, value in metrics.items():
            for model, number in (("tuned", value.tuned), ("base", value.base)):
                if number is not None:
                    self.evaluation.labels(namespace, name, metric, model).set(number)
                    self._evaluated.setdefault((namespace, name), set()).add((metric, model))
