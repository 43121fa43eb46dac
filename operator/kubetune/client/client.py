"""kubetune.Client: FineTuneJobs from Python, on a cluster or on this machine.

Every answer is what the operator reports in status (never worked out from pods), read
through the same typed models the operator writes it with. A spec is checked here first, as
`kubetune validate` checks it (the models, the CEL rules, the TRL keys), so a bad one is
refused, naming its fields, before any request is sent.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from ..api.models import PHASES, EvaluationStatus, FineTuneJob
from ..api.validation import InvalidJob, Problem, parse_job
from ..planning import refusal
from ..lifecycle.phases import Phase
from ..yamlio import UnreadableYAML, load_all
from .display import progress_display
from .errors import JobFailed, WaitTimeout
from .job import Checkpoints, Event, Job, PodState
from .local import LocalBackend
from .roles import check_role

JobSource = Union[FineTuneJob, dict, str, os.PathLike]
# Metadata the API server sets; a job read back (job.raw, a Job) is created again without it.
SERVER_SET = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "managedFields",
              "selfLink")


def job_document(job: JobSource) -> dict[str, Any]:
    """The job as the document to send: a model's set fields, a dict, or a one-job YAML file."""
    if isinstance(job, FineTuneJob):
        document = job.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
        return job_document({"apiVersion": job.api_version, "kind": job.kind, **document})
    if isinstance(job, dict):
        metadata = {k: v for k, v in (job.get("metadata") or {}).items() if k not in SERVER_SET}
        return {**{key: value for key, value in job.items() if key != "status"}, "metadata": metadata}
    try:
        documents = load_all(Path(job).read_bytes())
    except OSError as error:
        raise InvalidJob([Problem("", f"{job}: cannot read: {error.strerror or error}")]) from None
    except UnreadableYAML as error:
        raise InvalidJob([Problem("", f"{job}: {error}")]) from None
    if len(documents) != 1:
        raise InvalidJob([Problem("", f"{job}: holds {len(documents)} documents; create takes one FineTuneJob")])
    return job_document(documents[0]) if isinstance(documents[0], dict) else documents[0]


def _phases(until: Union[str, Iterable[str]]) -> tuple[str, ...]:
    phases = (until,) if isinstance(until, str) else tuple(until)
    unknown = [phase for phase in phases if phase not in PHASES]
    if unknown or not phases:
        raise ValueError(f"until: {', '.join(unknown) or 'nothing'}; expected phases among {', '.join(PHASES)}")
    return phases


def _seen(job: Job) -> tuple[Any, ...]:
    """What a progress callback is called again for: the phase, progress and conditions."""
    status = job.status
    return (job.phase, status.progress.wire() if status and status.progress else None,
            [(c.type, c.status, c.reason) for c in status.conditions] if status else None)


