"""`kubetune run`: a FineTuneJob on this machine, driven by the operator's own lifecycle.

The job is rendered exactly as the operator renders it; each tick observes the local "pods"
(processes), asks the pure lifecycle what to do, and applies its actions as the StatefulSet
and Job controllers would: scale workers, restart exited workers (restartPolicy Always), run
the evaluation Job's pod (retried up to its backoffLimit, failed at once on exit code 3).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from .. import contract
from ..api.models import TERMINAL_PHASES, FineTuneJob, FineTuneJobStatus
from ..contract.config import TrainerConfig
from ..contract.failure import LAST_LOG_LINES
from ..contract.output import CompletionRecord, newest_complete_checkpoint
from ..contract.document import D
from ..contract.initialization import InitializationReport
from ..contract.progress import Progress, read_served
from ..lifecycle import Action, Decision, EvaluationRun, Observed, Termination, WorkerPod, WorkerSet, decide
from ..render import RenderedJob, render_job
from ..yamlio import dump_all
from .pods import LocalPod, RunFolders, local_pod, local_ports

TICK_SECONDS = 1.0
LAST_CALL_SECONDS = 10
JOB_FILE = "job.yaml"  # the job as it runs, for `kubetune scale`
NODES_FILE = "nodes"  # the node count `kubetune scale` asks for
# The job with its status after every tick, and its Events, as the operator would write them:
# what a client reads of a local run.
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"


def job_uid(folders: RunFolders) -> str:
    """Stable per run folder, so running the same command again resumes (the completion record names it)."""
    path = folders.root / "uid"
    if not path.exists():
        folders.root.mkdir(parents=True, exist_ok=True)
        path.write_text(str(uuid.uuid4()))
    return path.read_text().strip()


@dataclass
class LocalBatchJob:
    """A batch Job's pod here, as the Job controller runs it: started once, started again after a
    failure up to the Job's backoffLimit, failed for good on exit code 3."""

    manifest: Optional[dict[str, Any]]
    pod: Optional[LocalPod] = None
    attempts: int = 0

    @property
    def retries(self) -> int:
        return self.manifest["spec"]["backoffLimit"] if self.manifest else 0

    def start(self, make_pod: Callable[[dict[str, Any], str], LocalPod]) -> None:
        if self.pod is None and self.manifest:
            self.pod = make_pod(self.manifest["spec"]["template"]["spec"], f"{self.manifest['metadata']['name']}-pod")
            self.pod.start()
            self.attempts = 1

    def retry(self) -> None:
        if self.pod and self.pod.poll() not in (None, 0, contract.EXIT_PERMANENT) and self.attempts <= self.retries:
            self.attempts += 1
            self.pod.start()

    def observed(self) -> Optional[EvaluationRun]:
        if self.pod is None:
            return None
        code = self.pod.poll()
        failed = code not in (None, 0) and (code == contract.EXIT_PERMANENT or self.attempts > self.retries)
        return EvaluationRun(succeeded=code == 0, failed=failed, message=self.pod.termination_message(),
                             pod=LocalCluster.observed_pod(self.pod))


