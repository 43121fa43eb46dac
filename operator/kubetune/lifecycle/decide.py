"""The lifecycle as one pure function: spec + status + observed children -> what to do next.

Rules are checked in order; the first that applies sets the phase:

  invalid spec             -> Failed (InvalidSpec), nothing created
  already Succeeded/Failed -> stays; workers kept at zero; TTL deletes the job; unless
                              spec.evaluation was edited since the evaluation: it is
                              evaluated again (Evaluating), not retrained
  upstream job:// pending  -> Pending (WaitingForUpstream); upstream failed -> Failed
  deadline passed          -> Failed (DeadlineExceeded)
  exit code 3 in a worker  -> Failed (PermanentError) with its message
  a worker exited 0        -> Trained; workers to zero; evaluation Job; Evaluating -> the verdict
                              of spec.evaluation.gates (GatesPassed) -> Succeeded, or Failed
                              (Regressed) when gates fail and onRegression is fail
  too many evictions       -> Failed (TooManyDisruptions)
  a second out-of-memory   -> Failed (OutOfMemory), with what to lower
  restarts > backoffLimit  -> Failed (BackoffLimitExceeded)
  suspend                  -> Suspended; workers to zero
  otherwise                -> training objects ensured, workers at spec.resources.nodes;
                              Pending / Initializing / Training by how many workers run, with
                              why the others do not (failing at once when no wait can fix it,
                              or after schedulingTimeoutSeconds), and the stall watchdog.
                              An elastic job trains on with minNodes running, records each
                              change of nodes (Resized), and once it has trained waits below
                              minNodes instead of failing; pods a scale-down removes are
                              leaving, not failing

Every restart counts, across recreated pods (status.workers). Status goes in and comes out as
the typed status models the CRD is generated from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, Optional

from .. import contract
from ..api.models import (
    TERMINAL_PHASES,
    EvaluationStatus,
    FailureStatus,
    FineTuneJob,
    FineTuneJobStatus,
    ProgressStatus,
)
from ..contract.evaluation import EvaluationSummary, verdict
from ..contract.publish import PublishSummary, PublishTarget
from ..contract.failure import OUT_OF_MEMORY_HINT, FailureReport
from ..contract.plan import label
from ..contract.progress import Progress, TrainingNumbers
from ..render.sources import output_location
from .conditions import find, is_true, seconds_since, set_condition, timestamp
from .failures import failure, report_of
from .observed import Observed, Termination, WorkerPod
from .watchdog import stall
from .workers import Waiting, count_workers, resize, restart_message, waiting

MAX_RESIZES_KEPT = 20
MAX_REPORTS_KEPT = 10

ActionKind = Literal["ensure_training_objects", "scale_workers", "restart_workers", "ensure_evaluation_job",
                     "ensure_publish_job",
                     "delete_job"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    replicas: Optional[int] = None


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    phase: str
    status: FineTuneJobStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def wire_status(self) -> dict[str, Any]:
        return self.status.wire()


def reads_progress(status: FineTuneJobStatus) -> bool:
    """Whether rank 0's /progress is worth reading: only while workers train."""
    return status.phase in ("Training", "Initializing")


def reads_claim(status: FineTuneJobStatus) -> bool:
    """Whether the output claim's phase is worth reading: only until the workers first ran."""
    return status.phase in (None, "Pending", "Initializing") and not status.progress


class _Next:
    """The status being built, starting from the current one."""

    def __init__(self, status: FineTuneJobStatus, observed: Observed, generation: Optional[int]):
        self.old_phase = status.phase
        self.status = status.model_copy(deep=True)
        self.now = observed.now
        self.generation = generation
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.old_desired = 0  # the worker count the last decision wanted

    def condition(self, kind: str, value: bool, reason: str, message: str = "") -> None:
        self.status.conditions = set_condition(
            self.status.conditions, kind, value, reason, message, self.now, self.generation)

    def holds(self, kind: str) -> bool:
        return is_true(self.status.conditions, kind)

    def clear(self, kind: str, reason: str) -> None:
        if find(self.status.conditions, kind):
            self.condition(kind, False, reason)

    def finish(self, phase: str) -> Decision:
        self.status.phase = phase
        if self.generation is not None:
            self.status.observed_generation = self.generation
        if phase != self.old_phase:
            kind = "Warning" if phase == "Failed" else "Normal"
            failed = find(self.status.conditions, "Failed")
            message = failed.message if phase == "Failed" and failed else f"phase {phase}"
            self.events.insert(0, Event(kind, phase, message))
        if phase in TERMINAL_PHASES and not self.status.completion_time:
            self.status.completion_time = timestamp(self.now)
        return Decision(phase, self.status, self.actions, self.events)

    def warn_on_change(self, kind: str, value: bool, reason: str, message: str) -> None:
        """Set a condition; a Warning Event when its reason or message changed."""
        old = find(self.status.conditions, kind)
        if not old or (old.reason, old.message) != (reason, message):
            self.events.append(Event("Warning", reason, message))
        self.condition(kind, value, reason, message)

    def fail(self, reason: str, message: str, details: Optional[FailureStatus] = None) -> Decision:
        self.condition("Failed", True, reason, message)
        self.condition("Running", False, reason)
        self.status.failure = details or FailureStatus(reason=reason, message=message)
        self.actions.append(Action("scale_workers", 0))
        return self.finish("Failed")


