"""kmock's KubernetesEmulator, extended with the API-server semantics the operator relies on.

kmock stores objects and serves list/watch/get/create/patch/delete. Added here: server-set
metadata (uid, resourceVersion, generation, creationTimestamp), 422 on a failed json-patch
`test`, list+watch that honours resourceVersion, label selectors on lists, and
ownerReference garbage collection after a delete.

For benchmarks and fault tests: a FaultPlan (500s, 409s, 429s and latency, for the
operator's requests only), request counts by client, verb and resource at /_emulator/stats,
and a standalone process (`python tests/kube_emulator.py --port P [--faults]`).

Pod logs (GET .../pods/NAME/log with follow, tailLines and previous) are served from text a
test writes (`write_pod_log`, `restart_pod_log`, `end_pod_log`), as a kubelet keeps each
container's output: a follow ends when its container does.

At operator scale, kmock's costs grow with the run: it picks a reaction by re-filtering every
request served so far, and finds an object by scanning every stored one. Here a request is
dispatched by its own filters (QuickDispatch), and objects are indexed by resource, namespace
and name, and dependents by their owner's uid (IndexedObjects): a get costs the same with
6,000 objects stored as with six, and a list or watch costs what its resource holds.
"""

import argparse
import asyncio
import collections
import copy
import datetime
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Optional

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock import KubernetesEmulator, KubernetesScaffold, ObjectsArray, ResourceInfo
from kmock._internal.k8s_views import _parse_resource

if __name__ == "__main__":  # run as a script: this tree's operator package, not an installed one
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from kubetune.api.models import GROUP, KIND, PLURAL, SINGULAR, VERSION  # noqa: E402

FINETUNEJOBS = f"{GROUP}/{VERSION}/{PLURAL}"
# The operator's own client and kopf's (kubetune.handlers.cluster.USER_AGENT, kopf's default).
OPERATOR_AGENTS = ("kubetune-operator", "kopf/")
STATS_PATH = "/_emulator/stats"
VERBS = {kmock.action.LIST: "list", kmock.action.WATCH: "watch", kmock.action.FETCH: "get",
         kmock.action.CREATE: "create", kmock.action.UPDATE: "patch", kmock.action.DELETE: "delete"}
