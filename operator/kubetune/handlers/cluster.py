"""The operator's reads and writes, through the official Kubernetes Python client.

Objects go in and come out as plain camelCase dicts (as rendered, as stored), so the
functional core never sees client model classes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Optional

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from ..api.models import GROUP, KIND, PLURAL, VERSION
from ..render.naming import JOB_NAME_LABEL, ROLE_LABEL

USER_AGENT = "kubetune-operator/0.1.0"


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


class Cluster:
    def __init__(self, api_client: kubernetes.client.ApiClient, request_timeout: float = 30.0):
        api_client.user_agent = USER_AGENT  # tells the operator's requests apart in audit logs
        # A hung API call must not hold a handler (and kopf's shutdown) forever.
        self.timeout = request_timeout
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)

    # --- reads ------------------------------------------------------------------------------

    def _read(self, call, *args) -> Optional[dict[str, Any]]:
        try:
            return _plain(call(*args, _preload_content=False, _request_timeout=self.timeout))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def stateful_set(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self._read(self.apps.read_namespaced_stateful_set, name, namespace)

    def claim(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self._read(self.core.read_namespaced_persistent_volume_claim, name, namespace)

    def batch_job(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self._read(self.batch.read_namespaced_job, name, namespace)

    def fine_tune_job(self, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self._read(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)

    def fine_tune_jobs(self, namespaces: list[str]) -> list[dict[str, Any]]:
        """Every FineTuneJob in these namespaces (all namespaces when none are named)."""
        if not namespaces:
            response = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False,
                                                              _request_timeout=self.timeout)
            return _plain(response)["items"]
        return [item for namespace in namespaces for item in _plain(self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _preload_content=False, _request_timeout=self.timeout))["items"]]

    def pods(self, namespace: str, job_name: str, role: str) -> list[dict[str, Any]]:
        selector = f"{JOB_NAME_LABEL}={job_name},{ROLE_LABEL}={role}"
        response = self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False,
                                              _request_timeout=self.timeout)
        return sorted(_plain(response)["items"], key=lambda pod: pod["metadata"]["name"])

    # --- writes -----------------------------------------------------------------------------

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create the object unless one of that name exists; True when it was created."""
        namespace = manifest["metadata"]["namespace"]
        create = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
            "StatefulSet": self.apps.create_namespaced_stateful_set,
            "Job": self.batch.create_namespaced_job,
        }[manifest["kind"]]
        try:
            _done(create(namespace, manifest, _preload_content=False, _request_timeout=self.timeout))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def delete_pods(self, namespace: str, job_name: str, role: str) -> None:
        """Delete a job's pods of one role; their controller creates them anew."""
        for pod in self.pods(namespace, job_name, role):
            try:
                _done(self.core.delete_namespaced_pod(pod["metadata"]["name"], namespace, _preload_content=False,
                                                      _request_timeout=self.timeout))
            except ApiException as error:
                if error.status != 404:
                    raise

    def patch_stateful_set(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        _done(self.apps.patch_namespaced_stateful_set(name, namespace, patch, _preload_content=False,
                                                      _request_timeout=self.timeout))

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
            _done(self.core.create_namespaced_event(meta["namespace"], event, _preload_content=False,
                                                    _request_timeout=self.timeout))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def patch_job_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A JSON merge patch of the job's status (a key set to None is removed)."""
        _done(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": patch}, _preload_content=False,
            _request_timeout=self.timeout))

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            _done(self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background", _preload_content=False,
                _request_timeout=self.timeout))
        except ApiException as error:
            if error.status != 404:
                raise
