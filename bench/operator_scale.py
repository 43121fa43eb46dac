"""The operator at scale: the real `kubetune operator` process against the emulated API server.

    .venv/bin/python bench/operator_scale.py --jobs 1 100 1000 [--idle 60] [--samples 20]
        [--burst 50] [--interval 10] [--faults] [--operator-args "--qps 50 --burst 100"]

For each N it starts, as processes of their own: the emulator (tests/kube_emulator.py), the
operator (`python -m kubetune operator`, this tree's code, through a kubeconfig) and Prometheus
(/usr/bin/prometheus, scraping the operator's /metrics every 5 s; a real one scrapes every
15-30 s). Then it measures:

- create -> children: N FineTuneJobs created back to back by the bench; for each, the time
  until its ConfigMap, Service, StatefulSet (and output PVC) exist, seen through watches. After
  the idle window, --samples more jobs are created one at a time among the N live ones.
- pod change -> status: the bench plays kubelet. Worker pods (labels from the StatefulSet's
  template) run; one pod's container then restarts (restartCount + 1), and the time until the
  job's status.workers.restarts counts it is taken, one change at a time (--samples) and as a
  burst of one change in each of --burst jobs.
- idle: once every job has settled, the operator's requests and status writes per minute over
  --idle seconds, from the emulator's counts (requests are told apart by User-Agent).
- the operator's CPU and RSS from Prometheus (process_* metrics) or, when its registry exports
  none, from /proc; the emulator's own CPU beside it.

The bench's own requests use their own User-Agent, so they are never counted as the operator's.
Every process is stopped on exit, Ctrl-C included; the operator's log is kept in a temp file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parent.parent
NS = "ml"
GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"
JOB_LABEL = "kubetune.io/job-name"
AGENT = "kubetune-bench"
JOBS_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
CHILDREN = {  # kind: collection path
    "ConfigMap": f"/api/v1/namespaces/{NS}/configmaps",
    "Service": f"/api/v1/namespaces/{NS}/services",
    "StatefulSet": f"/apis/apps/v1/namespaces/{NS}/statefulsets",
    "PersistentVolumeClaim": f"/api/v1/namespaces/{NS}/persistentvolumeclaims",
}
PODS_PATH = f"/api/v1/namespaces/{NS}/pods"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO)]), "PYTHONUNBUFFERED": "1"}


def job_document(name: str) -> dict[str, Any]:
    """examples/quickstart.yaml's shape, minimal: two worker nodes, restarts never exhausted."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name, "namespace": NS},
            "spec": {"method": "sft", "model": {"source": "builtin://tiny"},
                     "dataset": {"source": "builtin://tiny", "evalSplit": "test"},
                     "resources": {"nodes": 2, "gpusPerNode": 0}, "runPolicy": {"backoffLimit": 1_000_000}}}


def expected_children(document: dict[str, Any]) -> set[str]:
    """The kinds the operator creates at once for such a job, as this tree renders them."""
    from kubetune.api.validation import parse_job
    from kubetune.render import render_job

    rendered = render_job(parse_job(document)).training_objects()
    return {obj["kind"] for obj in rendered}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- processes ---------------------------------------------------------------------------