WRITES = {kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def selector_matches(selector: str, labels: dict) -> bool:
    """Equality-based label selectors (a=b,c=d,e), as the operator uses them."""
    for term in filter(None, (selector or "").split(",")):
        key, sep, value = term.partition("=")
        if sep and labels.get(key.strip()) != value.strip().lstrip("="):
            return False
        if not sep and key.strip() not in labels:
            return False
    return True


@attrs.frozen
class Throttled(kmock.KubernetesError):
    """429, with the Retry-After header an API server's priority and fairness sends."""
    status: int = 429
    reason: str = "TooManyRequests"
    message: str = "Too many requests, please try again later (injected)"
    retry_after: int = 1
    details: Any = attrs.field(factory=lambda: {"retryAfterSeconds": 1})


@attrs.define(kw_only=True)
class FaultPlan:
    """What goes wrong, and how often, for the requests of some clients (the operator's by
    default). Decided before a request is served, so a failed request changes nothing; a
    watch may fail when opened, never once it streams."""

    seed: int = 0
    server_error: float = 0.10  # 500
    conflict: float = 0.05  # 409, on creates, patches and deletes only
    throttle: float = 0.05  # 429 with Retry-After: 1
    slow: float = 0.10  # share of requests delayed ...
    delay: float = 0.2  # ... by this many seconds (before any error)
    agents: tuple[str, ...] = OPERATOR_AGENTS  # User-Agent prefixes the plan applies to
    injected: collections.Counter = attrs.field(factory=collections.Counter)  # "500", "409", "429", "latency"
    _random: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def applies(self, request: kmock.Request) -> bool:
        return (request.resource is not None and request.action is not None
                and request.headers.get("User-Agent", "").startswith(self.agents))

    def decide(self, request: kmock.Request) -> tuple[float, Optional[kmock.KubernetesError]]:
        """(seconds to wait, the error to answer with or None) for one request."""
        if not self.applies(request):
            return 0.0, None
        delay = self.delay if self._random.random() < self.slow else 0.0
        if delay:
            self.injected["latency"] += 1
        draw = self._random.random()  # one draw, in bands: 500, then 409 (writes only), then 429
        what = f"{request.method.value} {request.url.path} (injected)"
        if draw < self.server_error:
            self.injected["500"] += 1
            return delay, kmock.KubernetesError(status=500, reason="InternalError", message=f"Internal error: {what}",
                                                details={"causes": [{"message": "injected fault"}]})
        draw -= self.server_error
        if draw < self.conflict:
            if request.action in WRITES:
                self.injected["409"] += 1
                return delay, kmock.KubernetesError(
                    status=409, reason="Conflict", details={"name": request.name or ""},
                    message=f"Operation cannot be fulfilled: {what}: the object has been modified; "
                            "please apply your changes to the latest version and try again")
            return delay, None
        if draw - self.conflict < self.throttle:
            self.injected["429"] += 1
            return delay, Throttled()
        return delay, None


@attrs.define(kw_only=True)
class QuickDispatch(kmock.RawHandler):
    """kmock's dispatch, without its cost per request served so far.

    kmock picks a reaction by asking `request in view`, which filters every request the
    server has ever served (a thousand jobs' worth: tens of milliseconds a request). For a
    view of filters and priorities over this server, the same answer is the filters applied
    to this one request; any other view still asks kmock.
    """

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        priorities = [payload.priorities for payload in self._payloads]
        length = max((len(priority) for priority in priorities), default=0)
        keys = [tuple(-p for p in priority) + (0,) * (length - len(priority)) for priority in priorities]
        for index in sorted(range(len(keys)), key=keys.__getitem__):  # as kmock orders them
            payload = self._payloads[index]
            if self._admits(payload._source, request) and not payload._disabled.is_set():
                try:
                    return await payload(request)
                except kmock.ReactionMismatchError:  # either mismatch or depletion
                    payload._disabled.set()
                except NotImplementedError:  # matched, but nothing to respond with
                    pass
        raise NotImplementedError("no reaction matches the request")

    def _admits(self, view: kmock.View, request: kmock.Request) -> bool:
        while type(view) in (kmock.Filter, kmock.Priority):
            if type(view) is kmock.Filter and not view.criteria(request):
                return False
            view = view._source
        return True if view is self else request in view


Key = tuple[Any, Optional[str], str]  # (resource, namespace, name), as kmock keys its objects


@attrs.define
class ContainerLog:
    """One run of a pod's container: its output so far, and whether it has ended."""

    text: str = ""
    ended: bool = False

    def tail(self, lines: Optional[int]) -> str:
        if lines is None:
            return self.text
        kept = self.text.splitlines(keepends=True)[-lines:] if lines > 0 else []
        return "".join(kept)


@attrs.frozen(eq=False, order=False)
class IndexedObjects(ObjectsArray):
    """kmock's object store, with its keys indexed by resource and namespace, and with the
    keys of the objects each owner uid owns. Soft-deleted objects stay indexed, as they stay
    stored; owners are indexed again after every write through the API (ApiServer._handle)."""

    _by_resource: dict[Any, dict[Optional[str], dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _owned: dict[str, dict[Key, None]] = attrs.field(factory=dict, init=False)  # owner uid -> keys
    _owners_of: dict[Key, tuple[str, ...]] = attrs.field(factory=dict, init=False)

    def __setitem__(self, key, value, /) -> None:
        super().__setitem__(key, value)
        if len(key) == 3:
            resource, namespace, name = _parse_resource(key[0]), key[1], key[2]
            obj = self._objects[resource, namespace, name]
            self._by_resource.setdefault(resource, {}).setdefault(namespace, {})[name] = obj
            self.index_owners((resource, namespace, name))

    def __delitem__(self, key, /) -> None:
        super().__delitem__(key)
        if len(key) == 3:
            resource, namespace, name = _parse_resource(key[0]), key[1], key[2]
            del self._by_resource[resource][namespace][name]
            self._forget_owners((resource, namespace, name))

    def clear(self) -> None:
        super().clear()
        self._by_resource.clear()
        self._owned.clear()
        self._owners_of.clear()

    def lookup(self, resource: Any, namespace: Optional[str], name: str) -> Any:
        """The stored object (maybe soft-deleted), or None: one dict lookup."""
        return self._objects.get((resource, namespace, name))

    def select(self, resource: Any, namespace: Optional[str] = None) -> Iterator[tuple[Key, Any]]:
        """(key, object) of a resource, in one namespace or in all (namespace None)."""
        spaces = self._by_resource.get(resource, {})
        for space in ([namespace] if namespace is not None else list(spaces)):
            for name, obj in list(spaces.get(space, {}).items()):
                yield (resource, space, name), obj

    def stored_resources(self) -> set[Any]:
        return set(self._by_resource)

    def owned_by(self, uid: str) -> list[Key]:
        return list(self._owned.get(uid, ()))

    def index_owners(self, key: Key) -> None:
        """Index again who owns the object at key (its ownerReferences may have changed)."""
        self._forget_owners(key)
        obj = self._objects.get(key)
        if obj is None or obj.deleted:
            return
        owners = tuple(ref.get("uid") for ref in obj.raw.get("metadata", {}).get("ownerReferences") or ()
                       if ref.get("uid"))
        if owners:
            self._owners_of[key] = owners
            for uid in owners:
                self._owned.setdefault(uid, {})[key] = None

    def _forget_owners(self, key: Key) -> None:
        for uid in self._owners_of.pop(key, ()):
            keys = self._owned.get(uid, {})
            keys.pop(key, None)
            if not keys:
                self._owned.pop(uid, None)


@attrs.define(kw_only=True)
class ApiServer(KubernetesEmulator, QuickDispatch):
    faults: Optional[FaultPlan] = None
    operator_agents: tuple[str, ...] = OPERATOR_AGENTS  # how stats tell the operator's requests apart
    keep_requests: bool = True  # False: forget served requests (a long-running process)
    _objects: IndexedObjects = attrs.field(factory=IndexedObjects, init=False)
    _last_rv: int = attrs.field(default=0, init=False)
    _counts: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    _watches_opened: int = attrs.field(default=0, init=False)
    _silenced_up_to: int = attrs.field(default=0, init=False)  # watches numbered up to this are silent
    # Pod output by (namespace, name): each run of its container, oldest first.
    _pod_logs: dict[tuple[str, str], list[ContainerLog]] = attrs.field(factory=dict, init=False)

    def _next_rv(self) -> str:
        self._last_rv += 1
        return str(self._last_rv)

    # --- stats and faults, ahead of everything else -----------------------------------------

    async def _handle(self, request: kmock.Request) -> Any:
        if request.url.path == STATS_PATH:
            return aiohttp.web.json_response(self.stats())
        self._counts[self._classify(request)] += 1
        if not self.keep_requests and len(self._requests) >= 1000:
            self._forget_requests()
        if self.faults is not None:
            delay, error = self.faults.decide(request)
            if delay:
                await asyncio.sleep(delay)
            if error is not None:
                raise error
        return await self._serve_request(request)

    def _classify(self, request: kmock.Request) -> tuple[str, str, str, str]:
        """(operator or other, verb, group/plural, subresource); a watch counts once, when opened."""
        agent = "operator" if request.headers.get("User-Agent", "").startswith(self.operator_agents) else "other"
        if request.resource is None or request.resource.plural is None:
            return agent, "discovery", "", ""
        verb = VERBS.get(request.action) or request.method.value.lower()
        group = request.resource.group
        return agent, verb, f"{group}/{request.resource.plural}" if group else request.resource.plural, \
            request.subresource or ""

    def stats(self) -> dict[str, Any]:
        return {
            "total": sum(self._counts.values()),
            "requests": [{"agent": agent, "verb": verb, "resource": resource, "subresource": subresource,
                          "count": count}
                         for (agent, verb, resource, subresource), count in sorted(self._counts.items())],
            "cpu_seconds": time.process_time(),
            "faults": dict(self.faults.injected) if self.faults else {},
            "objects": sum(1 for obj in self._objects.values() if not obj.deleted),
        }

    def _forget_requests(self) -> None:
        self._requests.clear()
        for payload in self._payloads:
            payload._requests.clear()
        for errors in self._errors:
            errors.clear()

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        response = await super()._render_error(exc)
        if isinstance(exc, Throttled):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    # --- the API ----------------------------------------------------------------------------

    async def _serve_request(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.resource.plural == "pods" and request.subresource == "log":
            return await self._serve_log(request)
        if request.resource is not None and request.name is not None and request.method.value == "PUT":
            return await self._replace(request)
        watched = None  # an object this request may delete: (key, uid)
        if request.resource is not None and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                watched = (key, self.objects[key].raw.get("metadata", {}).get("uid"))
        if request.resource is not None:
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):  # kopf's Events use it
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta.setdefault("generation", 1)
                if request.namespace and "namespace" not in meta:
                    meta["namespace"] = request.namespace
                meta["resourceVersion"] = self._next_rv()
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._stamp_update(request)
            elif request.action == kmock.action.DELETE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    meta = copy.deepcopy(self.objects[key].raw.get("metadata", {}))
                    if meta.get("finalizers") and not meta.get("deletionTimestamp"):
                        self.objects[key]["metadata"] = dict(meta, resourceVersion=self._next_rv())
        try:
            response = await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as error:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(error))
        finally:
            written = self._written_key(request)
            if written is not None:
                self._objects.index_owners(written)
        # Gone now, by a delete or by the patch that removed its last finalizer.
        if watched and watched[1] and self.objects[watched[0]].deleted:
            await self._collect_garbage(watched[1])
        return response

    async def _replace(self, request: kmock.Request) -> Any:
        """PUT (kmock serves none): the whole object, if the client's resourceVersion is current."""
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            stored = self._objects.lookup(*key)
            if stored is None or stored.deleted:
                raise kmock.KubernetesObjectNotFoundError()
            meta = stored.raw.get("metadata", {})
            sent = (request.data.get("metadata") or {}).get("resourceVersion")
            if sent and sent != meta.get("resourceVersion"):
                raise kmock.KubernetesError(status=409, reason="Conflict", message=(
                    f"Operation cannot be fulfilled on {request.resource.plural} \"{request.name}\": the object "
                    "has been modified; please apply your changes to the latest version and try again"))
            replacement = dict(request.data, metadata={
                **(request.data.get("metadata") or {}), "uid": meta.get("uid"), "resourceVersion": self._next_rv(),
                "creationTimestamp": meta.get("creationTimestamp"), "namespace": request.namespace})
            stored.patch(replacement)
            raw = stored.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    def _stamp_update(self, request: kmock.Request) -> None:
        rv = self._next_rv()
        key = (request.resource, request.namespace, request.name)
        stored = self.objects[key].raw if key in self.objects else {}
        if isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = rv
            spec = request.data.get("spec")
            if spec is not None and request.subresource is None and spec != stored.get("spec"):
                meta["generation"] = int(stored.get("metadata", {}).get("generation", 1)) + 1
        elif isinstance(request.data, list):  # json-patch: appended, so `test` ops see the old version
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})

    @staticmethod
    def _written_key(request: kmock.Request) -> Optional[Key]:
        """The key of the object a create, update or delete wrote (its owners may have changed)."""
        if request.resource is None:
            return None
        if request.action in (kmock.action.UPDATE, kmock.action.DELETE) and request.name is not None:
            return request.resource, request.namespace, request.name
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.get("metadata") or {}
            return request.resource, request.namespace or meta.get("namespace"), request.name or meta.get("name")
        return None

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Delete what the deleted object owned (background propagation), recursively."""
        dependents = []
        for key in self._objects.owned_by(owner_uid):
            obj = self._objects.lookup(*key)
            if obj is None or obj.deleted:
                continue
            owners = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(owner.get("uid") == owner_uid for owner in owners):
                dependents.append((key, obj))
        for key, obj in dependents:
            uid = obj.raw.get("metadata", {}).get("uid")
            async with self._lock:
                raw = obj.raw
                obj.delete()
                self._objects.index_owners(key)
                await self._buses[key[0]].put({"type": "DELETED", "object": raw})
            if uid:
                await self._collect_garbage(uid)

    # --- reads and write responses, through the index (kmock scans every object) ----------

    def _get_resources(self) -> list[Any]:
        return list(set(KubernetesScaffold._get_resources(self)) | self._objects.stored_resources())

    def _stored(self, request: kmock.Request, namespace: Optional[str], name: Optional[str]) -> Any:
        return self._objects.lookup(request.resource, namespace, name)

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        obj = self._stored(request, request.namespace, request.name)
        if obj is None or obj.deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: kmock.Request) -> Any:
        meta = request.data.get("metadata", {})
        return self._stored(request, request.namespace or meta.get("namespace"), request.name or meta.get("name")).raw

    async def _serve_update(self, request: kmock.Request) -> Any:
        return self._stored(request, request.namespace, request.name).last.raw

    async def _serve_delete(self, request: kmock.Request) -> Any:
        return self._stored(request, request.namespace, request.name).last.raw

    def _live(self, request: kmock.Request) -> Iterator[tuple[Key, Any]]:
        """(key, object) of the live objects a list or watch request selects."""
        for key, obj in self._objects.select(request.resource, request.namespace):
            if not obj.deleted and (request.name is None or key[2] == request.name):
                yield key, obj

    async def _serve_list(self, request: kmock.Request) -> Any:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        result = {"metadata": {}, "items": [obj.raw for _, obj in self._live(request)]}
        result["metadata"]["resourceVersion"] = str(self._last_rv)
        selector = request.params.get("labelSelector")
        if selector:
            result["items"] = [item for item in result["items"]
                               if selector_matches(selector, item.get("metadata", {}).get("labels") or {})]
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """Mark the event bus before the snapshot (no lost events) and skip what the client's
        resourceVersion already covers (no stale duplicates after kopf's list). The watch ends
        after the request's timeoutSeconds, as an API server ends it, unless it was silenced."""
        yield b""
        self._watches_opened += 1
        watch = self._watches_opened
        seconds = float(request.params.get("timeoutSeconds") or 0)
        deadline = asyncio.get_running_loop().time() + seconds if seconds else None
        bus = self._buses[request.resource]
        marker = await bus.mark()
        events = self._watch_events(request, bus, marker)
        try:
            while (event := await self._next_event(events, deadline)) is not None:
                if watch <= self._silenced_up_to:
                    break
                yield event
            if watch <= self._silenced_up_to:
                await asyncio.Event().wait()  # silent, the connection open, until the client gives up
        finally:
            await events.aclose()
            await bus.unmark(marker)

    @staticmethod
    async def _next_event(events: AsyncIterator[Any], deadline: Optional[float]) -> Optional[Any]:
        """The next event, or None once the watch's time is up."""
        if deadline is None:
            return await anext(events)
        try:
            return await asyncio.wait_for(anext(events), max(0.0, deadline - asyncio.get_running_loop().time()))
        except asyncio.TimeoutError:
            return None

    async def _watch_events(self, request: kmock.Request, bus: Any, marker: Any) -> AsyncIterator[Any]:
        since_param = str(request.params.get("resourceVersion") or "0")
        since = int(since_param) if since_param.isdigit() else 0
        seen = set()
        snapshot = []
        for (_, namespace, name), obj in list(self._live(request)):
            rv = obj.raw.get("metadata", {}).get("resourceVersion", "0")
            seen.add(((namespace, name), rv))
            if int(rv) > since:
                snapshot.append({"type": "ADDED", "object": obj.raw})
        for event in snapshot:
            yield event
        async for event in bus.stream(since=marker):
            meta = event.get("object", {}).get("metadata", {})
            namespace, name = meta.get("namespace"), meta.get("name")
            rv = meta.get("resourceVersion", "0")
            if event.get("type") != "DELETED" and (((namespace, name), rv) in seen or int(rv) <= since):
                continue
            if self._matches(request, request.resource, namespace, name):
                yield event

    def silence_watches(self) -> None:
        """Every watch open now stops delivering, silently: its connection stays open, nothing
        more comes, and it does not end at its timeout. Watches opened later are served."""
        self._silenced_up_to = self._watches_opened

    # --- pod logs, as the kubelet serves them through the API server -----------------------

    def _container_logs(self, namespace: str, name: str) -> list[ContainerLog]:
        return self._pod_logs.setdefault((namespace, name), [ContainerLog()])

    def write_pod_log(self, namespace: str, name: str, text: str) -> None:
        """Append output to the pod's running container (tests call this from their thread)."""
        self._container_logs(namespace, name)[-1].text += text

    def restart_pod_log(self, namespace: str, name: str) -> None:
        """The container ended and a new one started: its output becomes `previous`, and
        follows of it end."""
        logs = self._container_logs(namespace, name)
        logs[-1].ended = True
        logs.append(ContainerLog())

    def end_pod_log(self, namespace: str, name: str) -> None:
        """The container ended (follows of it end); its output stays readable."""
        self._container_logs(namespace, name)[-1].ended = True

    async def _serve_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """GET pods/NAME/log: the current container's output (previous=true: the one before),
        its last tailLines lines, and with follow=true what it writes until it ends."""
        pod = self._objects.lookup(request.resource, request.namespace, request.name)
        if pod is None or pod.deleted:
            raise kmock.KubernetesError(status=404, reason="NotFound", message=f'pods "{request.name}" not found')
        logs = self._container_logs(request.namespace, request.name)
        tail = request.params.get("tailLines")
        if request.params.get("previous") == "true":
            if len(logs) < 2:
                raise kmock.KubernetesError(status=400, reason="BadRequest", message=(
                    f'previous terminated container in pod "{request.name}" not found'))
            return aiohttp.web.Response(text=logs[-2].tail(int(tail) if tail else None))
        log = logs[-1]
        text = log.tail(int(tail) if tail else None)
        if request.params.get("follow") != "true":
            return aiohttp.web.Response(text=text)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request._raw_request)
        sent = len(log.text)
        try:
            await response.write(text.encode())
            while not pod.deleted:
                ended = log.ended  # read first: once ended, the text is whole
                current = log.text
                if len(current) > sent:
                    await response.write(current[sent:].encode())
                    sent = len(current)
                elif ended:
                    break
                else:
                    await asyncio.sleep(0.05)
            await response.write_eof()
        except ConnectionError:
            pass  # the client stopped following
        return response

    @staticmethod
    def _matches(request: kmock.Request, resource: Any, namespace: Any, name: Any) -> bool:
        return (resource == request.resource
                and (request.namespace is None or namespace == request.namespace)
                and (request.name is None or name == request.name))


def make_api_server(**options: Any) -> ApiServer:
    server = ApiServer(**options)
    server.resources.load_bundled()
    server.resources[FINETUNEJOBS] = ResourceInfo(
        kind=KIND, singular=SINGULAR, namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"}, subresources={"status", "scale"},
    )
    return server


async def serve(port: int, faults: Optional[FaultPlan]) -> None:
    """Serve the API on 127.0.0.1:port until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with make_api_server(faults=faults, keep_requests=False) as api_server, \
            kmock.Server(api_server, host="127.0.0.1", port=port or None) as server:
        print(f"serving http://127.0.0.1:{server.port}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="The emulated Kubernetes API server, as a process of its own.")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--faults", action="store_true", help="inject faults into the operator's requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-error", type=float, default=0.10)
    parser.add_argument("--conflict", type=float, default=0.05)
    parser.add_argument("--throttle", type=float, default=0.05)
    parser.add_argument("--slow", type=float, default=0.10)
    args = parser.parse_args()
    plan = FaultPlan(seed=args.seed, server_error=args.server_error, conflict=args.conflict,
                     throttle=args.throttle, slow=args.slow) if args.faults else None
    asyncio.run(serve(args.port, plan))


if __name__ == "__main__":
    main()
