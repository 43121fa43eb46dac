"""The generation server of spec.generation: it starts first, and the workers are held at zero
until it is ready (GenerationReady); its restarts count against backoffLimit, and its waiting
reasons, crashes and out-of-memory kills reach status like the workers'. It runs while the
workers train and goes to zero with them."""

from __future__ import annotations

from typing import Optional

from ..api.models import FineTuneJob
from ..render.pods import downloads
from .conditions import ConditionType, is_true
from .observed import Observed
from .phases import Phase
from .state import Action, Decision, Event, Next, first_termination
from .failures import report_of
from .workers import count_workers, restart_message, waiting

WHAT = "the generation server"
OUT_OF_MEMORY_HINT = "lower spec.generation.gpuMemoryUtilization or maxModelLen, or raise tensorParallel"
# Phases in which the server runs: before and while the workers train.
SERVING_PHASES = (Phase.PENDING, Phase.INITIALIZING, Phase.TRAINING)


def count_generation(job: FineTuneJob, state: Next, observed: Observed) -> None:
    """status.generation: the server pods' restarts (kept across recreated pods) and readiness."""
    if job.spec.generation is None:
        return
    counted, restarts = count_workers(state.status.generation, observed.generation_pool(), job.spec.generation.nodes)
    counted.ready = sum(pod.ready for pod in observed.generation_pods)
    state.status.generation = counted
    limit = job.spec.run_policy.backoff_limit
    state.events += [Event("Warning", "GenerationRestarted", restart_message(restart, counted, limit))
                     for restart in restarts]


def generation_replicas(job: FineTuneJob, decision: Decision) -> Optional[Action]:
    """The server's pod count for what was decided; None without spec.generation. It waits for
    the initializer, which puts the model where it loads from."""
    generation = job.spec.generation
    if generation is None:
        return None
    ready_to_load = not downloads(job) or is_true(decision.status.conditions, ConditionType.INITIALIZED)
    serving = decision.phase in SERVING_PHASES and not job.spec.run_policy.suspend and ready_to_load
    return Action("scale_generation", generation.nodes if serving else 0)


def hold_for_generation(job: FineTuneJob, state: Next, observed: Observed) -> Optional[Decision]:
    """Failed when the server cannot run; the workers held while it is not ready and they have
    not trained yet; else None (no server, or ready: training goes on)."""
    generation = job.spec.generation
    if generation is None or job.spec.run_policy.suspend:
        return None
    failed = _failed(job, state, observed)
    if failed:
        return failed
    ready = state.status.generation.ready
    if ready >= generation.nodes:
        state.condition(ConditionType.GENERATION_READY, True, "ServerReady",
                        f"{ready}/{generation.nodes} generation server pods ready")
        return None
    why = waiting(observed.generation_pods, None)
    if why and why.at_once:
        return state.fail(why.failure, f"{WHAT}: {why.reason}: {why.message}")
    crashed = first_termination(observed.generation_pool(), lambda t: t.exit_code != 0)
    if why:
        state.warn_on_change(ConditionType.GENERATION_READY, False, why.reason, why.message)
    elif crashed:
        report = report_of(crashed[1])
        state.warn_on_change(ConditionType.GENERATION_READY, False, "ServerRestarting",
                             f"{crashed[0].name}: {report.reason}: {report.message}")
    else:
        state.condition(ConditionType.GENERATION_READY, False, "ServerStarting",
                        f"{ready}/{generation.nodes} generation server pods ready (loading the model)")
    if state.status.progress:
        return None  # trained before: the ranks wait on the server themselves
    state.condition(ConditionType.RUNNING, False, "WaitingForGeneration",
                    "the workers start once the generation server is ready")
    state.actions += [Action("ensure_training_objects"), Action("scale_workers", 0)]
    starting = any(pod.running for pod in observed.generation_pods)
    return state.finish(Phase.INITIALIZING if starting else Phase.PENDING)


def _failed(job: FineTuneJob, state: Next, observed: Observed) -> Optional[Decision]:
    pool = observed.generation_pool()
    permanent = first_termination(pool, lambda t: report_of(t).reason == "PermanentError")
    if permanent:
        return state.fail_with("PermanentError", WHAT, *permanent)
    counted, limit = state.status.generation, job.spec.run_policy.backoff_limit
    last = first_termination(pool, lambda t: t.exit_code != 0)
    if counted.out_of_memory >= 2:
        oom = first_termination(pool, lambda t: report_of(t).reason == "OutOfMemory") or last
        if oom:
            return state.fail_with("OutOfMemory", f"{WHAT} ran out of memory twice; {OUT_OF_MEMORY_HINT}", *oom)
    if counted.restarts > limit:
        summary = f"{WHAT} restarted {counted.restarts} times, more than backoffLimit {limit}"
        return state.fail_with("BackoffLimitExceeded", summary, *last) if last else \
            state.fail("BackoffLimitExceeded", summary)
    return None