class Processes:
    """Child processes, each in a session of its own (Ctrl-C reaches only the bench), all
    stopped on exit: SIGTERM, then SIGKILL after a few seconds."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, command: list[str], **kwargs: Any) -> subprocess.Popen:
        process = subprocess.Popen(command, start_new_session=True, **kwargs)
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen, grace: float = 10.0) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: Any) -> None:
        for process in reversed(self.started):
            self.stop(process)


def start_emulator(processes: Processes, faults: bool) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, str(REPO / "tests" / "kube_emulator.py"), "--port", "0"]
    command += ["--faults"] if faults else []
    process = processes.start(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(60)
    if not found or "serving" not in found[0]:
        raise RuntimeError(f"the emulator did not start: {found}")
    return process, found[0].split()[-1]


def write_kubeconfig(folder: Path, url: str) -> Path:
    path = folder / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": url}}], "users": [{"name": "bench", "user": {}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
    return path


def start_operator(processes: Processes, kubeconfig: Path, log: Path, interval: float,
                   extra: list[str]) -> tuple[subprocess.Popen, int]:
    liveness, metrics = free_port(), free_port()
    command = [sys.executable, "-m", "kubetune", "operator", "--namespace", NS, "--metrics-port", str(metrics),
               "--liveness-port", str(liveness), "--interval", str(interval)] + extra
    process = processes.start(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                              env={**ENV, "KUBECONFIG": str(kubeconfig)}, cwd=str(log.parent))

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited ({process.returncode}); log: {log}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(healthy, 90, "the operator's liveness endpoint", every=0.3)
    return process, metrics


def start_prometheus(processes: Processes, folder: Path, metrics_port: int) -> Optional[str]:
    binary = Path("/usr/bin/prometheus")
    if not binary.exists():
        return None
    config = folder / "prometheus.yml"
    scrape = {"job_name": "kubetune-operator", "scrape_interval": "5s",
              "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
    config.write_text(json.dumps({"global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                                  "scrape_configs": [scrape]}))
    port = free_port()
    processes.start([str(binary), f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                    stdout=(folder / "prometheus.log").open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200
        except OSError:
            return False

    wait_for(ready, 60, "Prometheus", every=0.3)
    return url


def prometheus_value(url: Optional[str], query: str) -> Optional[float]:
    if url is None:
        return None
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}",
                                    timeout=5) as response:
            result = json.load(response)["data"]["result"]
    except (OSError, KeyError, ValueError):
        return None
    return float(result[0]["value"][1]) if result else None


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int, key: str) -> float:
    """VmRSS or VmHWM of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0.0


# --- the bench's own client (User-Agent kubetune-bench) -----------------------------------

class Client:
    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        if not hasattr(self.local, "connection"):
            self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return self.local.connection

    def call(self, method: str, path: str, body: Any = None, patch: bool = False) -> tuple[int, Any]:
        headers = {"User-Agent": AGENT, "Accept": "application/json",
                   "Content-Type": "application/merge-patch+json" if patch else "application/json"}
        data = None if body is None else json.dumps(body)
        for attempt in range(3):  # a connection the server closed is opened again
            connection = self._connection()
            try:
                connection.request(method, path, data, headers)
                response = connection.getresponse()
                payload = response.read()
                return response.status, json.loads(payload) if payload else None
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                del self.local.connection
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stats(self) -> dict[str, Any]:
        return self.call("GET", "/_emulator/stats")[1]


