"""One fault trial: the real `kubetune operator` process against the emulated API server, which
fails a share of the operator's requests, killed with SIGKILL at random moments and started
again, while jobs run to Succeeded or Failed with the pods and the evaluation Job played here
the way the kubelet and the Job controller would. tests/test_faults.py checks a small trial in
CI; bench/faults.py runs the full one and prints the table in docs/reliability.md."""

import collections
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from kube_emulator import FaultPlan
from operator_harness import Harness
from test_operator import NS, container_status, create_job, free_port, job_document, set_evaluation, set_worker_pod

def evaluation_job(name: str) -> str:
    """The evaluation Job of a job made by job_document()."""
    from kubetune.api.validation import parse_job
    from kubetune.render.naming import evaluation_job_name

    return evaluation_job_name(name, parse_job(job_document()).spec.evaluation.digest())


PHASE_REASONS = ("Pending", "Initializing", "Training", "Evaluating", "Succeeded", "Failed")
CHILDREN = ("ConfigMap", "Service", "PersistentVolumeClaim", "StatefulSet")
TERMINAL = ("Succeeded", "Failed")


class OperatorProcess:
    """`kubetune operator` as the chart runs it, through a kubeconfig; killable."""

    def __init__(self, url: str, folder: Path, interval: float = 1.0, watch_seconds: int = 10):
        self.kubeconfig = folder / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": url}}], "users": [{"name": "test", "user": {}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
        self.interval = interval
        self.watch_seconds = watch_seconds  # short: every informer ends and re-lists many times under faults
        self.log_path = folder / "operator.log"
        self.log = open(self.log_path, "a")
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self) -> None:
        self.metrics_port = free_port()
        command = [str(Path(sys.executable).parent / "kubetune"), "operator", "--namespace", NS,
                   "--liveness-port", str(free_port()), "--metrics-port", str(self.metrics_port),
                   "--interval", str(self.interval), "--watch-timeout", str(self.watch_seconds)]
        self.process = subprocess.Popen(command, env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.starts += 1

    def metrics(self) -> str:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return ""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def stored(harness: Harness) -> dict:
    """Every live object, by (kind, name), read from the emulator's store (not through the API)."""
    objects = {}
    for (resource, _, name), obj in list(harness.api_server.objects.items()):
        if not obj.deleted:
            objects[(obj.raw.get("kind") or resource.plural, name)] = obj.raw
    return objects


def phase_of(objects: dict, name: str) -> Optional[str]:
    return ((objects.get(("FineTuneJob", name)) or {}).get("status") or {}).get("phase")


def play_kubelet(harness: Harness, objects: dict, names: list[str], failing: set[str], done: set[str]) -> None:
    """One step of each job's pod and evaluation: the worker runs, then trains to the end (exit 0,
    restarted by the StatefulSet) or fails with a permanent error; the evaluation completes."""
    for name in names:
        phase = phase_of(objects, name)
        workers = objects.get(("StatefulSet", f"{name}-worker"))
        if workers and workers["spec"].get("replicas") and ("Pod", f"{name}-worker-0") not in objects:
            set_worker_pod(harness, 0, container_status("running"), job=name)
        elif phase == "Training" and name not in done:
            done.add(name)
            last = container_status("terminated", 3, f"{name}: bad column") if name in failing else \
                container_status("running", restarts=1, last=(0, ""))
            set_worker_pod(harness, 0, last, job=name)
        elif phase == "Evaluating" and ("Job", evaluation_job(name)) in objects and \
                ("Pod", f"{evaluation_job(name)}-abcde") not in objects:
            set_evaluation(harness, "Complete", '{"metrics": {"loss": {"tuned": 1.0}}}', job=name)


@dataclass
class Trial:
    jobs: int
    kills: int
    faults: Optional[FaultPlan]
    seed: int = 14
    phases: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    converged_after: dict = field(default_factory=dict)  # seconds from creation to a final phase
    objects: dict = field(default_factory=dict)
    starts: int = 0
    log: str = ""
    # After every job was deleted: the operator's per-job metric series, and what it still keeps.
    job_series_left: list = field(default_factory=list)
    kept_left: dict = field(default_factory=dict)
    # ... and what the API server itself still holds of them (its garbage collection's part).
    stored_left: list = field(default_factory=list)

    def duplicates_and_missing(self) -> list[tuple[str, str, int]]:
        """(job, kind, count) for every child that is not there exactly once."""
        wrong = []
        for name, final in self.expected.items():
            wanted = CHILDREN + (("Job",) if final == "Succeeded" else ())
            children = collections.Counter(
                kind for (kind, _), obj in self.objects.items() if kind in CHILDREN + ("Job",)
                and obj["metadata"].get("labels", {}).get("kubetune.io/job-name") == name)
            wrong += [(name, kind, children[kind]) for kind in set(wanted) | set(children) if
                      children[kind] != (1 if kind in wanted else 0)]
        return wrong

    def orphans(self) -> list[str]:
        """Children whose owner is not a live job."""
        jobs = {obj["metadata"]["uid"] for (kind, _), obj in self.objects.items() if kind == "FineTuneJob"}
        return [name for (kind, name), obj in self.objects.items() if kind in CHILDREN + ("Job",)
                and not all(ref["uid"] in jobs for ref in obj["metadata"].get("ownerReferences", []))]

    def events(self) -> collections.Counter:
        """Phase Events per (job, reason)."""
        return collections.Counter(
            (obj["involvedObject"]["name"], obj["reason"]) for (kind, _), obj in self.objects.items()
            if kind == "Event" and obj.get("source", {}).get("component") == "kubetune-operator"
            and obj["reason"] in PHASE_REASONS)

    def event_errors(self) -> list[str]:
        """Jobs whose phase changes do not have exactly one Event each."""
        events = self.events()
        return [name for name, final in self.expected.items()
                if events[(name, "Pending")] != 1 or events[(name, final)] != 1
                or any(events[(name, reason)] > 1 for reason in PHASE_REASONS)]


def run_trial(trial: Trial, folder: Path, timeout: float = 300.0) -> Trial:
    rng = random.Random(trial.seed)
    names = [f"job-{index}" for index in range(trial.jobs)]
    failing = set(names[::4])
    trial.expected = {name: "Failed" if name in failing else "Succeeded" for name in names}
    with Harness() as harness:
        harness.api_server.faults = trial.faults
        operator = OperatorProcess(harness.url, folder)
        try:
            operator.start()
            created = {}
            for name in names:
                create_job(harness, job_document(name))
                created[name] = time.monotonic()
            started = time.monotonic()
            kills = sorted(rng.uniform(1.0, 20.0) for _ in range(trial.kills))
            done: set[str] = set()
            while time.monotonic() - started < timeout:
                objects = stored(harness)
                for name in names:
                    if name not in trial.converged_after and phase_of(objects, name) in TERMINAL:
                        trial.converged_after[name] = time.monotonic() - created[name]
                if len(trial.converged_after) == len(names) and not kills:
                    break
                if kills and time.monotonic() - started > kills[0]:
                    kills.pop(0)
                    operator.kill()
                    operator.start()
                play_kubelet(harness, objects, names, failing, done)
                time.sleep(0.1)
            time.sleep(3)  # a few resyncs more: a lost Event would be posted now, a duplicate would show
            trial.objects = stored(harness)
            forget_all(harness, operator, names, trial)
        finally:
            operator.stop()
    trial.phases = {name: phase_of(trial.objects, name) for name in names}
    trial.starts = operator.starts
    trial.log = operator.log_path.read_text()
    return trial


KEPT = re.compile(r'^kubetune_operator_kept\{what="([^"]+)"\} (\S+)$', re.M)


def forget_all(harness: Harness, operator: OperatorProcess, names: list[str], trial: Trial,
               timeout: float = 30.0) -> None:
    """Delete every job; the operator must then drop their metrics and everything it kept."""
    for name in names:
        harness.cluster.delete_job(NS, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = operator.metrics()
        trial.job_series_left = [line for line in text.splitlines() if 'job="' in line and not line.startswith("#")]
        trial.kept_left = {what: float(count) for what, count in KEPT.findall(text) if float(count)}
        trial.stored_left = sorted(key for key in stored(harness) if key[0] in CHILDREN + ("Job", "FineTuneJob"))
        if text and not trial.job_series_left and not trial.kept_left and not trial.stored_left:
            return
        time.sleep(0.5)
