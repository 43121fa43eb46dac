"""One reconcile of one FineTuneJob: read the cluster, ask the core, write back. No decisions here."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from .. import contract
from ..api.models import TERMINAL_PHASES, FineTuneJob, FineTuneJobStatus
from ..api.validation import InvalidJob, parse_job
from ..contract.document import D
from ..contract.initialization import InitializationReport
from ..contract.progress import Progress, read_served
from ..lifecycle import (
    Action,
    Decision,
    Event,
    Observed,
    claim_pending,
    decide,
    evaluation_run,
    reads_claim,
    reads_progress,
    worker_pod,
    worker_set,
)
from ..lifecycle.conditions import ConditionType, is_true, seconds_since
from ..lifecycle.initializing import INITIALIZED_EVENTS
from ..render import RenderSettings, output_location, render_job, upstream_jobs
from ..render.evaluation import PUBLISHER
from ..render.generation import CONTAINER as GENERATION_CONTAINER
from ..render.generation import ROLE as GENERATION
from ..render.initializer import ROLE as INITIALIZER
from ..render.naming import (evaluation_job_name, generation_set_name, initializer_job_name, publish_job_name,
                             worker_set_name)
from ..render.pods import downloads
from ..render.sources import OutputLocation
from .cache import ClusterCache
from .cluster import FINE_TUNE_JOB, Cluster, merge_patch
from .metrics import OperatorMetrics

_LOCKS_LOCK = threading.Lock()
PostEvent = Callable[[dict[str, Any], str, str, str, str], bool]  # (job body, type, reason, message, name)


@dataclass
class OperatorContext:
    cluster: Cluster
    settings: RenderSettings = field(default_factory=RenderSettings)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    post_event: Optional[PostEvent] = None
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    progress_timeout: float = 1.0
    # Where reconciles read the cluster: the watch-fed cache when the operator runs, else the API.
    cache: Optional[ClusterCache] = None
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    # The parsed spec of each job, by (namespace, name): (uid, generation, job, problems).
    _parsed: dict[tuple[str, str], tuple[Any, Any, Optional[FineTuneJob], list[str]]] = field(default_factory=dict)
    # The children each job's spec renders to, by (namespace, name): (uid, generation, upstream
    # outputs, {action kind: ((kind, name), ...)}): a reconcile renders only when one is missing.
    _children: dict[tuple[str, str], tuple[Any, Any, Any, dict[str, tuple[tuple[str, str], ...]]]] = field(
        default_factory=dict)

    @property
    def reads(self) -> Cluster | ClusterCache:
        return self.cache if self.cache is not None else self.cluster

    def remember(self, kind: str, stored: Optional[dict[str, Any]]) -> None:
        """An object as the API server answered a write, into the cache at once."""
        if self.cache is not None and stored:
            self.cache.apply(kind, "MODIFIED", stored)

    def lock(self, namespace: str, name: str) -> threading.Lock:
        with _LOCKS_LOCK:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def parsed(self, body: dict[str, Any]) -> tuple[Optional[FineTuneJob], list[str]]:
        """The job's spec parsed and its rules checked once per generation, not per reconcile."""
        meta = body["metadata"]
        key, version = (meta.get("namespace", "default"), meta["name"]), (meta.get("uid"), meta.get("generation"))
        cached = self._parsed.get(key)
        if cached is None or cached[:2] != version or version[1] is None:
            try:
                job, problems = parse_job(body), []
            except InvalidJob as error:
                job, problems = None, [str(problem) for problem in error.problems]
            cached = self._parsed[key] = (*version, job, problems)
        return cached[2], cached[3]

    def children(self, job: FineTuneJob, upstream: dict[str, OutputLocation]) -> dict[str, tuple[tuple[str, str], ...]]:
        """(kind, name) of what each creating action makes, found by rendering once per generation."""
        meta = job.metadata
        key, version = (meta.namespace, meta.name), (meta.uid, meta.generation, sorted(upstream.items()))
        cached = self._children.get(key)
        if cached is None or cached[:3] != version or meta.generation is None:
            rendered = render_job(job, self.settings, upstream)
            made = {"ensure_training_objects": rendered.training_objects(),
                    "ensure_evaluation_job": [rendered.evaluation_job] if rendered.evaluation_job else [],
                    "ensure_publish_job": [rendered.publish_job] if rendered.publish_job else []}
            cached = self._children[key] = (*version, {action: tuple(
                (manifest["kind"], manifest["metadata"]["name"]) for manifest in manifests)
                for action, manifests in made.items()})
        return cached[3]

    def kept(self) -> dict[str, int]:
        """Per-job entries held in memory (besides the cache)."""
        return {"parsed specs": len(self._parsed), "children names": len(self._children),
                "job locks": len(self._locks)}

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a job that is gone."""
        self._parsed.pop((namespace, name), None)
        self._children.pop((namespace, name), None)
        self._locks.pop((namespace, name), None)
        self.metrics.forget(namespace, name)


def read_progress(pods: list[dict[str, Any]], timeout: float) -> Optional[Progress]:
    """Rank 0's /progress, through worker 0's pod IP; None while it cannot be reached."""
    first = next((p for p in pods if p["metadata"]["name"].endswith("-worker-0")), None)
    return _served(first, Progress, timeout)


def read_initialization(pods: list[dict[str, Any]], timeout: float) -> Optional[InitializationReport]:
    """What the running initializer pod has fetched so far; None while it cannot be reached."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    return _served(running[-1] if running else None, InitializationReport, timeout)