class Watch(threading.Thread):
    """One watch stream of the bench's; every event goes to on_event(event, arrival time)."""

    def __init__(self, client: Client, path: str, on_event: Callable[[dict, float], None]):
        super().__init__(daemon=True, name=f"watch {path}")
        self.client, self.path, self.on_event = client, path, on_event
        self.connection: Optional[http.client.HTTPConnection] = None
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.connection = http.client.HTTPConnection(self.client.host, self.client.port, timeout=None)
                self.connection.request("GET", f"{self.path}?watch=true", headers={"User-Agent": AGENT})
                response = self.connection.getresponse()
                for line in iter(response.readline, b""):
                    if line.strip():
                        self.on_event(json.loads(line), time.monotonic())
            except (OSError, http.client.HTTPException, ValueError):
                if not self.stopped.is_set():
                    time.sleep(0.5)

    def stop(self) -> None:
        self.stopped.set()
        if self.connection is not None and self.connection.sock is not None:
            try:
                self.connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Seen:
    """When each job's children first appeared, and each job's latest restart count."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.children: dict[str, dict[str, float]] = {}  # job -> kind -> first seen
        self.restarts: dict[str, tuple[int, float]] = {}  # job -> (status.workers.restarts, when seen)
        self.phases: dict[str, str] = {}

    def child(self, kind: str) -> Callable[[dict, float], None]:
        def record(event: dict, when: float) -> None:
            job = ((event.get("object", {}).get("metadata") or {}).get("labels") or {}).get(JOB_LABEL)
            if job and event.get("type") in ("ADDED", "MODIFIED"):
                with self.lock:
                    self.children.setdefault(job, {}).setdefault(kind, when)
                    self.lock.notify_all()
        return record

    def job(self, event: dict, when: float) -> None:
        obj = event.get("object", {})
        name = (obj.get("metadata") or {}).get("name")
        status = obj.get("status") or {}
        restarts = (status.get("workers") or {}).get("restarts", 0)
        with self.lock:
            if name and self.restarts.get(name, (None,))[0] != restarts:
                self.restarts[name] = (restarts, when)
            if name and status.get("phase"):
                self.phases[name] = status["phase"]
            self.lock.notify_all()

    def wait(self, check: Callable[[], bool], timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(check, timeout)


# --- the measurements -------------------------------------------------------------------------

def measure_creates(client: Client, seen: Seen, names: list[str], kinds: set[str], timeout: float) -> dict[str, Any]:
    created: dict[str, float] = {}
    started = time.monotonic()
    for name in names:
        created[name] = time.monotonic()
        status, body = client.call("POST", JOBS_PATH, job_document(name))
        if status >= 300:
            raise RuntimeError(f"creating {name}: {status} {body}")
    create_seconds = time.monotonic() - started
    complete = lambda: all(kinds <= seen.children.get(name, {}).keys() for name in names)  # noqa: E731
    seen.wait(complete, timeout)
    with seen.lock:
        latencies = [max(seen.children[name][kind] for kind in kinds) - created[name]
                     for name in names if kinds <= seen.children.get(name, {}).keys()]
    return {"latencies": latencies, "missing": len(names) - len(latencies), "create_seconds": create_seconds}


def measure_single_creates(client: Client, seen: Seen, names: list[str], kinds: set[str],
                           timeout: float) -> list[float]:
    """One new job at a time, among the live ones: the time until its children exist."""
    latencies = []
    for name in names:
        created = time.monotonic()
        status, body = client.call("POST", JOBS_PATH, job_document(name))
        if status >= 300:
            raise RuntimeError(f"creating {name}: {status} {body}")
        if seen.wait(lambda: kinds <= seen.children.get(name, {}).keys(), timeout):
            with seen.lock:
                latencies.append(max(seen.children[name][kind] for kind in kinds) - created)
    return latencies


def worker_pod(name: str, ordinal: int, template: dict[str, Any], restarts: int, running: bool) -> dict[str, Any]:
    if running:
        state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    else:  # restarting: CrashLoopBackOff after a failed run
        state = {"waiting": {"reason": "CrashLoopBackOff"}}
    container = {"name": "trainer", "ready": running, "restartCount": restarts, "image": "x", "imageID": "",
                 "state": state}
    if restarts:
        container["lastState"] = {"terminated": {"exitCode": 1, "message": "bench restart", "reason": "Error"}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-worker-{ordinal}", "namespace": NS,
                         "labels": dict(template["metadata"]["labels"])},
            "spec": template["spec"], "status": {"phase": "Running", "containerStatuses": [container]}}


def start_workers(client: Client, seen: Seen, names: list[str], timeout: float) -> dict[str, dict]:
    """Both worker pods of each job running, and each job's status caught up with them."""
    templates = {}
    for name in names:
        status, statefulset = client.call("GET", f"{CHILDREN['StatefulSet']}/{name}-worker")
        if status != 200:
            raise RuntimeError(f"{name}-worker: {status}")
        templates[name] = statefulset["spec"]["template"]
        for ordinal in range(2):
            client.call("POST", PODS_PATH, worker_pod(name, ordinal, templates[name], 0, True))
    if not seen.wait(lambda: all(seen.phases.get(name) == "Training" for name in names), timeout):
        behind = {name: seen.phases.get(name) for name in names if seen.phases.get(name) != "Training"}
        raise TimeoutError(f"jobs not Training after {timeout:.0f} s: {dict(list(behind.items())[:5])}")
    return templates


def restart(client: Client, name: str, template: dict, restarts: int) -> None:
    pod = worker_pod(name, 0, template, restarts, False)
    status, body = client.call("PATCH", f"{PODS_PATH}/{name}-worker-0/status", {"status": pod["status"]}, patch=True)
    if status >= 300:
        raise RuntimeError(f"patching {name}-worker-0: {status} {body}")


