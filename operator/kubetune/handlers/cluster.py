"""The operator's reads and writes, through the official Kubernetes Python client.

Objects go in and come out as plain camelCase dicts (as rendered, as stored), so the
functional core never sees client model classes. Every call is rate-limited like
client-go's (qps and burst), and a transient failure (a 5xx, a 429, a conflict, a dropped
connection) is retried a few times with backoff, so one bad answer does not throw away a
whole reconcile. Every write the operator makes is idempotent, so every call may be retried.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Optional

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ..api.models import GROUP, KIND, PLURAL, VERSION
from ..render.naming import JOB_NAME_LABEL, ROLE_LABEL

USER_AGENT = "kubetune-operator/0.1.0"
log = logging.getLogger("kubetune.cluster")

FINE_TUNE_JOB = KIND


@dataclass(frozen=True)
class Kind:
    """A kind the operator reads (from its cache) and may create."""

    name: str
    api: str  # the Cluster attribute holding its API group's client
    snake: str  # as in the client's method names: create_namespaced_<snake>
    selector: str = ""  # the label selector of its list and watch (the operator's own objects)


# One table of the child kinds: the cache watches each, the operator creates them.
CHILD_KINDS = {kind.name: kind for kind in (
    Kind("ConfigMap", "core", "config_map", JOB_NAME_LABEL),
    Kind("Service", "core", "service", JOB_NAME_LABEL),
    # A pvc:// output claim is the user's, unlabelled: every claim is watched.
    Kind("PersistentVolumeClaim", "core", "persistent_volume_claim"),
    Kind("StatefulSet", "apps", "stateful_set", JOB_NAME_LABEL),
    Kind("Job", "batch", "job", JOB_NAME_LABEL),
    Kind("Pod", "core", "pod", f"{JOB_NAME_LABEL},{ROLE_LABEL}"),
)}

RETRIED_STATUSES = {409, 429, 500, 502, 503, 504}
NETWORK_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


def _plain(response) -> Any:
    return json.loads(_done(response))


def _done(response) -> bytes:
    """The whole body, read, so the connection goes back to the pool for the next request
    (an unread response leaves it busy, and the next request opens a new one)."""
    try:
        return response.data
    finally:
        response.release_conn()


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns old into new: removed keys become None."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    patch = {key: None for key in old.keys() - new.keys()}
    for key, value in new.items():
        if key not in old or old[key] != value:
            patch[key] = merge_patch(old.get(key), value)
    return patch


def error_reason(error: ApiException) -> str:
    try:
        return json.loads(error.body or "{}").get("reason") or ""
    except (ValueError, AttributeError):
        return ""


def describe(error: Exception) -> str:
    """One line about a failed call (an ApiException's own text holds the whole response)."""
    if isinstance(error, ApiException):
        return f"{error.status} {error_reason(error) or error.reason}"
    return f"{type(error).__name__}: {error}".splitlines()[0]


def already_exists(error: ApiException) -> bool:
    """A create answered 409 because the name is taken (not a transient conflict)."""
    return error.status == 409 and error_reason(error) != "Conflict"


class RateLimiter:
    """A token bucket: `qps` requests per second on average, bursts of up to `burst`."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.qps, self.burst, self._clock = qps, max(1, burst), clock
        self._tokens, self._last = float(self.burst), clock()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if self.qps <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1
            delay = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if delay:
            time.sleep(delay)


def retry_delay(error: Exception, attempt: int) -> Optional[float]:
    """Seconds to wait before trying a failed call again; None when it must not be retried."""
    if isinstance(error, ApiException):
        if error.status not in RETRIED_STATUSES or already_exists(error):
            return None
        if error.status == 429:
            after = (error.headers or {}).get("Retry-After", "")
            if after.isdigit():
                return min(float(after), 10.0)
    elif not isinstance(error, NETWORK_ERRORS):
        return None
    return min(0.1 * 2 ** attempt, 2.0) * random.uniform(0.5, 1.0)


def watch_read_timeout(seconds: int) -> float:
    """How long a watch asked to end after `seconds` may stay silent before the client gives
    up on it: the server's own end, with room for its lateness."""
    return seconds * 1.1 + 1.0


class NamedReads:
    """The reads a reconcile makes by name, over `get` (the API server's, or the cache's)."""

    def get(self, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        raise NotImplementedError

    def stateful_set(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self.get("StatefulSet", namespace, name)

    def claim(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self.get("PersistentVolumeClaim", namespace, name)

    def batch_job(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self.get("Job", namespace, name)

    def fine_tune_job(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self.get(FINE_TUNE_JOB, namespace, name)


class Cluster(NamedReads):
    def __init__(self, api_client: kubernetes.client.ApiClient, request_timeout: float = 30.0,
                 qps: float = 100.0, burst: int = 200, attempts: int = 4):
        api_client.user_agent = USER_AGENT  # tells the operator's requests apart in audit logs
        # A hung API call must not hold a handler (and kopf's shutdown) forever.
        self.timeout = request_timeout
        self.limiter = RateLimiter(qps, burst)
        self.attempts = attempts
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    def _call(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call, rate-limited, its answer read and parsed, transient failures retried."""
        for attempt in range(self.attempts):
            self.limiter.wait()
            try:
                return _plain(call(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs))
            except Exception as error:
                delay = retry_delay(error, attempt) if attempt + 1 < self.attempts else None
                if delay is None:
                    raise
                log.warning(f"{getattr(call, '__name__', 'call')}: {describe(error)}; retrying in {delay:.1f} s")
                time.sleep(delay)
        raise AssertionError("unreachable")

    # --- reads ------------------------------------------------------------------------------

    def _read(self, call, *args) -> Optional[dict[str, Any]]:
        try:
            return self._call(call, *args)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def get(self, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        if kind == FINE_TUNE_JOB:
            return self._read(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        spec = CHILD_KINDS[kind]
        return self._read(getattr(getattr(self, spec.api), f"read_namespaced_{spec.snake}"), name, namespace)

    def _list_call(self, kind: str, namespace: Optional[str]) -> tuple[Callable[..., Any], tuple, dict]:
        """The list function of a kind, its arguments, and its label selector."""
        if kind == FINE_TUNE_JOB:
            if namespace is None:
                return self.custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL), {}
            return self.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL), {}
        spec = CHILD_KINDS[kind]
        api = getattr(self, spec.api)
        selector = {"label_selector": spec.selector} if spec.selector else {}
        if namespace is None:
            return getattr(api, f"list_{spec.snake}_for_all_namespaces"), (), selector
        return getattr(api, f"list_namespaced_{spec.snake}"), (namespace,), selector

    def list(self, kind: str, namespace: Optional[str]) -> tuple[list[dict[str, Any]], str]:
        """Every object of a kind (in one namespace, or all), and the list's resourceVersion."""
        call, args, kwargs = self._list_call(kind, namespace)
        listed = self._call(call, *args, **kwargs)
        items = listed.get("items") or []
        if kind != FINE_TUNE_JOB:  # the typed lists leave out kind and apiVersion
            for item in items:
                item.setdefault("kind", kind)
        return items, (listed.get("metadata") or {}).get("resourceVersion", "")

    def watch(self, kind: str, namespace: Optional[str], resource_version: str,
              seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) of each change after resource_version, until the server ends the watch."""
        call, args, kwargs = self._list_call(kind, namespace)
        self.limiter.wait()
        response = call(*args, **kwargs, watch=True, resource_version=resource_version, timeout_seconds=seconds,
                        allow_watch_bookmarks=True, _preload_content=False,
                        _request_timeout=(self.timeout, watch_read_timeout(seconds)))
        try:
            for line in iter_resp_lines(response):
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]
        finally:
            response.close()
            response.release_conn()

    def pods(self, namespace: str, job_name: str, role: str) -> list[dict[str, Any]]:
        selector = f"{JOB_NAME_LABEL}={job_name},{ROLE_LABEL}={role}"
        listed = self._call(self.core.list_namespaced_pod, namespace, label_selector=selector)
        return sorted(listed["items"], key=lambda pod: pod["metadata"]["name"])

    # --- writes -----------------------------------------------------------------------------

    def create(self, manifest: dict[str, Any]) -> Optional[dict[str, Any]]:
        """Create the object unless one of that name exists; the object when it was created."""
        spec = CHILD_KINDS[manifest["kind"]]
        create = getattr(getattr(self, spec.api), f"create_namespaced_{spec.snake}")
        try:
            return self._call(create, manifest["metadata"]["namespace"], manifest)
        except ApiException as error:
            if already_exists(error):
                return None
            raise

    def _delete(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Delete an object; one already gone is fine."""
        try:
            self._call(call, *args, **kwargs)
        except ApiException as error:
            if error.status != 404:
                raise

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete one pod; its controller creates it anew."""
        self._delete(self.core.delete_namespaced_pod, name, namespace)

    def patch_stateful_set(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call(self.apps.patch_namespaced_stateful_set, name, namespace, patch)

    def patch_config_map(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call(self.core.patch_namespaced_config_map, name, namespace, patch)

    def post_event(self, job: dict[str, Any], kind: str, reason: str, message: str, name: str) -> bool:
        """A core/v1 Event about the job (what `kubectl describe ftj` and `kubectl events` show).

        Its name is fixed by the caller, so posting it again is answered 409 and nothing is
        duplicated; True when it was created now."""
        meta = job["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": job.get("apiVersion", f"{GROUP}/{VERSION}"), "kind": job.get("kind", KIND),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": kind, "reason": reason, "message": message[:1024], "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubetune-operator"},
        }
        try:
            self._call(self.core.create_namespaced_event, meta["namespace"], event)
        except ApiException as error:
            if already_exists(error):
                return False
            raise
        return True

    def patch_job_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the job's status (a key set to None is removed); the job as stored."""
        return self._call(self.custom.patch_namespaced_custom_object_status,
                          GROUP, VERSION, namespace, PLURAL, name, {"status": patch})

    def delete_batch_job(self, namespace: str, name: str) -> None:
        """Delete a batch Job with its pods (as kubectl does)."""
        self._delete(self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")

    def delete_job(self, namespace: str, name: str) -> None:
        self._delete(self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                     propagation_policy="Background")
