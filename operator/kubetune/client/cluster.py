"""The Client against a cluster: FineTuneJobs, their pods' logs and their Events through the
official Kubernetes client, with the operator's request wrapper (handlers.cluster.Cluster:
each answer read whole, transient failures retried) under a user's own User-Agent."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import kubernetes.client
import kubernetes.config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from ..api.models import GROUP, KIND, PLURAL, VERSION, FineTuneJob
from ..api.validation import InvalidJob, Problem
from ..handlers.cluster import NETWORK_ERRORS, Cluster, describe, error_reason
from .errors import ApiError, ConfigError, JobNotFound
from .job import Event, Job, PodState, parse_time, resized
from .roles import STATEFUL_ROLES, done_with_pods, pod_name

USER_AGENT = "kubetune-client/0.1.0"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NOT_INSTALLED = "the server could not find the requested resource"
WATCH_SECONDS = 60  # each watch of a waited-for job lasts at most this long before it is read again
POLL_SECONDS = 1.0  # how often a log follower looks for a restarted container
FOLLOW_READ_SECONDS = 300  # a followed log silent this long is opened again


def _kubeconfig_present() -> bool:
    locations = os.path.expanduser(kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
    return any(os.path.exists(path) for path in locations.split(os.pathsep))


def connect(kubeconfig: Optional[str], context: Optional[str]) -> tuple[kubernetes.client.ApiClient, str]:
    """An API client and the default namespace: the kubeconfig's context (as kubectl reads it),
    or, with no kubeconfig inside a pod, the service account's."""
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig or context or _kubeconfig_present():
            kubernetes.config.load_kube_config(config_file=kubeconfig, context=context,
                                               client_configuration=configuration, persist_config=False)
            contexts, current = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c["name"] == context), current) if context else current
            namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        elif os.environ.get(kubernetes.config.incluster_config.SERVICE_HOST_ENV_NAME):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.exists() \
                else "default"
        else:
            raise ConfigError("no cluster: no kubeconfig (KUBECONFIG, ~/.kube/config, or one named) and not inside "
                              "a pod; Client.local() runs jobs on this machine")
    except kubernetes.config.ConfigException as error:
        raise ConfigError(f"kubeconfig: {error}") from None
    return kubernetes.client.ApiClient(configuration), namespace


def api_error(error: ApiException, name: Optional[str], where: str) -> ApiError:
    """The server's own code, reason and message; a 404 on a named job is JobNotFound."""
    if error.status == 404 and name is not None:
        return JobNotFound(name, where)
    try:
        message = json.loads(error.body or "{}").get("message") or ""
    except (ValueError, AttributeError):
        message = ""
    message = message or (error.body.decode(errors="replace") if isinstance(error.body, bytes) else error.body) \
        or error.reason or ""
    if error.status == 404 and NOT_INSTALLED in message:
        message += " (is the FineTuneJob CRD installed? `kubetune crd | kubectl apply -f -`)"
    return ApiError(error.status, error_reason(error) or error.reason or "", message)


