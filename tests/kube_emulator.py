"""kmock's KubernetesEmulator, extended with the API-server semantics the operator relies on.

kmock stores objects and serves list/watch/get/create/patch/delete. Added here: server-set
metadata (uid, resourceVersion, generation, creationTimestamp), 422 on a failed json-patch
`test`, list+watch that honours resourceVersion, label selectors on lists, and
ownerReference garbage collection after a delete.
"""

import copy
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock import KubernetesEmulator, ResourceInfo

from kubetune.api.models import GROUP, KIND, PLURAL, SINGULAR, VERSION

FINETUNEJOBS = f"{GROUP}/{VERSION}/{PLURAL}"


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


@attrs.define(kw_only=True)
class ApiServer(KubernetesEmulator):
    _last_rv: int = attrs.field(default=0, init=False)

    def _next_rv(self) -> str:
        self._last_rv += 1
        return str(self._last_rv)

    async def _handle(self, request: kmock.Request) -> Any:
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
        # Gone now, by a delete or by the patch that removed its last finalizer.
        if watched and watched[1] and self.objects[watched[0]].deleted:
            await self._collect_garbage(watched[1])
        return response

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

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Delete what the deleted object owned (background propagation), recursively."""
        dependents = []
        for key, obj in list(self.objects.items()):
            if obj.deleted:
                continue
            owners = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(owner.get("uid") == owner_uid for owner in owners):
                dependents.append((key, obj))
        for (resource, _, _), obj in dependents:
            uid = obj.raw.get("metadata", {}).get("uid")
            async with self._lock:
                raw = obj.raw
                obj.delete()
                await self._buses[resource].put({"type": "DELETED", "object": raw})
            if uid:
                await self._collect_garbage(uid)

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(self._last_rv)
        selector = request.params.get("labelSelector")
        if selector:
            result["items"] = [item for item in result["items"]
                               if selector_matches(selector, item.get("metadata", {}).get("labels") or {})]
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """Mark the event bus before the snapshot (no lost events) and skip what the client's
        resourceVersion already covers (no stale duplicates after kopf's list)."""
        yield b""
        since_param = str(request.params.get("resourceVersion") or "0")
        since = int(since_param) if since_param.isdigit() else 0
        bus = self._buses[request.resource]
        marker = await bus.mark()
        try:
            seen = set()
            snapshot = []
            for (resource, namespace, name), obj in list(self.objects.items()):
                if self._matches(request, resource, namespace, name) and not obj.deleted:
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
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _matches(request: kmock.Request, resource: Any, namespace: Any, name: Any) -> bool:
        return (resource == request.resource
                and (request.namespace is None or namespace == request.namespace)
                and (request.name is None or name == request.name))


def make_api_server() -> ApiServer:
    server = ApiServer()
    server.resources.load_bundled()
    server.resources[FINETUNEJOBS] = ResourceInfo(
        kind=KIND, singular=SINGULAR, namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"}, subresources={"status", "scale"},
    )
    return server
