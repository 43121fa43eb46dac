"""A job's live line while a Client waits on it: `kubetune run`'s (RunDisplay), or, in a
notebook with tqdm installed, a tqdm bar (tqdm renders where rich's live display needs ipywidgets)."""

from __future__ import annotations

from typing import Any, Optional

from ..api.models import FineTuneJobStatus
from ..lifecycle import Decision
from ..lifecycle import Event as LifecycleEvent
from ..lifecycle.phases import Phase
from .job import Event, Job


def in_ipython() -> bool:
    """Whether this runs in IPython or Jupyter."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def as_decision(job: Job, events: tuple[Event, ...] = ()) -> Decision:
    """The job as RunDisplay shows a tick of `kubetune run`."""
    return Decision(phase=job.phase or Phase.PENDING, status=job.status or FineTuneJobStatus(),
                    events=[LifecycleEvent(e.type, e.reason, e.message) for e in events])  # type: ignore[arg-type]


class LiveLine:
    """Step/total, loss and ETA of a job, updated on every change."""

    def __init__(self, console: Any = None):
        from rich.console import Console

        from ..local.console import RunDisplay

        self.display = RunDisplay(console or Console())
        self.display.__enter__()

    def update(self, job: Job, events: tuple[Event, ...] = ()) -> None:
        self.display.tick(as_decision(job, events))

    def close(self) -> None:
        self.display.__exit__(None, None, None)


class NotebookBar:
    def __init__(self, tqdm: Any):
        self.bar = tqdm(total=None, unit="step", desc="Pending")

    def update(self, job: Job, events: tuple[Event, ...] = ()) -> None:
        progress = job.status.progress if job.status else None
        total = progress.total_steps if progress else None
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = (total if total and job.phase in (Phase.EVALUATING, Phase.PUBLISHING, Phase.SUCCEEDED)
                      else progress.step if progress else 0)
        self.bar.set_description(str(job.phase or Phase.PENDING), refresh=False)
        loss = f"loss {progress.loss:.4g}" if progress and progress.loss is not None else "loss -"
        eta = f"ETA {progress.eta_seconds:.0f}s" if progress and progress.eta_seconds is not None else "ETA -"
        self.bar.set_postfix_str(f"{loss}, {eta}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def progress_display(shown: Optional[bool]) -> Optional[Any]:
    """The display wait() updates: in IPython unless shown is False, anywhere when it is True."""
    if shown is False or (shown is None and not in_ipython()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return LiveLine()
    return NotebookBar(tqdm)