def measure_pod_changes(client: Client, seen: Seen, names: list[str], templates: dict[str, dict], samples: int,
                        burst: int, timeout: float) -> dict[str, Any]:
    counts = {name: seen.restarts.get(name, (0, 0))[0] for name in names}
    one, lost = [], 0
    for index in range(samples):  # one change at a time, round the jobs
        name = names[index % len(names)]
        counts[name] += 1
        started = time.monotonic()
        restart(client, name, templates[name], counts[name])
        if seen.wait(lambda: seen.restarts.get(name, (0,))[0] >= counts[name], timeout):
            one.append(seen.restarts[name][1] - started)
        else:
            lost += 1
    group = names[:burst]
    started_at = {}
    for name in group:  # then one change in each of `burst` jobs, back to back
        counts[name] += 1
        started_at[name] = time.monotonic()
        restart(client, name, templates[name], counts[name])
    seen.wait(lambda: all(seen.restarts.get(name, (0,))[0] >= counts[name] for name in group), timeout)
    with seen.lock:
        many = [seen.restarts[name][1] - started_at[name] for name in group
                if seen.restarts.get(name, (0,))[0] >= counts[name]]
    return {"one": one, "burst": many, "lost": lost + len(group) - len(many), "burst_size": len(group)}


def status_writes(stats: dict) -> int:
    return sum(row["count"] for row in stats["requests"] if row["agent"] == "operator"
               and row["resource"] == f"{GROUP}/{PLURAL}" and row["subresource"] == "status")


def settle(client: Client, at_least: float, quiet: float, at_most: float) -> Optional[float]:
    """Wait at_least seconds, then until the operator wrote no status for `quiet` seconds (a
    resync round may take longer than --interval); the seconds it took, None if it never did."""
    started = time.monotonic()
    time.sleep(at_least)
    last, since = status_writes(client.stats()), time.monotonic()
    while time.monotonic() - started < at_most:
        time.sleep(1)
        now = status_writes(client.stats())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return time.monotonic() - started
    return None


def per_minute(before: dict, after: dict, seconds: float) -> dict[str, Any]:
    def operator_counts(stats: dict) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for row in stats["requests"]:
            if row["agent"] == "operator":
                resource = row["resource"] + (f"/{row['subresource']}" if row["subresource"] else "")
                counts[row["verb"], resource] = counts.get((row["verb"], resource), 0) + row["count"]
        return counts

    old, new = operator_counts(before), operator_counts(after)
    rates = {key: (new[key] - old.get(key, 0)) * 60 / seconds for key in new if new[key] - old.get(key, 0)}
    status_writes = sum(rate for (verb, resource), rate in rates.items()
                        if resource == f"{GROUP}/{PLURAL}/status" and verb in ("patch", "update", "put"))
    return {"requests": sum(rates.values()), "status_writes": status_writes, "by_request": rates,
            "emulator_cpu": (after["cpu_seconds"] - before["cpu_seconds"]) * 60 / seconds}


