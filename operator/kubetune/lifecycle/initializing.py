"""Initializing: before anything else runs, the initializer Job downloads the job's hf:// and
s3:// sources once into the cache. The workers (and the generation server) stay at zero until
it succeeded (Initialized), with what it fetched so far in status.initialization; a source that
cannot exist fails the job at once, naming it, and other failures after backoffLimit."""

from __future__ import annotations

from typing import Optional

from ..api.models import FineTuneJob, InitializationStatus
from ..contract.failure import FailureReport
from ..contract.initialization import FetchedSource, InitializationReport, human_bytes
from ..render.pods import downloads
from .conditions import ConditionType
from .observed import EvaluationRun, Observed
from .phases import Phase
from .state import Action, Decision, Event, Next
from .workers import waiting

WHAT = "initializer"
# The Events of the reconcile that reads the initializer's report, one per source.
INITIALIZED_EVENTS = ("SourceCached", "SourceDownloaded")


def initialized(job: FineTuneJob, state: Next) -> bool:
    """Whether the job's pods may start: it downloads nothing, or its initializer succeeded."""
    return not downloads(job) or state.holds(ConditionType.INITIALIZED)


def hold_for_initialization(job: FineTuneJob, state: Next, observed: Observed) -> Optional[Decision]:
    """None once the sources are in the cache; else the decision that keeps the pods at zero."""
    if initialized(job, state) or job.spec.run_policy.suspend:
        return None  # suspended: the workers stay at zero as Suspended says
    run = observed.initialization
    if run is not None and run.failed:
        report = FailureReport.read(run.message)
        permanent = report is not None and report.reason == "PermanentError"
        return state.fail_batch_job("PermanentError" if permanent else "InitializationFailed", run, WHAT)
    if run is not None and (run.settled or run.result_lost(state.now)):
        _initialized(state, InitializationReport.read(run.message) if run.message else None)
        return None
    return _initializing(state, run, observed.initialization_progress)


def _initializing(state: Next, run: Optional[EvaluationRun], progress: Optional[InitializationReport]) -> Decision:
    if progress is not None:
        state.status.initialization = status_of(progress)
    state.condition(ConditionType.CREATED, True, "ChildrenCreated", "the initializer Job, ConfigMap and volume")
    why = waiting((run.pod,), None) if run and run.pod else None
    if why and why.at_once:
        return state.fail(why.failure, f"{WHAT}: {why.reason}: {why.message}")
    if why:
        state.warn_on_change(ConditionType.INITIALIZED, False, why.reason, why.message)
    else:
        shown = state.status.initialization.display if state.status.initialization else None
        state.condition(ConditionType.INITIALIZED, False, "Downloading",
                        f"the initializer is fetching the job's sources into the cache{f': {shown}' if shown else ''}")
    state.condition(ConditionType.RUNNING, False, "WaitingForInitialization",
                    "the workers start once the initializer has fetched every source")
    state.actions += [Action("ensure_training_objects"), Action("scale_workers", 0)]
    return state.finish(Phase.INITIALIZING)


def _initialized(state: Next, report: Optional[InitializationReport]) -> None:
    if report is None:
        state.condition(ConditionType.INITIALIZED, True, "SourcesReady",
                        "the initializer succeeded (its report could not be read; the pods read its manifest)")
        return
    state.status.initialization = status_of(report)
    lines = [source_line(source) for source in report.sources]
    state.condition(ConditionType.INITIALIZED, True, "SourcesReady", "; ".join(lines)[:1024])
    state.events += [Event("Normal", INITIALIZED_EVENTS[0] if source.cached else INITIALIZED_EVENTS[1], line)
                     for source, line in zip(report.sources, lines)]


def source_line(source: FetchedSource) -> str:
    """`hf://Qwen/Qwen2.5-0.5B@<sha>: cached`, or what was downloaded."""
    where = f"{source.source}@{source.revision}" if source.revision else source.source
    if source.cached:
        return f"{where}: cached"
    return f"{where}: downloaded {human_bytes(source.downloaded_bytes or source.bytes_done)}"


def status_of(report: InitializationReport) -> InitializationStatus:
    status = InitializationStatus.model_validate({"sources": [s.model_dump() for s in report.sources],
                                                  "seconds": report.seconds})
    done = sum(s.bytes_done for s in report.sources)
    totals = [s.bytes_total for s in report.sources]
    total = sum(t for t in totals if t) if all(totals) else None
    status.display = f"{human_bytes(done)}/{human_bytes(total)}" if total else human_bytes(done)
    return status