@dataclass
class LocalCluster:
    """The job's children as local processes, observed and changed the way the operator does."""

    job: FineTuneJob
    objects: RenderedJob
    folders: RunFolders
    cache: Path
    ports: dict[int, int] = field(default_factory=dict)
    workers: dict[int, LocalPod] = field(default_factory=dict)
    replicas: int = 0
    generation: dict[int, LocalPod] = field(default_factory=dict)  # the generation server's pods
    evaluation: LocalBatchJob = field(default_factory=lambda: LocalBatchJob(None))
    publishing: LocalBatchJob = field(default_factory=lambda: LocalBatchJob(None))
    initialization: LocalBatchJob = field(default_factory=lambda: LocalBatchJob(None))
    overrides: dict[str, str] = field(default_factory=dict)  # env every pod gets on this machine
    failed_pod: Optional[LocalPod] = None  # the last worker seen exiting non-zero

    def _pod(self, template: dict[str, Any], name: str, ordinal: Optional[int]) -> LocalPod:
        pod = local_pod(template, name, self.job.metadata.namespace, ordinal, self.folders, self.cache, self.ports)
        pod.env.update(self.overrides)
        return pod

    def _worker(self, ordinal: int) -> LocalPod:
        template = self.objects.stateful_set["spec"]["template"]["spec"]
        pod = self._pod(template, f"{self.objects.stateful_set['metadata']['name']}-{ordinal}", ordinal)
        if "PET_RDZV_ENDPOINT" in pod.env:
            # Every pod here has the endpoint's address, so each would try to host the c10d store:
            # worker 0 hosts it, as its DNS name makes it do in a cluster. Peers start within
            # seconds of each other on one machine, so a rendezvous need not wait the default 30 s
            # for latecomers once enough nodes are in.
            pod.env["PET_RDZV_CONF"] += f",is_host={int(ordinal == 0)},last_call_timeout={LAST_CALL_SECONDS}"
            # The rendezvous ranks nodes by address: in a cluster worker 0's name sorts first and it
            # holds rank 0 (and serves /progress); here each pod gets a loopback address of its own.
            pod.env["PET_LOCAL_ADDR"] = f"127.0.0.{ordinal + 1}"
        return pod

    def _generation_pod(self, ordinal: int) -> LocalPod:
        manifest = self.objects.generation_stateful_set
        return self._pod(manifest["spec"]["template"]["spec"], f"{manifest['metadata']['name']}-{ordinal}", ordinal)

    def scale(self, replicas: int) -> None:
        _scale(self.workers, self._worker, replicas)
        self.replicas = replicas

    def __post_init__(self) -> None:
        self.evaluation = LocalBatchJob(self.objects.evaluation_job)
        self.publishing = LocalBatchJob(self.objects.publish_job)
        self.initialization = LocalBatchJob(self.objects.initializer_job)

    def _batch_pod(self, template: dict[str, Any], name: str) -> LocalPod:
        return self._pod(template, name, None)

    def restart_workers(self) -> None:
        """What deleting the worker pods does: each process tree killed, a new pod started in its place."""
        for ordinal, pod in list(self.workers.items()):
            pod.kill()
            self.workers[ordinal] = self._worker(ordinal)
            self.workers[ordinal].start()

    def apply(self, action: Action) -> None:
        if action.kind == "ensure_training_objects":
            self.initialization.start(self._batch_pod)
        elif action.kind == "scale_workers" and action.replicas is not None:
            self.scale(action.replicas)
        elif action.kind == "scale_generation" and action.replicas is not None:
            _scale(self.generation, self._generation_pod, action.replicas)
        elif action.kind == "restart_workers":
            self.restart_workers()
        elif action.kind == "ensure_evaluation_job":
            self.evaluation.start(self._batch_pod)
        elif action.kind == "ensure_publish_job":
            self.publishing.start(self._batch_pod)

    def restart_exited(self) -> None:
        """What the kubelet and the Job controller do after the lifecycle has seen an exit."""
        for pod in list(self.workers.values()) + list(self.generation.values()):
            if pod.poll() is not None:
                pod.start()
        self.evaluation.retry()
        self.publishing.retry()
        self.initialization.retry()

    def observe(self, now: datetime) -> Observed:
        for pod in self.workers.values():
            if pod.poll() not in (None, 0):
                self.failed_pod = pod
        pods = tuple(self.observed_pod(pod) for _, pod in sorted(self.workers.items()))
        generation = tuple(replace(self.observed_pod(pod), ready=pod.ready)
                           for _, pod in sorted(self.generation.items()))
        return Observed(now, WorkerSet(self.replicas, sum(p.running for p in pods)), pods,
                        evaluation=self.evaluation.observed(), publish=self.publishing.observed(),
                        progress=self.progress(), generation_pods=generation,
                        initialization=self.initialization.observed(),
                        initialization_progress=self._served(self.initialization.pod, InitializationReport))

    @staticmethod
    def observed_pod(pod: LocalPod) -> WorkerPod:
        code = pod.poll()
        last = Termination(*pod.last_exit) if pod.last_exit else None
        terminated = Termination(code, pod.termination_message()) if code is not None else None
        return WorkerPod(pod.name, running=code is None, ready=code is None, restarts=pod.restarts,
                         terminated=terminated, last_terminated=last, uid=pod.uid)

    def progress(self) -> Optional[Progress]:
        return self._served(self.workers.get(0), Progress)

    @staticmethod
    def _served(pod: Optional[LocalPod], document: type[D]) -> Optional[D]:
        """The document a running pod serves on its progress port."""
        if pod is None or not pod.running:
            return None
        return read_served(document, "127.0.0.1", int(pod.env[contract.ENV_METRICS_PORT]), timeout=0.5)

    def stop(self) -> None:
        batch = [job.pod for job in (self.evaluation, self.publishing, self.initialization) if job.pod]
        for pod in list(self.workers.values()) + list(self.generation.values()) + batch:
            pod.kill()

    def failed_worker_logs(self) -> str:
        return self.failed_pod.last_log_lines(LAST_LOG_LINES) if self.failed_pod else ""