def decide(
    job: Optional[FineTuneJob],
    problems: list[str],
    status: FineTuneJobStatus,
    observed: Observed,
    generation: Optional[int] = None,
) -> Decision:
    state = _Next(status, observed, generation)
    if problems or job is None:
        message = "; ".join(problems) or "the spec cannot be read"
        state.condition("Failed", True, "InvalidSpec", message)
        state.status.failure = FailureStatus(reason="InvalidSpec", message=message)
        return state.finish("Failed")  # nothing was created, nothing to scale
    if state.status.output is None:
        state.status.output = output_location(job).to_status()
    if state.status.phase in TERMINAL_PHASES:
        if not _evaluates_again(job, state):
            return _finished(job, state, observed)
        return _after_training(job, state, observed)
    run_policy = job.spec.run_policy
    state.status.progress = _progress(state.status.progress, observed.progress, state)
    _strategy(state, observed.progress)
    # Pods a scale-down removes are leaving: their exits and restarts are not failures.
    observed = observed.without_pods_from(job.spec.desired_workers())
    state.old_desired = state.status.workers.desired if state.status.workers else 0
    state.status.workers, restarts = count_workers(state.status.workers, observed, job.spec.desired_workers())
    state.events += [Event("Warning", "WorkerRestarted", restart_message(r, state.status.workers,
                                                                             run_policy.backoff_limit))
                     for r in restarts]

    for name, phase in sorted(observed.upstream.items()):
        if phase == "Failed":
            return state.fail("UpstreamFailed", f"job://{name} failed")
        if phase != "Succeeded":
            state.condition("Created", False, "WaitingForUpstream", f"waiting for job://{name} to succeed")
            return state.finish("Pending")

    if not state.status.start_time:
        state.status.start_time = timestamp(observed.now)
    deadline = run_policy.active_deadline_seconds
    if deadline and not run_policy.suspend and seconds_since(state.status.start_time, observed.now) >= deadline:
        return state.fail("DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({deadline})")
    permanent = _first_termination(observed, lambda t: t.exit_code == contract.EXIT_PERMANENT)
    if permanent:
        return _fail_with(state, "PermanentError", None, *permanent)
    # Before the restart checks: workers restart after success too, and each restart counts.
    if state.holds("Trained") or _first_termination(observed, lambda t: t.exit_code == 0):
        return _after_training(job, state, observed)
    return _restart_budget(job, state, observed) or _running(job, state, observed)


def _restart_budget(job: FineTuneJob, state: _Next, observed: Observed) -> Optional[Decision]:
    workers, policy = state.status.workers, job.spec.run_policy
    if workers.disruptions > policy.max_disruptions:
        return state.fail("TooManyDisruptions", f"{workers.disruptions} worker evictions or preemptions exceed "
                                                f"maxDisruptions {policy.max_disruptions}")
    last = _first_termination(observed, lambda t: t.exit_code != 0)
    if workers.out_of_memory >= 2:
        oom = _first_termination(observed, lambda t: report_of(t).reason == "OutOfMemory") or last
        return _fail_with(state, "OutOfMemory", f"a worker ran out of memory twice; {OUT_OF_MEMORY_HINT}", *oom)
    if workers.restarts > policy.backoff_limit:
        summary = f"{workers.restarts} worker restarts exceed backoffLimit {policy.backoff_limit}"
        return _fail_with(state, "BackoffLimitExceeded", summary, *last) if last else \
            state.fail("BackoffLimitExceeded", summary)
    return None


def _fail_with(state: _Next, reason: str, summary: Optional[str], pod: WorkerPod,
               termination: Termination) -> Decision:
    """Fail with what the pod that failed said, and its last log lines."""
    report = report_of(termination)
    message = report.message if summary is None else f"{summary}: {report.reason}: {report.message}"
    return state.fail(reason, message, failure(reason, message, pod, termination, report))