class Client:
    """FineTuneJobs in a cluster: `Client()` reads the kubeconfig (or, inside a pod, the
    service account) and works in its context's namespace; `Client.local()` runs them on this
    machine with the same methods."""

    def __init__(self, namespace: Optional[str] = None, context: Optional[str] = None,
                 kubeconfig: Optional[str] = None):
        from .cluster import ClusterBackend

        self._backend: Any = ClusterBackend.connect(namespace, context, kubeconfig)

    @classmethod
    def local(cls, run_dir: Union[str, os.PathLike] = "kubetune-runs") -> "Client":
        """Jobs run on this machine, each as a background `kubetune run` in run_dir/NAME."""
        client = cls.__new__(cls)
        client._backend = LocalBackend(Path(run_dir))
        return client

    @property
    def namespace(self) -> Optional[str]:
        """The namespace this client works in (None for local runs)."""
        return self._backend.namespace

    def __repr__(self) -> str:
        return f"<kubetune.Client {self._backend.where}>"

    # --- jobs -------------------------------------------------------------------------------

    def create(self, job: JobSource) -> Job:
        """Create the job (a FineTuneJob, its dict, or a YAML file); InvalidJob, naming every
        field at fault, before any request."""
        document = job_document(job)
        parsed = parse_job(document)
        why = refusal(parsed)
        if why:  # as `kubetune validate` says: the strategy cannot fit the job's GPUs
            raise InvalidJob([Problem("spec.distributed.strategy", why)])
        return self._backend.create(document, parsed)

    def get(self, name: str) -> Job:
        return self._backend.get(name)

    def list(self, phase: Optional[str] = None, label_selector: Optional[str] = None,
             all_namespaces: bool = False) -> list[Job]:
        jobs = self._backend.list(label_selector, all_namespaces)
        return sorted((job for job in jobs if phase is None or job.phase == phase),
                      key=lambda job: (job.namespace, job.name))

    def wait(self, name: str, until: Union[str, Iterable[str]] = ("Succeeded",), timeout_s: Optional[float] = None,
             poll_interval_s: float = 2, callback: Optional[Callable[[Job], Any]] = None,
             progress: Optional[bool] = None) -> Job:
        """The job once its phase is in `until` (or it has finished: see job.phase).

        Follows a watch of the job (polling every poll_interval_s where watches fail; a local
        run is polled). callback(job) runs on every change of phase, progress or conditions.
        In IPython a progress bar shows step/total, loss and ETA (progress=False hides it,
        True shows it anywhere). Raises JobFailed (its subclass for status.failure.reason)
        when the job fails, unless "Failed" is in `until`; WaitTimeout (a TimeoutError) after
        timeout_s; JobNotFound when it is deleted.
        """
        phases = _phases(until)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        display = progress_display(progress)
        seen, job = None, None
        try:
            for job in self._backend.changes(name, deadline, poll_interval_s):
                if _seen(job) != seen:
                    seen = _seen(job)
                    if display:
                        display.update(job)
                    if callback:
                        callback(job)
                if job.phase in phases:
                    return job
                if job.phase == Phase.FAILED:
                    raise JobFailed.of(job)
                if job.phase == Phase.SUCCEEDED:
                    return job  # done: no phase comes after this
        finally:
            if display:
                display.close()
        raise WaitTimeout(job, phases, timeout_s or 0)

    def create_and_wait(self, job: JobSource, **wait_args: Any) -> Job:
        """create(job), then wait(its name, **wait_args)."""
        return self.wait(self.create(job).name, **wait_args)

    def scale(self, name: str, nodes: int) -> Job:
        """Resize an elastic job to `nodes` workers (`kubectl scale ftj/NAME --replicas`);
        InvalidJob, before any change, when the job may not change so."""
        return self._backend.scale(name, nodes)

    def suspend(self, name: str) -> Job:
        """Scale the workers to zero (runPolicy.suspend); a local run is stopped as Ctrl-C does."""
        return self._backend.suspend(name)

    def resume(self, name: str) -> Job:
        """Go on from the last complete checkpoint."""
        return self._backend.resume(name)

    def delete(self, name: str, wait: bool = False, remove_files: bool = False) -> None:
        """Delete the job and what it created; wait: until it is gone. A local run is stopped
        as Ctrl-C does, and its folder removed only with remove_files (else create() of the
        same name resumes from its checkpoints)."""
        self._backend.delete(name, wait, remove_files)

    # --- what status knows ------------------------------------------------------------------

    def evaluation(self, name: str) -> EvaluationStatus:
        """status.evaluation: per metric the tuned and base values with intervals, the
        verdict and gates (empty until the evaluation has reported)."""
        status = self.get(name).status
        return (status.evaluation if status else None) or EvaluationStatus()

    def checkpoints(self, name: str) -> Checkpoints:
        return Checkpoints.of(self.get(name))

    def events(self, name: str) -> list[Event]:
        """The job's Events, oldest first."""
        events = self._backend.events(self.get(name))
        return sorted(events, key=lambda event: event.time.timestamp() if event.time else 0.0)

    def pods(self, name: str, role: str = "worker") -> list[PodState]:
        """The job's pods of a role as the kubelet reports them (a local run keeps none)."""
        check_role(role)
        return self._backend.pods(name, role)

    def logs(self, name: str, worker: int = 0, role: str = "worker", follow: bool = False,
             tail_lines: Optional[int] = None, previous: bool = False) -> Iterator[str]:
        """The lines of a pod's log: worker `<name>-worker-<n>`, generation `<name>-generation-<n>`,
        or the newest pod of the evaluator, initializer or publisher Job. follow: waits for the
        pod, and goes on across container restarts until the job is done with the pod."""
        check_role(role)
        return self._backend.logs(name, role, worker, follow, tail_lines, previous)