def run_one(jobs: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"jobs": jobs}
    with Processes() as processes:
        emulator, url = start_emulator(processes, args.faults)
        log = folder / "operator.log"
        operator, metrics_port = start_operator(processes, write_kubeconfig(folder, url), log, args.interval,
                                                shlex.split(args.operator_args))
        prometheus = start_prometheus(processes, folder, metrics_port)
        client, seen = Client(url), Seen()
        watches = [Watch(client, path, seen.child(kind)) for kind, path in CHILDREN.items()]
        watches.append(Watch(client, JOBS_PATH, seen.job))
        for watch in watches:
            watch.start()
        try:
            names = [f"bench-{index:05d}" for index in range(jobs)]
            kinds = expected_children(job_document(names[0]))
            cpu = (proc_cpu_seconds(operator.pid), proc_cpu_seconds(emulator.pid), time.monotonic())
            print(f"[{jobs} jobs] creating (children expected: {', '.join(sorted(kinds))})", flush=True)
            result["create"] = measure_creates(client, seen, names, kinds, args.settle_timeout)
            elapsed = time.monotonic() - cpu[2]
            result["create_cpu"] = ((proc_cpu_seconds(operator.pid) - cpu[0]) / elapsed,
                                    (proc_cpu_seconds(emulator.pid) - cpu[1]) / elapsed, elapsed)
            sampled = names[:max(1, min(jobs, args.burst))]
            print(f"[{jobs} jobs] starting worker pods of {len(sampled)} jobs", flush=True)
            templates = start_workers(client, seen, sampled, args.settle_timeout)
            print(f"[{jobs} jobs] pod changes: {args.samples} one at a time, then a burst", flush=True)
            result["pods"] = measure_pod_changes(client, seen, sampled, templates, args.samples, args.burst,
                                                 args.sample_timeout)
            print(f"[{jobs} jobs] settling ({args.settle:.0f} s or more), then idle for {args.idle:.0f} s", flush=True)
            result["settled"] = settle(client, args.settle, max(10.0, 2 * args.interval), args.settle + 120)
            before, cpu_before, started = client.stats(), proc_cpu_seconds(operator.pid), time.monotonic()
            time.sleep(args.idle)
            after, cpu_after = client.stats(), proc_cpu_seconds(operator.pid)
            seconds = time.monotonic() - started
            result["idle"] = per_minute(before, after, seconds)
            result["idle"]["operator_cpu_proc"] = (cpu_after - cpu_before) * 60 / seconds
            window = f"{max(1, min(int(args.idle), 60))}s"
            result["idle"]["operator_cpu_prom"] = prometheus_value(
                prometheus, f"rate(process_cpu_seconds_total[{window}])")
            result["idle"]["operator_cpu_prom"] = (None if result["idle"]["operator_cpu_prom"] is None
                                                   else result["idle"]["operator_cpu_prom"] * 60)
            print(f"[{jobs} jobs] {args.samples} more jobs, created one at a time", flush=True)
            result["single"] = measure_single_creates(client, seen, [f"late-{index:03d}" for index in range(
                args.samples)], kinds, args.sample_timeout)
            result["rss_prom"] = prometheus_value(prometheus, "process_resident_memory_bytes")
            result["rss_proc"] = proc_memory(operator.pid, "VmRSS")
            result["rss_peak"] = proc_memory(operator.pid, "VmHWM")
            result["prometheus_up"] = prometheus_value(prometheus, "up")
            result["faults"] = after.get("faults", {})
            result["objects"] = after.get("objects")
            result["total_operator_requests"] = sum(row["count"] for row in after["requests"]
                                                    if row["agent"] == "operator")
        finally:
            for watch in watches:
                watch.stop()
        result["operator_alive"] = operator.poll() is None
    text = log.read_text(errors="replace")
    result["tracebacks"] = text.count("Traceback")
    result["log"] = str(log)
    return result


# --- the report -----------------------------------------------------------------------------

