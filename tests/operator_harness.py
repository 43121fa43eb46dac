"""The real kopf operator against the emulated API server, both on an event loop in a thread of
their own, so tests (and the test kubelet) use the blocking Kubernetes client like any client."""

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import kopf
import yaml
import kubernetes.client
from kubernetes.config import kube_config

from kube_emulator import make_api_server
from kubetune.handlers.cluster import USER_AGENT, Cluster
from kubetune.handlers.metrics import OperatorMetrics
from kubetune.handlers.reconcile import OperatorContext
from kubetune.handlers.registry import Controller, make_registry
from kubetune.render import RenderSettings

# The Kubernetes client must never read a real kubeconfig in tests.
kube_config.KUBE_CONFIG_DEFAULT_LOCATION = "/nonexistent/kubeconfig"
# Its API classes load lazily (about 1.5 s on first use); pay that once, outside any handler.
_ = (kubernetes.client.CoreV1Api, kubernetes.client.AppsV1Api, kubernetes.client.BatchV1Api,
     kubernetes.client.CustomObjectsApi)

KIND_API = {
    "ConfigMap": ("", "configmaps"), "Service": ("", "services"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"), "Pod": ("", "pods"),
    "StatefulSet": ("apps", "statefulsets"), "Job": ("batch", "jobs"),
}
VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "UPDATE": "patch", "DELETE": "delete"}


class Harness:
    def __init__(self):
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="api-server")
        self.api_server = None
        self.url = ""
        self.events: list[tuple[str, str, str, str]] = []  # (job, type, reason, message)
        self._operator: Optional[asyncio.Task] = None

    # --- the API server ---------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        from kmock import Server

        self._stop = asyncio.Event()
        async with make_api_server() as api_server, Server(api_server):
            self.api_server = api_server
            self.url = str(api_server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> "Harness":
        self._thread.start()
        assert self._ready.wait(10), "the emulated API server did not start"
        self._connect()
        return self

    def _connect(self) -> None:
        """The tests' own client (a fresh connection pool: kopf cancels, when it stops, the
        server-side tasks of connections opened while it ran)."""
        self.client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=self.url))
        self.cluster = Cluster(self.client)
        self.client.user_agent = "kubetune-tests"

    def __exit__(self, *exc: Any) -> None:
        self.stop_operator()
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    # --- the operator -----------------------------------------------------------------------

    def start_operator(self, interval: float = 0.3, cluster: Optional[Cluster] = None,
                       settings: RenderSettings = RenderSettings(), workers: int = 4,
                       liveness_endpoint: Optional[str] = None, watch_seconds: int = 300) -> OperatorContext:
        context = OperatorContext(cluster or Cluster(kubernetes.client.ApiClient(
            kubernetes.client.Configuration(host=self.url)), request_timeout=3), settings, OperatorMetrics(),
            post_event=self._record_event, progress_timeout=0.5)
        self.context = context
        self.controller = Controller(context, interval=interval, workers=workers, watch_seconds=watch_seconds)
        registry = make_registry(self.controller, login=False)

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=self.url)

        settings_ = kopf.OperatorSettings()
        settings_.scanning.disabled = True  # the emulator serves no CRD or namespace watching
        settings_.posting.enabled = True

        async def start() -> asyncio.Task:
            started = asyncio.Event()
            task = asyncio.create_task(kopf.operator(registry=registry, settings=settings_, clusterwide=True,
                                                     standalone=True, ready_flag=started,
                                                     liveness_endpoint=liveness_endpoint))
            await asyncio.wait_for(started.wait(), 15)
            return task

        self._operator = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=20)
        return context

    def stop_operator(self) -> None:
        """Stop kopf as a killed process would stop: at once, mid-work."""
        if self._operator is not None:
            self.controller.stop()  # its threads, which a killed process would lose with it
            self._loop.call_soon_threadsafe(self._operator.cancel)
            # Wait until kopf has really finished (polled from here: kopf cancels every task
            # created after it started, a stopper coroutine and the server side of every
            # connection opened meanwhile included).
            deadline = time.monotonic() + 30
            while not self._operator.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert self._operator.done(), "kopf did not stop"
            self._operator = None
            self._connect()

    def _record_event(self, body: dict, kind: str, reason: str, message: str, name: str) -> bool:
        created = self.context.cluster.post_event(body, kind, reason, message, name)
        if created:
            self.events.append((body["metadata"]["name"], kind, reason, message))
        return created

    # --- for tests --------------------------------------------------------------------------

    def objects(self, kind: str, job: str) -> list[dict]:
        """Live objects of a kind labelled with the job's name."""
        group, plural = KIND_API[kind]
        found = []
        for (resource, _, _), obj in list(self.api_server.objects.items()):
            if obj.deleted or resource.plural != plural or (resource.group or "") != group:
                continue
            labels = obj.raw.get("metadata", {}).get("labels") or {}
            if labels.get("kubetune.io/job-name") == job:
                found.append(obj.raw)
        return found

    def requests(self) -> set[tuple[str, str, str]]:
        """(apiGroup, resource[/subresource], verb) of every API request the operator made (its
        own client and kopf's, told apart from the tests' by User-Agent)."""
        seen = set()
        for request in list(self.api_server):
            agent = request.headers.get("User-Agent", "")
            if not agent.startswith((USER_AGENT, "kopf/")):
                continue
            if request.resource is None or request.resource.plural is None or request.action is None:
                continue  # discovery and /version
            resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
            seen.add((request.resource.group or "", resource, VERBS[request.action.name]))
        return seen


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (KeyError, IndexError, TypeError, AttributeError) as error:
            last_error = error
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check} ({last_error})")


RBAC_RULES = Path(__file__).resolve().parent.parent / "operator" / "kubetune" / "handlers" / "rbac-rules.yaml"


def allowed_requests() -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the RBAC rules the chart installs allow."""
    allowed = set()
    rules = yaml.safe_load(RBAC_RULES.read_text())
    for rule in rules["rules"] + rules["leaderElectionRules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    allowed.add((group, resource, verb))
    return allowed