def _served(pod: Optional[dict[str, Any]], document: type[D], timeout: float) -> Optional[D]:
    """The document a pod serves on its progress port."""
    address = ((pod or {}).get("status") or {}).get("podIP")
    return read_served(document, address, contract.METRICS_PORT, timeout) if address else None


def upstream_statuses(context: OperatorContext, job: FineTuneJob) -> dict[str, Optional[FineTuneJobStatus]]:
    """The status of each job:// upstream (None: it does not exist)."""
    bodies = {name: context.reads.fine_tune_job(job.metadata.namespace, name) for name in upstream_jobs(job)}
    return {name: read_status(body) if body else None for name, body in bodies.items()}


def read_status(body: dict[str, Any]) -> FineTuneJobStatus:
    return FineTuneJobStatus.model_validate(body.get("status") or {})


def observe(context: OperatorContext, job: FineTuneJob, upstream: dict[str, Optional[FineTuneJobStatus]],
            status: FineTuneJobStatus) -> Observed:
    cluster, namespace, name = context.reads, job.metadata.namespace, job.metadata.name
    pods = cluster.pods(namespace, name, "worker")
    evaluation = cluster.batch_job(namespace, evaluation_job_name(name, job.spec.evaluation.digest()))
    publish = cluster.batch_job(namespace, publish_job_name(name)) if job.spec.output.publish else None
    claim = cluster.claim(namespace, output_location(job).claim_name) if reads_claim(status) else None
    return Observed(
        now=context.clock(),
        workers=worker_set(cluster.stateful_set(namespace, worker_set_name(name))),
        pods=tuple(worker_pod(pod) for pod in pods),
        evaluation=evaluation_run(evaluation, cluster.pods(namespace, name, "evaluator") if evaluation else []),
        publish=evaluation_run(publish, cluster.pods(namespace, name, PUBLISHER) if publish else [], PUBLISHER),
        upstream={upstream_name: status.phase if status is not None else None
                  for upstream_name, status in upstream.items()},
        progress=read_progress(pods, context.progress_timeout) if reads_progress(status) else None,
        claim_pending=claim_pending(claim),
        generation_pods=tuple(worker_pod(pod, GENERATION_CONTAINER) for pod in cluster.pods(namespace, name, GENERATION))
        if job.spec.generation else (),
        **_initialization(context, job, status),
    )