def seconds(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def print_report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    header = "| | " + " | ".join(f"N = {r['jobs']}" for r in results) + " | goal |"
    lines = [header, "|---" * (len(results) + 2) + "|"]

    def row(label: str, cell: Callable[[dict], str], goal: str = "") -> None:
        values = []
        for r in results:
            try:
                values.append(cell(r))
            except (KeyError, TypeError, ZeroDivisionError):
                values.append("n/a")
        lines.append(f"| {label} | " + " | ".join(values) + f" | {goal} |")

    row("create -> all children p50 (N at once)", lambda r: seconds(percentile(r["create"]["latencies"], 50)))
    row("create -> all children p99 (N at once)", lambda r: seconds(percentile(r["create"]["latencies"], 99)))
    row("create -> all children p50 (one more, N live)", lambda r: seconds(percentile(r["single"], 50)))
    row("create -> all children p99 (one more, N live)", lambda r: seconds(percentile(r["single"], 99)),
        "≤ 1 s at 1,000 jobs")
    row("jobs whose children never appeared", lambda r: str(r["create"]["missing"]), "0")
    row("bench's N creates took", lambda r: seconds(r["create"]["create_seconds"]))
    row("operator / emulator CPU while creating", lambda r: f"{r['create_cpu'][0]:.2f} / {r['create_cpu'][1]:.2f} "
        f"cores over {r['create_cpu'][2]:.0f} s")
    row("pod change -> status p50 (one at a time)", lambda r: seconds(percentile(r["pods"]["one"], 50)))
    row("pod change -> status p99 (one at a time)", lambda r: seconds(percentile(r["pods"]["one"], 99)), "≤ 1 s")
    row("pod change -> status p50 (burst)", lambda r: seconds(percentile(r["pods"]["burst"], 50)))
    row("pod change -> status p99 (burst)", lambda r: seconds(percentile(r["pods"]["burst"], 99)), "≤ 1 s")
    row("burst size / changes never reflected", lambda r: f"{r['pods']['burst_size']} / {r['pods']['lost']}", "- / 0")
    row("settled before the idle window after", lambda r: "never (no quiet window)" if r["settled"] is None
        else f"{r['settled']:.0f} s")
    row("idle: operator requests per second", lambda r: f"{r['idle']['requests'] / 60:.2f}", "≤ 5")
    row("idle: status writes per minute", lambda r: f"{r['idle']['status_writes']:.1f}", "0")
    row("idle: operator CPU s/min (Prometheus)", lambda r: "not exported" if r["idle"]["operator_cpu_prom"] is None
        else f"{r['idle']['operator_cpu_prom']:.2f}")
    row("idle: operator CPU s/min (/proc)", lambda r: f"{r['idle']['operator_cpu_proc']:.2f}")
    row("idle: emulator CPU s/min", lambda r: f"{r['idle']['emulator_cpu']:.2f}")
    row("operator RSS (Prometheus)", lambda r: "not exported" if r["rss_prom"] is None
        else f"{r['rss_prom'] / 2**20:.0f} MB", "≤ 200 MB")
    row("operator RSS now / peak (/proc)", lambda r: f"{r['rss_proc'] / 2**20:.0f} / {r['rss_peak'] / 2**20:.0f} MB",
        "≤ 200 MB")
    row("operator requests in all", lambda r: str(r["total_operator_requests"]))
    row("faults injected", lambda r: ", ".join(f"{k}: {v}" for k, v in sorted(r["faults"].items())) or "none")
    row("Traceback lines in the operator's log", lambda r: str(r["tracebacks"]), "0")
    row("operator still running at the end", lambda r: "yes" if r["operator_alive"] else "NO", "yes")
    print("\n" + "\n".join(lines))
    for r in results:
        if "idle" in r:
            top = sorted(r["idle"]["by_request"].items(), key=lambda item: -item[1])
            print(f"\nN = {r['jobs']}, idle operator requests per minute: "
                  + (", ".join(f"{verb} {resource} {rate:.1f}" for (verb, resource), rate in top) or "none"))
        print(f"N = {r['jobs']}, operator log: {r.get('log')}")
    if results and all(r.get("rss_prom") is None for r in results):
        print("\nThe operator's /metrics has no process_* metrics (its own CollectorRegistry has no "
              "ProcessCollector), so CPU and RSS come from /proc.")
    print(f"\nSettings: interval {args.interval} s, idle window {args.idle:.0f} s, {args.samples} samples, burst "
          f"{args.burst}, faults {'on' if args.faults else 'off'}, operator args {args.operator_args!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--interval", type=float, default=10.0, help="the operator's --interval")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle window")
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds before the idle window (default: 2 intervals)")
    parser.add_argument("--samples", type=int, default=20, help="pod changes one at a time")
    parser.add_argument("--burst", type=int, default=50, help="jobs changed at once")
    parser.add_argument("--settle-timeout", type=float, default=600.0, help="the most seconds any phase may wait")
    parser.add_argument("--sample-timeout", type=float, default=60.0)
    parser.add_argument("--faults", action="store_true", help="the emulator injects its default faults")
    parser.add_argument("--operator-args", default="", help="extra flags for `kubetune operator`")
    args = parser.parse_args()
    args.settle = 2 * args.interval if args.settle is None else args.settle
    sys.path.insert(0, str(REPO / "operator"))  # expected_children renders with this tree's code

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    results = []
    keep = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    try:
        for jobs in args.jobs:
            folder = keep / f"n{jobs}"
            folder.mkdir()
            started = time.monotonic()
            try:
                results.append(run_one(jobs, args, folder))
            except (TimeoutError, RuntimeError) as error:
                print(f"[{jobs} jobs] stopped: {error}", flush=True)
                results.append({"jobs": jobs, "error": str(error), "log": str(folder / "operator.log"),
                                "tracebacks": (folder / "operator.log").read_text(errors="replace").count("Traceback")
                                if (folder / "operator.log").exists() else 0})
            print(f"[{jobs} jobs] done in {time.monotonic() - started:.0f} s", flush=True)
    except KeyboardInterrupt:
        print("interrupted; every process stopped", file=sys.stderr)
    print_report(results, args)
    for r in results:
        if "error" in r:
            print(f"N = {r['jobs']}: {r['error']}")


if __name__ == "__main__":
    main()