def _scale(pods: dict[int, LocalPod], make: Callable[[int], LocalPod], replicas: int) -> None:
    """What the StatefulSet controller does: pods up to `replicas` started, those above killed."""
    for ordinal in range(replicas):
        if ordinal not in pods:
            pods[ordinal] = make(ordinal)
            pods[ordinal].start()
    for ordinal in [o for o in pods if o >= replicas]:
        pods.pop(ordinal).kill()


@dataclass
class LocalRun:
    job: FineTuneJob
    folders: RunFolders
    cluster: LocalCluster
    config: TrainerConfig
    status: FineTuneJobStatus = field(default_factory=FineTuneJobStatus)

    @classmethod
    def prepare(cls, job: FineTuneJob, run_dir: Path, cache: Path, overrides: dict[str, str],
                model_cache: Optional[Path] = None) -> "LocalRun":
        """`cache`: the pods' own caches; `model_cache`: the downloaded sources every run shares."""
        folders = RunFolders(run_dir.resolve(), model_cache.resolve() if model_cache else None)
        cache = cache.resolve()
        job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"uid": job_uid(folders)})})
        objects = render_job(job)
        ports = local_ports()
        config = folders.write_config(objects.config_map["data"], ports)
        cluster = LocalCluster(job, objects, folders, cache, ports, overrides=overrides)
        (folders.root / NODES_FILE).unlink(missing_ok=True)
        local = cls(job, folders, cluster, config)
        local.record_job()
        return local

    def record_job(self) -> None:
        (self.folders.root / JOB_FILE).write_text(dump_all([self.job.wire()]))

    def asked_nodes(self) -> Optional[int]:
        """The node count `kubetune scale` wrote, once it differs from the job's."""
        try:
            nodes = int((self.folders.root / NODES_FILE).read_text())
        except (OSError, ValueError):
            return None
        return nodes if nodes != self.job.spec.resources.nodes else None

    def step(self) -> Decision:
        nodes = self.asked_nodes()
        if nodes is not None:
            resources = self.job.spec.resources.model_copy(update={"nodes": nodes})
            self.job = self.job.model_copy(update={"spec": self.job.spec.model_copy(update={"resources": resources})})
            self.record_job()
        decision = decide(self.job, [], self.status, self.cluster.observe(datetime.now(timezone.utc)))
        for action in decision.actions:
            self.cluster.apply(action)
        self.status = decision.status
        self.record_status(decision)
        if decision.phase not in TERMINAL_PHASES:
            self.cluster.restart_exited()
        return decision

    def record_status(self, decision: Decision) -> None:
        """status.json replaced whole (a reader never sees half of it); each Event appended."""
        written = self.folders.root / f".{STATUS_FILE}.tmp"
        written.write_text(json.dumps({**self.job.wire(), "status": decision.wire_status()}))
        written.replace(self.folders.root / STATUS_FILE)
        if decision.events:
            now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            with open(self.folders.root / EVENTS_FILE, "a") as events:
                for event in decision.events:
                    events.write(json.dumps({"time": now, "type": event.type, "reason": event.reason,
                                             "message": event.message}) + "\n")

    def run(self, on_tick: Callable[[Decision], None]) -> Decision:
        try:
            while True:
                decision = self.step()
                on_tick(decision)
                if decision.phase in TERMINAL_PHASES:
                    return decision
                time.sleep(TICK_SECONDS)
        finally:
            self.cluster.stop()

    @property
    def model_dir(self) -> str:
        return self.config.output.model

    def completion(self) -> Optional[CompletionRecord]:
        """The completion record training wrote for this job, if it finished."""
        return CompletionRecord.read(Path(self.config.output.completion_record), self.job.metadata.uid)

    def newest_checkpoint(self) -> Optional[str]:
        found = newest_complete_checkpoint(Path(self.config.output.checkpoints))
        return str(found) if found else None
