"""kopf handlers: every trigger reads the job and calls reconcile; none decides anything."""

from __future__ import annotations

import json
from typing import Any

import kopf

from ..api.models import GROUP, PLURAL, VERSION
from ..render.naming import JOB_NAME_LABEL, ROLE_LABEL
from .reconcile import OperatorContext, reconcile


def plain(body: Any) -> dict[str, Any]:
    return json.loads(json.dumps(body, default=dict))


def make_registry(context: OperatorContext, interval: float = 10.0, login: bool = True) -> kopf.OperatorRegistry:
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

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def job_changed(body: kopf.Body, **_: Any) -> None:
        reconcile(context, plain(body))

    # Pods and Jobs change without the FineTuneJob changing: a timer follows them.
    @kopf.timer(GROUP, VERSION, PLURAL, interval=interval, registry=registry)
    def job_tick(body: kopf.Body, **_: Any) -> None:
        reconcile(context, plain(body))

    @kopf.on.event("", "v1", "pods", labels={ROLE_LABEL: kopf.PRESENT, JOB_NAME_LABEL: kopf.PRESENT},
                   registry=registry)
    def pod_changed(body: kopf.Body, namespace: str, type: str, **_: Any) -> None:
        if type is None:  # the initial listing; the job's own handlers cover it
            return
        job = context.cluster.fine_tune_job(namespace, body["metadata"]["labels"][JOB_NAME_LABEL])
        if job:
            reconcile(context, job)

    return registry


def kopf_event_poster(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(body, type=kind, reason=reason, message=message)
