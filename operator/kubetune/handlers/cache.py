"""The operator's view of the cluster, fed by list+watch, so a reconcile reads memory, not the API.

One informer thread per kind (and namespace) lists, then watches from the list's
resourceVersion, and lists again whenever the watch ends (its timeout, a break, a 410, or
silence), replacing what it held. Every change of an object that carries a job's label, and of the job itself,
wakes that job's reconcile. What the operator writes goes into the view at once (the object
the API server answered), so a reconcile right after a write never decides from the state
before it; a watch event that is older than what is held is ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Optional

import urllib3
from kubernetes.client.exceptions import ApiException

from ..render.naming import JOB_NAME_LABEL, ROLE_LABEL
from .cluster import CHILD_KINDS, FINE_TUNE_JOB, Cluster, NamedReads, describe, watch_read_timeout

log = logging.getLogger("kubetune.cache")
WATCHED_KINDS = (FINE_TUNE_JOB, *CHILD_KINDS)
WATCH_SECONDS = 300  # each watch ends after this, and the kind is listed again
MAX_BACKOFF_SECONDS = 30.0  # the longest wait before listing again after failures

Key = tuple[str, str]  # (namespace, name)
OnChange = Callable[[Key], None]  # wakes the reconcile of the job with this key


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _version(obj: dict[str, Any]) -> int:
    version = (obj.get("metadata") or {}).get("resourceVersion") or ""
    return int(version) if version.isdigit() else -1


def job_of(kind: str, obj: dict[str, Any]) -> Optional[Key]:
    """The FineTuneJob an object belongs to: itself, or the one its label names."""
    namespace, name = _key(obj)
    if kind == FINE_TUNE_JOB:
        return namespace, name
    job = ((obj.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL)
    return (namespace, job) if job else None


class ClusterCache(NamedReads):
    """Objects by kind and (namespace, name); worker and evaluator pods also by job and role."""

    def __init__(self, on_change: OnChange = lambda key: None):
        self.on_change = on_change
        self._objects: dict[str, dict[Key, dict[str, Any]]] = {kind: {} for kind in WATCHED_KINDS}
        self._pods: dict[tuple[str, str, str], set[str]] = {}  # (namespace, job, role) → pod names
        self._lock = threading.Lock()

    # --- fed by the informers and by the operator's own writes ------------------------------

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) or one object the API server answered."""
        key = _key(obj)
        with self._lock:
            held = self._objects[kind].get(key)
            if event == "DELETED":
                if held is not None and _version(held) <= _version(obj):
                    self._remove(kind, key)
            elif held is None or _version(obj) >= _version(held) or _version(obj) < 0:
                self._put(kind, key, obj)
            else:
                return
        self._changed(kind, obj)

    def replace(self, kind: str, namespace: Optional[str], items: Iterable[dict[str, Any]]) -> None:
        """What a fresh list says is all there is of a kind (in a namespace, or everywhere)."""
        items = list(items)
        fresh = {_key(item): item for item in items}
        with self._lock:
            stored = self._objects[kind]
            gone = [key for key in stored if (namespace is None or key[0] == namespace) and key not in fresh]
            changed = [stored[key] for key in gone]
            for key in gone:
                self._remove(kind, key)
            for key, item in fresh.items():
                if stored.get(key) is None or _version(stored[key]) != _version(item):
                    changed.append(item)
                    self._put(kind, key, item)
        for obj in changed:
            self._changed(kind, obj)

    def _put(self, kind: str, key: Key, obj: dict[str, Any]) -> None:
        if key in self._objects[kind]:
            self._remove(kind, key)  # its labels, and so its index entry, may have changed
        self._objects[kind][key] = obj
        if kind == "Pod":
            labels = obj["metadata"].get("labels") or {}
            self._pods.setdefault((key[0], labels.get(JOB_NAME_LABEL, ""), labels.get(ROLE_LABEL, "")),
                                  set()).add(key[1])

    def _remove(self, kind: str, key: Key) -> None:
        obj = self._objects[kind].pop(key)
        if kind == "Pod":
            labels = obj["metadata"].get("labels") or {}
            index = (key[0], labels.get(JOB_NAME_LABEL, ""), labels.get(ROLE_LABEL, ""))
            names = self._pods.get(index, set())
            names.discard(key[1])
            if not names:
                self._pods.pop(index, None)

    def _changed(self, kind: str, obj: dict[str, Any]) -> None:
        job = job_of(kind, obj)
        if job:
            self.on_change(job)

    # --- read by reconciles (the same reads as Cluster's) -----------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
        return self._objects[kind].get((namespace, name))

    def pods(self, namespace: str, job_name: str, role: str) -> list[dict[str, Any]]:
        with self._lock:
            names = sorted(self._pods.get((namespace, job_name, role), ()))
            return [self._objects["Pod"][(namespace, name)] for name in names]

    def jobs(self) -> list[Key]:
        with self._lock:
            return sorted(self._objects[FINE_TUNE_JOB])

    def size(self) -> dict[str, int]:
        return {kind: len(objects) for kind, objects in self._objects.items()}