def _running(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    if job.spec.run_policy.suspend:
        state.condition("Suspended", True, "Suspended", "workers scaled to zero; clearing suspend resumes")
        state.condition("Running", False, "Suspended")
        state.actions += [Action("ensure_training_objects"), Action("scale_workers", 0)]
        return state.finish("Suspended")
    return _training(job, state, observed)


def _training(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    nodes = job.spec.desired_workers()
    state.actions += [Action("ensure_training_objects"), Action("scale_workers", nodes)]
    if state.old_desired and state.old_desired != nodes:
        _resized(job, state, state.old_desired, nodes)
    if not state.holds("Created"):
        state.condition("Created", True, "ChildrenCreated", "worker StatefulSet, Service, ConfigMap and volume")
    state.clear("Suspended", "Resumed")
    restarting = [pod.name for pod in observed.pods
                  if not pod.running and (pod.waiting_reason == "CrashLoopBackOff" or pod.terminated)]
    if restarting:
        state.condition("Restarting", True, "WorkerRestarting", f"restarting: {', '.join(restarting)}")
    elif state.holds("Restarting"):
        state.condition("Restarting", False, "WorkersRunning")
    running = state.status.workers.ready
    elastic = job.spec.resources.elastic
    if running >= nodes:
        state.condition("Running", True, "WorkersRunning", f"{running}/{nodes} workers running")
        return _watch(job, state, observed)
    if elastic and running >= elastic.min_nodes:
        why = waiting(observed.pods, None)
        state.condition("Running", True, "ElasticPartial", f"{running}/{nodes} workers running; training goes on "
                        f"with {running} (elastic.minNodes {elastic.min_nodes}) until the others join"
                        + (f"; {why.reason}: {why.message}" if why else ""))
        return _watch(job, state, observed)
    return _not_all_running(job, state, observed, bool(restarting))


def _resized(job: FineTuneJob, state: _Next, old: int, new: int) -> None:
    """A new node count for a running elastic job: recorded, with an Event, once."""
    progress = state.status.progress
    record, message = resize(job.spec, old, new, progress.last_checkpoint if progress else None,
                             timestamp(state.now))
    state.status.workers.resizes = (state.status.workers.resizes + [record])[-MAX_RESIZES_KEPT:]
    state.events.append(Event("Normal", "Resized", message))


def _not_all_running(job: FineTuneJob, state: _Next, observed: Observed, restarting: bool) -> Decision:
    running, nodes = state.status.workers.ready, job.spec.desired_workers()
    why = waiting(observed.pods, observed.claim_pending)
    if why and why.at_once:
        return state.fail(why.failure, why.message)
    elastic = job.spec.resources.elastic
    if elastic and state.status.progress:
        # It trained before and lost workers: it waits for minNodes, it does not fail.
        state.warn_on_change("Running", False, "BelowMinNodes",
                             f"{running}/{nodes} workers running, below elastic.minNodes {elastic.min_nodes}; "
                             "training waits for more" + (f": {why.reason}: {why.message}" if why else ""))
        return state.finish("Initializing" if running else "Pending")
    if why:
        state.warn_on_change("Running", False, why.reason, why.message)
    elif find(state.status.conditions, "Running"):  # no longer all running, or a waiting reason that went away
        state.condition("Running", False, "WorkersNotRunning", f"{running}/{nodes} workers running")
    timeout = job.spec.run_policy.scheduling_timeout_seconds
    if timeout and not restarting and seconds_since(_not_running_since(state), observed.now) >= timeout:
        return _unschedulable(state, why, f"{running}/{nodes} workers started within "
                                          f"schedulingTimeoutSeconds ({timeout})")
    return state.finish("Initializing" if running else "Pending")


def _not_running_since(state: _Next) -> str:
    running = find(state.status.conditions, "Running")
    return running.last_transition_time if running and running.status == "False" else state.status.start_time


def _unschedulable(state: _Next, why: Optional[Waiting], summary: str) -> Decision:
    if why is None:
        return state.fail("Unschedulable", summary)
    return state.fail(why.failure, f"{summary}: {why.reason}: {why.message}")


def _watch(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    """Training with every worker running: the stall watchdog."""
    workers, progress = state.status.workers, state.status.progress
    running_since = find(state.status.conditions, "Running").last_transition_time
    resized_at = workers.resizes[-1].time if workers.resizes else running_since
    watching_since = max(running_since, workers.restarted_at or running_since, resized_at)
    if state.holds("Stalled") and progress and progress.last_step_time and progress.last_step_time > watching_since:
        state.condition("Stalled", False, "Progressing", f"step {progress.step} reached after the restart")
    stalled = stall(job.spec.run_policy, progress, watching_since, observed.now)
    if stalled is None:
        return state.finish("Training")
    workers.restarts += 1
    limit = job.spec.run_policy.backoff_limit
    if workers.restarts > limit:
        return state.fail("Stalled", f"{stalled}; {workers.restarts} restarts exceed backoffLimit {limit}")
    workers.restarted_at = timestamp(observed.now)
    state.condition("Stalled", True, "NoProgress", stalled)
    state.events.append(Event("Warning", "Stalled", f"{stalled}; restarting the workers from the newest complete "
                                                    f"checkpoint ({workers.restarts} of backoffLimit {limit})"))
    state.actions.append(Action("restart_workers"))
    return state.finish("Training")


def _after_training(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    if not state.holds("Trained"):
        state.condition("Trained", True, "TrainingSucceeded", "the model is saved in the output volume")
        state.condition("Running", False, "TrainingSucceeded")
        state.clear("Restarting", "TrainingSucceeded")
        state.events.append(Event("Normal", "Trained", "training finished; workers scaled to zero"))
    # Workers restart after success (a StatefulSet always does); they must not stay up.
    state.actions.append(Action("scale_workers", 0))
    state.status.workers.desired = 0
    skipped = job.spec.evaluation_skipped_because()
    if skipped:
        publishing = _publishing(job, state, observed)
        if publishing:
            return publishing
        state.condition("Succeeded", True, "TrainingSucceeded", f"trained; {skipped}")
        return state.finish("Succeeded")
    evaluation = observed.evaluation
    if evaluation is None or not evaluation.settled:
        return _evaluating(state, evaluation)
    if evaluation.failed:
        previous = state.status.evaluation.previous_reports if state.status.evaluation else []
        state.status.evaluation = EvaluationStatus(digest=job.spec.evaluation.digest(), previous_reports=previous)
        report = FailureReport.read(evaluation.message)
        message = report.message if report else evaluation.message or "the evaluation Job failed"
        return state.fail("EvaluationFailed", message, FailureStatus(
            reason="EvaluationFailed", message=message, worker=evaluation.pod.name if evaluation.pod else None,
            last_logs=(report.last_logs if report else evaluation.message) or None))
    if not state.holds("Evaluated"):
        _evaluated(job, state, EvaluationSummary.read(evaluation.message))
    evaluated = state.status.evaluation
    if evaluated.verdict == "Regressed" and job.spec.evaluation.on_regression == "fail":
        judged = find(state.status.conditions, "GatesPassed").message
        return state.fail("Regressed", f"evaluation gates failed: {judged}")
    publishing = _publishing(job, state, observed)
    if publishing:
        return publishing
    text = ", ".join(f"{name}={value.tuned:.4g}" for name, value in evaluated.metrics.items())
    state.condition("Succeeded", True, "EvaluationSucceeded", text or "trained and evaluated")
    return state.finish("Succeeded")


def _evaluates_again(job: FineTuneJob, state: _Next) -> bool:
    """A trained job whose spec.evaluation was edited since its evaluation: it is evaluated again
    with a new evaluation Job, and not retrained; the earlier report is kept."""
    last = state.status.evaluation
    failure = state.status.failure
    if not state.holds("Trained") or job.spec.evaluation_skipped_because() or last is None or not last.digest:
        return False
    if failure is not None and failure.reason not in ("Regressed", "EvaluationFailed", "PublishFailed"):
        return False
    digest = job.spec.evaluation.digest()
    if last.digest == digest:
        return False
    kept = last.previous_reports + ([_kept_report(last.report, last.digest)] if last.report else [])
    state.status.evaluation = EvaluationStatus(previous_reports=kept[-MAX_REPORTS_KEPT:])
    message = f"spec.evaluation changed ({last.digest} -> {digest}): evaluating the trained model again"
    for kind in ("Evaluated", "GatesPassed", "Succeeded", "Failed"):
        if find(state.status.conditions, kind):
            state.condition(kind, False, "Reevaluating", message)
    state.status.failure, state.status.completion_time = None, None
    state.events.append(Event("Normal", "Reevaluating", message))
    return True


def _kept_report(report: str, digest: str) -> str:
    """Where the evaluator moves a report when a new evaluation starts: beside the new one."""
    path = PurePosixPath(report)
    return str(path.parent / digest / path.name)


def _evaluated(job: FineTuneJob, state: _Next, summary: EvaluationSummary) -> None:
    """The evaluation's values and the verdict on them, recorded once."""
    outcome, gates, judged = verdict(job.spec.evaluation.contract_gates(), summary.metrics)
    previous = state.status.evaluation.previous_reports if state.status.evaluation else []
    state.status.evaluation = EvaluationStatus(metrics=summary.metrics, report=summary.report, verdict=outcome,
                                               gates=gates, digest=job.spec.evaluation.digest(),
                                               previous_reports=previous)
    text = ", ".join(f"{name}={value.tuned:.4g}" for name, value in summary.metrics.items())
    state.condition("Evaluated", True, "EvaluationSucceeded", text or "evaluation finished")
    state.events.append(Event("Normal", "Evaluated", text or "evaluation finished"))
    state.condition("GatesPassed", outcome != "Regressed", outcome, judged)
    if outcome != "NoGates":
        state.events.append(Event("Normal" if outcome == "Passed" else "Warning", outcome, judged))


def _publishing(job: FineTuneJob, state: _Next, observed: Observed) -> Optional[Decision]:
    """The publish Job, when a target of spec.output.publish applies to the verdict; None once
    it is done (or there is nothing to publish)."""
    evaluated = state.status.evaluation
    verdict_now = evaluated.verdict if evaluated else None
    targets = [t for t in job.spec.output.publish if PublishTarget(**t.model_dump()).applies(verdict_now)]
    if not targets or state.status.output.published:
        return None
    run = observed.publish
    if run is None or not run.settled:
        state.actions.append(Action("ensure_publish_job"))
        return state.finish("Publishing")
    if run.failed:
        report = FailureReport.read(run.message)
        message = report.message if report else run.message or "the publish Job failed"
        return state.fail("PublishFailed", message, FailureStatus(
            reason="PublishFailed", message=message, worker=run.pod.name if run.pod else None,
            last_logs=(report.last_logs if report else None)))
    state.status.output.published = PublishSummary.read(run.message).published
    for published in state.status.output.published or []:
        state.events.append(Event("Normal", "Published", f"{published.target}: {published.files} files, "
                                                         f"{published.url} ({published.revision or 'no revision'})"))
    return None


def _evaluating(state: _Next, evaluation) -> Decision:
    state.actions.append(Action("ensure_evaluation_job"))
    why = waiting((evaluation.pod,), None) if evaluation and evaluation.pod else None
    if why and why.at_once:
        return state.fail(why.failure, why.message)
    if why:
        state.warn_on_change("Evaluated", False, why.reason, why.message)
    return state.finish("Evaluating")


def _finished(job: FineTuneJob, state: _Next, observed: Observed) -> Decision:
    if observed.workers and observed.workers.replicas > 0:
        state.actions.append(Action("scale_workers", 0))
    ttl = job.spec.run_policy.ttl_seconds_after_finished
    finished_at = state.status.completion_time
    if ttl is not None and finished_at and seconds_since(finished_at, observed.now) >= ttl:
        state.actions.append(Action("delete_job"))
    return state.finish(state.status.phase)


def _progress(old: Optional[ProgressStatus], reported: Optional[Progress], state: _Next) -> Optional[ProgressStatus]:
    if reported is None:
        return old
    progress = ProgressStatus(**reported.model_dump(include=set(TrainingNumbers.model_fields) | {"phase"}))
    if progress.total_steps:
        progress.display = f"{progress.step}/{progress.total_steps} ({100 * progress.step // progress.total_steps}%)"
    checkpoint = reported.checkpoint
    if checkpoint and checkpoint != (old.last_checkpoint if old else None):
        state.events.append(Event("Normal", "Checkpoint", f"saved {checkpoint}"))
    progress.last_checkpoint = checkpoint
    # A step that moves is what the stall watchdog looks for; "starting" is before any step.
    moved = reported.phase != "starting" and (old is None or old.step != progress.step or not old.last_step_time)
    progress.last_step_time = timestamp(state.now) if moved else (old.last_step_time if old else None)
    return progress


def _strategy(state: _Next, reported: Optional[Progress]) -> None:
    """Record the strategy rank 0 trains with; an Event when it is new or changed (a resize may change it)."""
    chosen = reported.distributed if reported else None
    if chosen is None or chosen == state.status.distributed:
        return
    old = state.status.distributed
    if old is None or (old.strategy, old.offload) != (chosen.strategy, chosen.offload):
        state.events.append(Event("Normal", "StrategyChosen", f"training with {label(chosen.strategy, chosen.offload)}:"
                                                             f" {chosen.reason}"))
    state.status.distributed = chosen


def _first_termination(observed: Observed, matches) -> Optional[tuple[WorkerPod, Termination]]:
    for pod in observed.pods:
        for termination in pod.terminations():
            if matches(termination):
                return pod, termination
    return None