class ClusterBackend:
    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str):
        self.api = Cluster(api_client, qps=0, attempts=3)
        api_client.user_agent = USER_AGENT  # Cluster names the operator; a user's requests are told apart
        self.host = api_client.configuration.host
        self.namespace = namespace
        self.where = f"namespace {namespace}"

    @classmethod
    def connect(cls, namespace: Optional[str], context: Optional[str], kubeconfig: Optional[str]) -> "ClusterBackend":
        api_client, default_namespace = connect(kubeconfig, context)
        return cls(api_client, namespace or default_namespace)

    # --- requests ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, name: Optional[str] = None) -> Iterator[None]:
        """ApiException and connection failures as ApiError (JobNotFound for a 404 on `name`)."""
        try:
            yield
        except ApiException as error:
            raise api_error(error, name, self.where) from None
        except NETWORK_ERRORS as error:
            raise ApiError(None, "Unreachable", f"cannot reach the API server at {self.host}: {describe(error)}") \
                from None

    def _call(self, call: Callable[..., Any], *args: Any, name: Optional[str] = None, **kwargs: Any) -> Any:
        with self._errors(name):
            return self.api._call(call, *args, **kwargs)

    # --- jobs -------------------------------------------------------------------------------

    def create(self, document: dict[str, Any], job: FineTuneJob) -> Job:
        metadata = document.setdefault("metadata", {})
        namespace = metadata.get("namespace")
        if namespace and namespace != self.namespace:
            raise InvalidJob([Problem("metadata.namespace", f"{namespace!r}, but this client works in namespace "
                                      f"{self.namespace!r}: use Client(namespace={namespace!r}) (kubetune -n "
                                      f"{namespace})")])
        metadata["namespace"] = self.namespace
        return Job.from_wire(self._call(self.api.custom.create_namespaced_custom_object, GROUP, VERSION,
                                        self.namespace, PLURAL, document))

    def get(self, name: str) -> Job:
        return Job.from_wire(self._call(self.api.custom.get_namespaced_custom_object, GROUP, VERSION,
                                        self.namespace, PLURAL, name, name=name))

    def list(self, label_selector: Optional[str], all_namespaces: bool) -> list[Job]:
        selector = {"label_selector": label_selector} if label_selector else {}
        if all_namespaces:
            listed = self._call(self.api.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **selector)
        else:
            listed = self._call(self.api.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                PLURAL, **selector)
        return [Job.from_wire(item) for item in listed.get("items") or []]

    def _patch_spec(self, name: str, spec: dict[str, Any]) -> Job:
        """A JSON merge patch of the job's spec (the API server checks it against the CRD's rules)."""
        return Job.from_wire(self._call(self.api.custom.patch_namespaced_custom_object, GROUP, VERSION,
                                        self.namespace, PLURAL, name, {"spec": spec}, name=name))

    def scale(self, name: str, nodes: int) -> Job:
        resized(self.get(name), nodes)
        return self._patch_spec(name, {"resources": {"nodes": nodes}})

    def suspend(self, name: str) -> Job:
        return self._patch_spec(name, {"runPolicy": {"suspend": True}})

    def resume(self, name: str) -> Job:
        return self._patch_spec(name, {"runPolicy": {"suspend": False}})

    def delete(self, name: str, wait: bool, remove_files: bool) -> None:
        if remove_files:
            raise ValueError("remove_files applies to local runs; in a cluster, deleting a job deletes what it "
                             "created (owner references)")
        self._call(self.api.custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name,
                   propagation_policy="Background", name=name)
        while wait and self.api.get(KIND, self.namespace, name) is not None:
            time.sleep(POLL_SECONDS)

    # --- waiting ----------------------------------------------------------------------------

    def changes(self, name: str, deadline: Optional[float], poll_interval_s: float) -> Iterator[Job]:
        """The job now, then again on every change a watch of it reports, until the deadline.
        After each watch ends the job is read once more; when watches fail, it is polled."""
        job = self.get(name)
        yield job
        failures = 0
        while (left := _left(deadline)) is None or left > 0:
            if failures < 2:
                try:
                    for document in self._watch(name, job.raw["metadata"].get("resourceVersion"), left):
                        job = Job.from_wire(document)
                        yield job
                    failures = 0
                except (ApiException, *NETWORK_ERRORS):
                    failures += 1  # 410 Gone, a watch RBAC forbids, a dropped connection: read, and go on
            else:
                time.sleep(poll_interval_s if left is None else min(poll_interval_s, left))
            job = self.get(name)
            yield job

    def _watch(self, name: str, version: Optional[str], left: Optional[float]) -> Iterator[dict[str, Any]]:
        seconds = max(1, math.ceil(min(left if left is not None else WATCH_SECONDS, WATCH_SECONDS)))
        stream = watch.Watch().stream(
            self.api.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
            field_selector=f"metadata.name={name}", resource_version=version, timeout_seconds=seconds,
            deserialize=False, _request_timeout=(self.api.timeout, seconds + 10))
        for event in stream:
            document = event.get("object") or {}
            if event.get("type") not in ("ADDED", "MODIFIED", "DELETED") or \
                    (document.get("metadata") or {}).get("name") != name:  # a server may ignore the selector
                continue
            if event["type"] == "DELETED":
                raise JobNotFound(name, self.where)
            yield document

    # --- pods, logs, Events -----------------------------------------------------------------

    def pods(self, name: str, role: str) -> list[PodState]:
        return [PodState.of(pod) for pod in self._pods(name, role)]

    def _pods(self, name: str, role: str) -> list[dict[str, Any]]:
        with self._errors():
            return self.api.pods(self.namespace, name, role)

    def _pod(self, name: str, role: str, ordinal: int) -> Optional[dict[str, Any]]:
        """The pod logs are read from: the worker (or generation server) of that ordinal, or
        the newest pod of the role's Job."""
        if role in STATEFUL_ROLES:
            return self._read_pod(pod_name(name, role, ordinal))
        pods = self._pods(name, role)
        return max(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "") if pods else None

    def _read_pod(self, pod: str) -> Optional[dict[str, Any]]:
        with self._errors():
            return self.api.get("Pod", self.namespace, pod)

    def logs(self, name: str, role: str, ordinal: int, follow: bool, tail_lines: Optional[int],
             previous: bool) -> Iterator[str]:
        if follow:
            yield from self._follow(name, role, ordinal, tail_lines)
            return
        pod = self._pod(name, role, ordinal)
        if pod is None:
            raise ApiError(404, "NotFound", f"{name} has no {role} pod" + (
                f" {pod_name(name, role, ordinal)}" if role in STATEFUL_ROLES else "") + " now")
        with self._errors():
            response = self.api.core.read_namespaced_pod_log(
                pod["metadata"]["name"], self.namespace, tail_lines=tail_lines, previous=previous or None,
                _preload_content=False, _request_timeout=self.api.timeout)
            yield from _lines(response)

    def _follow(self, name: str, role: str, ordinal: int, tail_lines: Optional[int]) -> Iterator[str]:
        """Each container of the pod in turn, as it restarts (a recreated pod, too), until the
        job is done with the pod: lines already given are not given again."""
        given: dict[tuple[str, int], int] = {}  # (pod uid, restart count) -> lines given
        followed: set[tuple[str, int]] = set()  # containers whose stream ended
        while True:
            pod = self._pod(name, role, ordinal)
            key, running = _container(pod)
            if key is None or key in followed:
                if self._done_with(name, role, pod):
                    return
                if running:
                    followed.discard(key)  # its stream dropped while it runs: read on from where it was
                time.sleep(POLL_SECONDS)
                continue
            skip = given.get(key, 0)
            with self._errors():
                response = self.api.core.read_namespaced_pod_log(
                    pod["metadata"]["name"], self.namespace, follow=True,
                    tail_lines=tail_lines if not given else None, _preload_content=False,
                    _request_timeout=(self.api.timeout, FOLLOW_READ_SECONDS))
            try:
                for line in _lines(response):
                    if skip:
                        skip -= 1
                        continue
                    given[key] = given.get(key, 0) + 1
                    yield line
            except NETWORK_ERRORS:
                pass  # a silent or dropped stream: read on, from where it was, while the container runs
            given.setdefault(key, 0)
            followed.add(key)

    def _done_with(self, name: str, role: str, pod: Optional[dict[str, Any]]) -> bool:
        """Whether no more output will come for the followed pod: the job is gone or over, its
        workers are (scaled to zero after training), or a batch pod has finished."""
        try:
            phase = self.get(name).phase
        except JobNotFound:
            return True
        if done_with_pods(role, phase):
            return True
        return pod is not None and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")

    def events(self, job: Job) -> list[Event]:
        listed = self._call(self.api.core.list_namespaced_event, self.namespace,
                            field_selector=f"involvedObject.kind={KIND},involvedObject.name={job.name}")
        events = []
        for item in listed.get("items") or []:
            involved = item.get("involvedObject") or {}
            if involved.get("name") != job.name or involved.get("kind") != KIND or \
                    (job.uid and involved.get("uid") not in (None, job.uid)):  # an earlier job of that name
                continue
            when = item.get("lastTimestamp") or item.get("eventTime") or item.get("firstTimestamp") or \
                (item.get("metadata") or {}).get("creationTimestamp")
            events.append(Event(parse_time(when), item.get("type", "Normal"), item.get("reason", ""),
                                item.get("message", "")))
        return events


def _left(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else deadline - time.monotonic()


def _container(pod: Optional[dict[str, Any]]) -> tuple[Optional[tuple[str, int]], bool]:
    """The pod's current container once it has started, as (pod uid, restarts), and whether it runs."""
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    state = set(statuses[0].get("state") or {}) if statuses else set()
    if pod is None or not state & {"running", "terminated"}:
        return None, False
    return (pod["metadata"].get("uid", ""), int(statuses[0].get("restartCount", 0))), "running" in state


def _lines(response: Any) -> Iterator[str]:
    """The lines of a streamed answer as they arrive; a last line without a newline too."""
    buffer = b""
    try:
        for chunk in response.stream(amt=None, decode_content=False):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace")
        if buffer:
            yield buffer.decode(errors="replace")
    finally:
        response.close()
        response.release_conn()
