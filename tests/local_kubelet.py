"""A test "kubelet" for the emulated API server: it runs the pods of the StatefulSets and Jobs
the operator creates as local processes (from the rendered pod templates, as `kubetune run`
does) and writes their statuses back the way the StatefulSet controller, the Job controller
and the kubelet would: running, terminated with exit code and termination message, restarted
with restartCount and lastState (restartPolicy Always), Job Complete or Failed (one attempt)."""

import threading
import time
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from kubetune import contract
from kubetune.local.pods import LocalPod, RunFolders, local_pod, local_ports

NS = "ml"
TICK = 0.3


def _terminated(code, message):
    return {"terminated": {"exitCode": code, "message": message, "reason": "Completed" if code == 0 else "Error"}}


def container_status(pod: LocalPod, container: str) -> dict:
    code = pod.poll()
    status = {"name": container, "ready": code is None, "restartCount": pod.restarts, "image": "local",
              "imageID": "", "state": _terminated(code, pod.termination_message()) if code is not None
              else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
    if pod.last_exit:
        status["lastState"] = _terminated(*pod.last_exit)
    return status


class LocalKubelet:
    def __init__(self, harness, root: Path):
        self.harness = harness
        self.root = root
        self.workers: dict[tuple[str, int], LocalPod] = {}
        self.evaluators: dict[str, LocalPod] = {}
        self.ports: dict[str, dict[int, int]] = {}
        self.exits_reported: set[tuple[str, int]] = set()
        self.restarted: list[str] = []  # pod names, one entry per container restart
        self.recreated: list[str] = []  # pod names, one entry per pod deleted through the API and made anew
        self.created: set[str] = set()  # pod objects this kubelet wrote
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="local-kubelet")
        self.errors: list[BaseException] = []

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        for pod in list(self.workers.values()) + list(self.evaluators.values()):
            pod.kill()

    # --- a job's volumes: the claim and the ConfigMap as folders ---------------------------

    def folders(self, job: str) -> RunFolders:
        return RunFolders(self.root / job)

    def _write_config(self, job: str) -> None:
        for config_map in self.harness.objects("ConfigMap", job):
            self.folders(job).write_config(config_map["data"])

    def _pod(self, job: str, template: dict, name: str, ordinal):
        self._write_config(job)
        ports = self.ports.setdefault(job, local_ports())
        pod = local_pod(template["spec"], name, NS, ordinal, self.folders(job), self.root / "cache", ports)
        if ordinal == 0:
            pod.env[contract.ENV_METRICS_PORT] = str(contract.METRICS_PORT)  # the operator reads it there
        pod.start()
        return pod

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.sync_stateful_sets()
                self.sync_jobs()
            except Exception as error:  # a test asserts there were none
                self.errors.append(error)
            time.sleep(TICK)

    def sync_stateful_sets(self):
        for stateful_set in self._all("StatefulSet"):
            job = stateful_set["metadata"]["labels"]["kubetune.io/job-name"]
            replicas = stateful_set["spec"].get("replicas", 0)
            template = stateful_set["spec"]["template"]
            for ordinal in range(replicas):
                key = (job, ordinal)
                name = f"{stateful_set['metadata']['name']}-{ordinal}"
                pod = self.workers.get(key)
                if pod is not None and name in self.created and not self._exists(name):
                    # Deleted through the API (the operator's stall watchdog): the StatefulSet
                    # controller makes a new pod, with a new uid and no restarts.
                    self.workers.pop(key).kill()
                    self.exits_reported.discard(key)
                    self.created.discard(name)
                    self.recreated.append(name)
                    pod = None
                if pod is None:
                    self.workers[key] = self._pod(job, template, name, ordinal)
                elif pod.poll() is not None and key in self.exits_reported:
                    self.exits_reported.discard(key)
                    pod.start()  # restartPolicy Always, once the exit has been reported
                    self.restarted.append(name)
                elif pod.poll() is not None:
                    self.exits_reported.add(key)
                self._write_pod(name, template, container_status(self.workers[key], "trainer"), "Running")
            for key in [k for k in self.workers if k[0] == job and k[1] >= replicas]:
                self.workers.pop(key).kill()
                name = f"{stateful_set['metadata']['name']}-{key[1]}"
                self.created.discard(name)
                self._delete_pod(name)

    def sync_jobs(self):
        for batch_job in self._all("Job"):
            job = batch_job["metadata"]["labels"]["kubetune.io/job-name"]
            name = batch_job["metadata"]["name"]
            if (batch_job.get("status") or {}).get("conditions"):
                continue
            template = batch_job["spec"]["template"]
            pod = self.evaluators.get(name) or self.evaluators.setdefault(
                name, self._pod(job, template, f"{name}-local", None))
            code = pod.poll()
            phase = "Running" if code is None else "Succeeded" if code == 0 else "Failed"
            self._write_pod(f"{name}-local", template, container_status(pod, "evaluator"), phase)
            if code is not None:
                outcome = "Complete" if code == 0 else "Failed"
                self.harness.cluster.batch.patch_namespaced_job_status(name, NS, {"status": {"conditions": [
                    {"type": outcome, "status": "True", "reason": outcome, "message": f"exit code {code}"}]}})

    # --- API writes ----------------------------------------------------------------------------

    def _all(self, kind):
        group, plural = {"StatefulSet": ("apps", "statefulsets"), "Job": ("batch", "jobs")}[kind]
        return [obj.raw for (resource, _, _), obj in list(self.harness.api_server.objects.items())
                if not obj.deleted and resource.plural == plural and (resource.group or "") == group]

    def _exists(self, name) -> bool:
        try:
            self.harness.cluster.core.read_namespaced_pod(name, NS)
        except Exception:
            return False
        return True

    def _write_pod(self, name, template, status, phase):
        core = self.harness.cluster.core
        pod_status = {"phase": phase, "podIP": "127.0.0.1", "containerStatuses": [status]}
        if not self._exists(name):
            if name in self.created:
                return  # deleted through the API since this tick looked: the next tick notices it
            core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": NS, "labels": dict(template["metadata"]["labels"])},
                "spec": template["spec"]})
            self.created.add(name)
        try:
            core.patch_namespaced_pod_status(name, NS, {"status": pod_status})
        except ApiException:
            if self._exists(name):
                raise
            # Deleted between the read and the write (the operator's watchdog): the next tick makes it anew.

    def _delete_pod(self, name):
        try:
            self.harness.cluster.core.delete_namespaced_pod(name, NS)
        except Exception:
            pass

    # --- faults --------------------------------------------------------------------------------

    def kill_worker(self, job: str, ordinal: int) -> None:
        """SIGKILL a worker's process tree, as an OOM kill or a node fault would."""
        self.workers[(job, ordinal)].kill()