class Informer(threading.Thread):
    """List, then watch, one kind in one namespace (None: all), for as long as the operator runs.

    Every watch asks the server to end it after `watch_seconds`, and reads with a timeout a
    little longer, so a watch that went silent (the connection open, nothing delivered) ends
    too. After every watch, however it ended, a fresh list replaces the kind's whole view:
    whatever a watch missed is corrected within one watch timeout.
    """

    def __init__(self, cluster: Cluster, cache: ClusterCache, kind: str, namespace: Optional[str],
                 stopping: threading.Event, watch_seconds: int = WATCH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(daemon=True, name=f"informer-{kind}-{namespace or 'all'}")
        self.cluster, self.cache, self.kind, self.namespace = cluster, cache, kind, namespace
        self.stopping, self.watch_seconds, self.clock = stopping, watch_seconds, clock
        self.synced = threading.Event()
        self.halted = threading.Event()  # this informer alone stops
        self.contact = clock()  # the last list, watch opened, or event: when the view was last known good

    def stop(self) -> None:
        self.halted.set()

    def _stopped(self) -> bool:
        return self.stopping.is_set() or self.halted.is_set()

    def run(self) -> None:
        failures = 0
        while not self._stopped():
            try:
                items, version = self.cluster.list(self.kind, self.namespace)
                self.cache.replace(self.kind, self.namespace, items)
                self._touch()
                self.synced.set()
                failures = 0
                self._watch(version)
            except Exception as error:  # the API server may be away for a while: list again
                if self._stopped():
                    return
                delay = self._after(error, failures)
                failures = failures + 1 if delay else failures
                self.stopping.wait(delay)

    def _after(self, error: Exception, failures: int) -> float:
        """Seconds to wait before listing again after a watch or list failed (0: at once)."""
        if isinstance(error, ApiException) and error.status == 410:
            return 0.0  # the version expired: an ordinary end of a watch
        if isinstance(error, urllib3.exceptions.ReadTimeoutError):
            log.warning(f"the watch of {self.kind} delivered nothing for {watch_read_timeout(self.watch_seconds):.0f} s "
                        "and was not ended by the server; listing again")
            return 0.0
        delay = min(0.5 * 2 ** (failures + 1), MAX_BACKOFF_SECONDS)
        log.warning(f"watching {self.kind}: {describe(error)}; listing again in {delay:.1f} s")
        return delay

    def _watch(self, version: str) -> None:
        """Follow changes until the watch ends."""
        for event, obj in self.cluster.watch(self.kind, self.namespace, version, self.watch_seconds):
            self._touch()
            if self._stopped():
                return
            if event == "ERROR":
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            if event == "BOOKMARK" or not self._wanted(obj):
                continue
            self.cache.apply(self.kind, event, obj)

    def _touch(self) -> None:
        self.contact = self.clock()

    def problem(self) -> Optional[str]:
        """Why this informer's view cannot be trusted now, or None."""
        if not self.is_alive():
            return f"the {self.name} thread is not running"
        silent = self.clock() - self.contact
        if silent > self.stale_after():
            return f"{self.name} has not listed or watched for {silent:.0f} s"
        return None

    def stale_after(self) -> float:
        """A healthy informer lists at least once a watch timeout; after failures it waits up to
        MAX_BACKOFF_SECONDS before the next list, and a list may take a request timeout."""
        return watch_read_timeout(self.watch_seconds) + MAX_BACKOFF_SECONDS + self.cluster.timeout

    def _wanted(self, obj: dict[str, Any]) -> bool:
        """The kind's label selector, checked here too (a watch may not apply it)."""
        selector = CHILD_KINDS[self.kind].selector if self.kind in CHILD_KINDS else ""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(term in labels for term in filter(None, selector.split(",")))


def start_informers(cluster: Cluster, cache: ClusterCache, namespaces: list[str],
                    stopping: threading.Event, watch_seconds: int = WATCH_SECONDS) -> list[Informer]:
    informers = [Informer(cluster, cache, kind, namespace, stopping, watch_seconds)
                 for kind in WATCHED_KINDS for namespace in (namespaces or [None])]
    for informer in informers:
        informer.start()
    return informers
