"""kopf handlers: every trigger reads the job and calls reconcile; none decides anything."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Optional

import kopf

from ..api.models import GROUP, PLURAL, VERSION
from ..render.naming import JOB_NAME_LABEL, ROLE_LABEL
from .reconcile import OperatorContext, reconcile


def plain(body: Any) -> dict[str, Any]:
    return json.loads(json.dumps(body, default=dict))


async def resync(context: OperatorContext, interval: float, namespaces: list[str], logger: Any) -> None:
    """Reconcile every job every `interval` seconds, until the operator stops."""
    while True:
        await asyncio.sleep(interval)
        known = context.known()
        try:
            jobs = await asyncio.to_thread(context.cluster.fine_tune_jobs, namespaces)
        except Exception as error:  # the API server may be briefly away; try again next round
            logger.warning(f"resync: cannot list FineTuneJobs: {error}")
            continue
        for job in jobs:
            try:
                await asyncio.to_thread(reconcile, context, job)
            except Exception as error:
                logger.warning(f"resync of {job['metadata']['name']}: {error}")
        context.forget_missing(known, {(job["metadata"].get("namespace", "default"), job["metadata"]["name"])
                                       for job in jobs})
        context.metrics.resync_time.set_to_current_time()  # an alert fires when this stops moving


def make_registry(context: OperatorContext, interval: float = 10.0, login: bool = True,
                  namespaces: Optional[list[str]] = None) -> kopf.OperatorRegistry:
    namespaces = list(namespaces or [])
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # No runtime scanning of CRDs and namespaces: the chart installs the CRD before the
        # operator starts and names its namespaces, so the operator needs no RBAC for those.
        settings.scanning.disabled = True
        settings.posting.enabled = True

    if login:
        # A registry of our own gets none of kopf's default login handlers.
        @kopf.on.login(registry=registry)
        def log_in(**kwargs: Any) -> Any:
            return kopf.login_via_client(**kwargs)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def job_deleted(body: kopf.Body, namespace: str, name: str, type: str, **_: Any) -> None:
        if type == "DELETED":  # no finalizer: the job is already gone
            context.forget(namespace, name)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def job_changed(body: kopf.Body, **_: Any) -> None:
        reconcile(context, plain(body))

    # Pods, Jobs and clocks change without the FineTuneJob changing: one resync loop follows
    # them. (A per-job kopf timer would put kopf's finalizer on every job, and a job could
    # then not be deleted while the operator is down.)
    @kopf.on.startup(registry=registry)
    async def start_resync(logger: kopf.Logger, **_: Any) -> None:
        asyncio.create_task(resync(context, interval, namespaces, logger))

    @kopf.on.event("", "v1", "pods", labels={ROLE_LABEL: kopf.PRESENT, JOB_NAME_LABEL: kopf.PRESENT},
                   registry=registry)
    def pod_changed(body: kopf.Body, namespace: str, type: str, **_: Any) -> None:
        if type is None:  # the initial listing; the job's own handlers cover it
            return
        job = context.cluster.fine_tune_job(namespace, body["metadata"]["labels"][JOB_NAME_LABEL])
        if job:
            reconcile(context, job)

    return registry