def _initialization(context: OperatorContext, job: FineTuneJob, status: FineTuneJobStatus) -> dict[str, Any]:
    """The initializer Job and its progress, while the job waits for it."""
    if not downloads(job) or is_true(status.conditions, ConditionType.INITIALIZED):
        return {}
    cluster, namespace, name = context.reads, job.metadata.namespace, job.metadata.name
    batch = cluster.batch_job(namespace, initializer_job_name(name))
    pods = cluster.pods(namespace, name, INITIALIZER) if batch else []
    return {"initialization": evaluation_run(batch, pods, INITIALIZER),
            "initialization_progress": read_initialization(pods, context.progress_timeout)}


def upstream_outputs(upstream: dict[str, Optional[FineTuneJobStatus]]) -> dict[str, OutputLocation]:
    """Where each job:// upstream wrote its model, as it reported in status.output."""
    return {name: OutputLocation.from_status(status.output)
            for name, status in upstream.items() if status and status.output}


# Actions that only add what is missing: safe before the decision is recorded.
CREATING = ("ensure_training_objects", "ensure_evaluation_job", "ensure_publish_job")


def apply(context: OperatorContext, job: FineTuneJob, actions: list[Action],
          upstream: dict[str, Optional[FineTuneJobStatus]]) -> None:
    cluster, reads, namespace = context.cluster, context.reads, job.metadata.namespace
    for action in actions:
        if action.kind in CREATING:
            _ensure(context, job, action.kind, upstream_outputs(upstream))
        elif action.kind in SCALED_SETS:
            set_name = SCALED_SETS[action.kind](job.metadata.name)
            current = reads.stateful_set(namespace, set_name)
            if current and current["spec"].get("replicas") != action.replicas:
                context.remember("StatefulSet", cluster.patch_stateful_set(
                    namespace, set_name, {"spec": {"replicas": action.replicas}}))
        elif action.kind == "restart_workers":
            for pod in reads.pods(namespace, job.metadata.name, "worker"):
                cluster.delete_pod(namespace, pod["metadata"]["name"])
        elif action.kind == "delete_job":
            cluster.delete_job(namespace, job.metadata.name)
        elif action.kind in BATCH_JOB_NAMES:
            cluster.delete_batch_job(namespace, BATCH_JOB_NAMES[action.kind](job))


# The StatefulSet each scaling action names.
SCALED_SETS: dict[str, Callable[[str], str]] = {"scale_workers": worker_set_name,
                                                "scale_generation": generation_set_name}


# The batch Job each deleting action names; the next reconcile creates it anew under that name.
BATCH_JOB_NAMES: dict[str, Callable[[FineTuneJob], str]] = {
    "delete_evaluation_job": lambda job: evaluation_job_name(job.metadata.name, job.spec.evaluation.digest()),
    "delete_publish_job": lambda job: publish_job_name(job.metadata.name),
}


def _ensure(context: OperatorContext, job: FineTuneJob, action: str, upstream: dict[str, OutputLocation]) -> None:
    """Create the children the cache does not hold. A 409 is normal: the cache may lag the API."""
    namespace = job.metadata.namespace
    if all(context.reads.get(kind, namespace, name) for kind, name in context.children(job, upstream)[action]):
        return
    # Children also go missing when their job was just deleted (garbage collection can reach the
    # cache before the job's own DELETED event): ask the API server before making any anew.
    live = context.cluster.fine_tune_job(namespace, job.metadata.name)
    if live is None or live["metadata"].get("uid") != job.metadata.uid:
        return
    rendered = render_job(job, context.settings, upstream)
    if action == "ensure_evaluation_job":
        _current_config(context, rendered.config_map)
    manifests = {"ensure_training_objects": rendered.training_objects(), "ensure_evaluation_job": [
        rendered.evaluation_job], "ensure_publish_job": [rendered.publish_job]}[action]
    for manifest in manifests:
        if context.reads.get(manifest["kind"], namespace, manifest["metadata"]["name"]) is None:
            context.remember(manifest["kind"], context.cluster.create(manifest))


