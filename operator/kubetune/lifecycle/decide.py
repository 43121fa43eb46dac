"""The lifecycle as one pure function: spec + status + observed children -> what to do next.

Rules are checked in order; the first that applies sets the phase. Each phase's rules live in
a file of their own:

  invalid spec             -> Failed (InvalidSpec), nothing created
  already Succeeded/Failed -> stays; workers kept at zero; TTL deletes the job (finished.py);
                              unless spec.evaluation was edited since the evaluation: it is
                              evaluated again (Evaluating), not retrained (evaluating.py)
  upstream job:// pending  -> Pending (WaitingForUpstream); upstream failed -> Failed
  deadline passed          -> Failed (DeadlineExceeded)
  exit code 3 in a worker  -> Failed (PermanentError) with its message
  a worker exited 0        -> Trained; workers to zero; evaluation Job; Evaluating -> the verdict
                              of spec.evaluation.gates (GatesPassed) -> Publishing -> Succeeded,
                              or Failed (Regressed) when gates fail and onRegression is fail;
                              a completed Job whose pod is gone runs again (evaluating.py,
                              publishing.py)
  too many evictions       -> Failed (TooManyDisruptions)
  a second out-of-memory   -> Failed (OutOfMemory), with what to lower
  restarts > backoffLimit  -> Failed (BackoffLimitExceeded)
  suspend                  -> Suspended; workers to zero (training.py)
  hf:// or s3:// sources   -> the initializer Job first: Initializing, the workers at zero, until
                              it fetched them into the cache (Initialized); a source that cannot
                              exist fails at once, naming it (initializing.py)
  spec.generation          -> its server first: the workers held at zero (Pending / Initializing)
                              until it is ready (GenerationReady); its permanent errors, second
                              out-of-memory and restarts past backoffLimit fail the job; it runs
                              while the workers train and goes to zero with them (generating.py)
  otherwise                -> training objects ensured, workers at spec.resources.nodes;
                              Training when they all run, with the stall watchdog (training.py);
                              else Pending / Initializing with why the others do not, failing at
                              once when no wait can fix it, or after schedulingTimeoutSeconds
                              (starting.py). An elastic job trains on with minNodes running,
                              records each change of nodes (Resized), and once it has trained
                              waits below minNodes instead of failing; pods a scale-down removes
                              are leaving, not failing

Every restart counts, across recreated pods (status.workers). Status goes in and comes out as
the typed status models the CRD is generated from.
"""

from __future__ import annotations

from typing import Optional

from .. import contract
from ..api.models import FailureStatus, FineTuneJob, FineTuneJobStatus
from ..render.sources import output_location
from .conditions import ConditionType, seconds_since, timestamp
from .evaluating import after_training, evaluates_again
from .finished import finished
from .generating import count_generation, generation_replicas, hold_for_generation
from .initializing import hold_for_initialization
from .observed import Observed
from .phases import TERMINAL, Phase
from .state import Decision, Event, Next, first_termination
from .training import final_progress, mirror_progress, record_strategy, restart_budget, running
from .workers import count_workers, restart_message


def reads_progress(status: FineTuneJobStatus) -> bool:
    """Whether rank 0's /progress is worth reading: only while workers train."""
    return status.phase in (Phase.TRAINING, Phase.INITIALIZING)


def reads_claim(status: FineTuneJobStatus) -> bool:
    """Whether the output claim's phase is worth reading: only until the workers first ran."""
    return status.phase in (None, Phase.PENDING, Phase.INITIALIZING) and not status.progress


def decide(
    job: Optional[FineTuneJob],
    problems: list[str],
    status: FineTuneJobStatus,
    observed: Observed,
    generation: Optional[int] = None,
) -> Decision:
    decision = _decide(job, problems, status, observed, generation)
    scaled = generation_replicas(job, decision) if job is not None else None
    if scaled:
        decision.actions.append(scaled)
    return decision


def _decide(job: Optional[FineTuneJob], problems: list[str], status: FineTuneJobStatus, observed: Observed,
            generation: Optional[int]) -> Decision:
    state = Next(status, observed, generation)
    if problems or job is None:
        message = "; ".join(problems) or "the spec cannot be read"
        state.condition(ConditionType.FAILED, True, "InvalidSpec", message)
        state.status.failure = FailureStatus(reason="InvalidSpec", message=message)
        return state.finish(Phase.FAILED)  # nothing was created, nothing to scale
    if state.status.output is None:
        state.status.output = output_location(job).to_status()
    if state.status.phase in TERMINAL:
        if not evaluates_again(job, state):
            return finished(job, state, observed)
        return after_training(job, state, observed)
    mirror_progress(state, observed.progress)
    record_strategy(state, observed.progress)
    # Pods a scale-down removes are leaving: their exits and restarts are not failures.
    observed = observed.without_pods_from(job.spec.desired_workers())
    _count_workers(job, state, observed)
    count_generation(job, state, observed)
    return _upstream(state, observed) or _before_training(job, state, observed)


def _count_workers(job: FineTuneJob, state: Next, observed: Observed) -> None:
    state.old_desired = state.status.workers.desired if state.status.workers else 0
    state.status.workers, restarts = count_workers(state.status.workers, observed, job.spec.desired_workers())
    backoff_limit = job.spec.run_policy.backoff_limit
    state.events += [Event("Warning", "WorkerRestarted", restart_message(restart, state.status.workers,
                                                                         backoff_limit))
                     for restart in restarts]


def _upstream(state: Next, observed: Observed) -> Optional[Decision]:
    """Pending while a job:// upstream has not succeeded, Failed when it failed; else None."""
    for name, phase in sorted(observed.upstream.items()):
        if phase == Phase.FAILED:
            return state.fail("UpstreamFailed", f"job://{name} failed")
        if phase != Phase.SUCCEEDED:
            state.condition(ConditionType.CREATED, False, "WaitingForUpstream",
                            f"waiting for job://{name} to succeed")
            return state.finish(Phase.PENDING)
    return None


def _before_training(job: FineTuneJob, state: Next, observed: Observed) -> Decision:
    run_policy = job.spec.run_policy
    if not state.status.start_time:
        state.status.start_time = timestamp(observed.now)
    deadline = run_policy.active_deadline_seconds
    if deadline and not run_policy.suspend and seconds_since(state.status.start_time, observed.now) >= deadline:
        return state.fail("DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({deadline})")
    permanent = first_termination(observed, lambda t: t.exit_code == contract.EXIT_PERMANENT)
    if permanent:
        return state.fail_with("PermanentError", None, *permanent)
    # Before the restart checks: workers restart after success too, and each restart counts.
    if state.holds(ConditionType.TRAINED) or first_termination(observed, lambda t: t.exit_code == 0):
        if not state.holds(ConditionType.TRAINED):
            mirror_progress(state, final_progress(observed))
        return after_training(job, state, observed)
    return (restart_budget(job, state, observed) or hold_for_initialization(job, state, observed)
            or hold_for_generation(job, state, observed) or running(job, state, observed))