def _current_config(context: OperatorContext, config_map: dict[str, Any]) -> None:
    """The ConfigMap as the spec renders it now: an evaluation of an edited spec.evaluation reads
    its new settings from it (the workers, done by then, read it no more)."""
    meta = config_map["metadata"]
    stored = context.reads.get("ConfigMap", meta["namespace"], meta["name"])
    if stored is not None and stored.get("data") != config_map["data"]:
        context.remember("ConfigMap", context.cluster.patch_config_map(meta["namespace"], meta["name"],
                                                                       {"data": config_map["data"]}))


def reconcile(context: OperatorContext, namespace: str, name: str) -> Optional[Decision]:
    """Bring one job one step closer to its spec, and record where it stands."""
    with context.lock(namespace, name), context.metrics.reconcile_seconds.time():
        try:
            # Read under the lock: a trigger's copy may predate another reconcile.
            current = context.reads.fine_tune_job(namespace, name)
            if current is None:
                context.forget(namespace, name)
                return None
            return _reconcile(context, current, namespace, name)
        except Exception:
            context.metrics.reconcile_errors.labels(namespace).inc()
            raise  # the work queue tries again after a backoff


def _reconcile(context: OperatorContext, body: dict[str, Any], namespace: str, name: str) -> Decision:
    status = read_status(body)
    job, problems = context.parsed(body)
    upstream = upstream_statuses(context, job) if job else {}
    observed = observe(context, job, upstream, status) if job else Observed(now=context.clock())
    decision = decide(job, problems, status, observed, body["metadata"].get("generation"))
    # In this order, so that a failure anywhere repeats, and never undoes, what came before:
    # the Events (named after the status they change, so a repeat is not posted twice) and the
    # children that must exist, then the decision recorded in status, and only then what
    # destroys (workers scaled to zero after training, whose exit codes are then gone).
    _post_events(context, body, decision)
    if job is not None:
        apply(context, job, [a for a in decision.actions if a.kind in CREATING], upstream)
    patch = merge_patch(body.get("status") or {}, decision.wire_status())
    if patch:
        context.remember(FINE_TUNE_JOB, context.cluster.patch_job_status(namespace, name, patch))
    if job is not None:
        apply(context, job, [a for a in decision.actions if a.kind not in CREATING], upstream)
    _report(context, body, decision)
    return decision


def event_name(body: dict[str, Any], event: Event, index: int) -> str:
    """The same for the same Event decided from the same stored status: a reconcile retried
    after a failed write decides it again, and its post is answered 409."""
    meta = body["metadata"]
    status = json.dumps(body.get("status") or {}, sort_keys=True)
    key = f"{meta.get('uid')}/{status}/{index}/{event.reason}"
    return f"{meta['name']}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _post_events(context: OperatorContext, body: dict[str, Any], decision: Decision) -> None:
    post = context.post_event or context.cluster.post_event
    for index, event in enumerate(decision.events):
        post(body, event.type, event.reason, event.message, event_name(body, event, index))


def _report(context: OperatorContext, body: dict[str, Any], decision: Decision) -> None:
    namespace, name = body["metadata"].get("namespace", "default"), body["metadata"]["name"]
    if context.metrics.observe_phase(namespace, name, decision.phase) and decision.phase in TERMINAL_PHASES:
        started = decision.status.start_time
        if started:
            seconds = seconds_since(started, context.clock())
            context.metrics.job_duration.labels(decision.phase).observe(max(seconds, 0))
    context.metrics.observe_status(namespace, name, decision.status)
    if any(event.reason in INITIALIZED_EVENTS for event in decision.events):
        context.metrics.observe_initialization(decision.status)
    if decision.status.evaluation:
        context.metrics.observe_evaluation(namespace, name, decision.status.evaluation.metrics)
