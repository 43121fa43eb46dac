"""What `kubetune run` shows: a live progress line while the job runs, a summary at the end."""

from __future__ import annotations

import time
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..api.models import EvaluationStatus, ProgressStatus
from ..contract.output import CompletionRecord
from ..contract.progress import TrainingNumbers
from ..lifecycle import Decision


def _number(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def throughput_text(progress: TrainingNumbers) -> str:
    """The rate with its unit, tokens/s or samples/s, as training reports it; an RL run's reward
    after it."""
    rate = progress.throughput()
    text = "rate -" if rate is None else f"{_number(rate[0], 3)} {rate[1]}"
    return text if progress.reward is None else f"{text}  reward {_number(progress.reward)}"


class RunDisplay:
    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<12}"), BarColumn(), TextColumn("{task.fields[steps]}"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
            TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task("job", total=None, phase="Pending", steps="", loss="-",
                                           speed=throughput_text(ProgressStatus()), eta="-")
        self.started = time.monotonic()
        self.first_step_seconds: Optional[float] = None

    def __enter__(self) -> "RunDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def tick(self, decision: Decision) -> None:
        for event in decision.events:
            style = "yellow" if event.type == "Warning" else "cyan"
            # A message quotes logs, whose brackets are not markup.
            self.console.print(f"[{style}]{event.reason}[/]: {escape(event.message)}")
        progress = decision.status.progress or ProgressStatus()
        step, total = progress.step, progress.total_steps
        if step and self.first_step_seconds is None:
            self.first_step_seconds = time.monotonic() - self.started
        eta = progress.eta_seconds
        if total and decision.phase in ("Evaluating", "Publishing", "Succeeded"):
            step = total  # the last poll may predate the final step
        self.progress.update(
            self.task, total=total, completed=step or 0, phase=decision.phase,
            steps=f"{step}/{total}" if total else "", loss=_number(progress.loss),
            speed=throughput_text(progress), eta=f"{eta:.0f}s" if eta is not None else "-")


def _interval(bounds: Optional[list[float]]) -> str:
    return f" [{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds else ""


def summary_table(decision: Decision, completion: Optional[CompletionRecord], model_dir: str, wall_seconds: float,
                  first_step: Optional[float]) -> Table:
    """The job's outcome; steps and loss from the completion record when training finished."""
    status = decision.status
    table = Table(title=f"FineTuneJob {decision.phase}", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    if completion:
        table.add_row("steps", str(completion.global_step))
        table.add_row("training loss (mean)", _number(completion.train_loss))
    else:
        progress = status.progress or ProgressStatus()
        table.add_row("steps", f"{progress.step} of {progress.total_steps or '-'}")
        table.add_row("training loss (last)", _number(progress.loss))
    if status.progress and status.progress.throughput():
        table.add_row("throughput (last)", throughput_text(status.progress))
    evaluation = status.evaluation or EvaluationStatus()
    for name, value in evaluation.metrics.items():
        text = _number(value.tuned)
        if value.base is not None:
            text += f"  (base {_number(value.base)}, Δ {value.delta:+.4g}{_interval(value.delta_interval)})"
        elif value.tuned_interval:
            text += _interval(value.tuned_interval)
        table.add_row(name, text)
    if evaluation.verdict:
        gates = "; ".join(gate.describe() for gate in evaluation.gates)
        table.add_row("verdict", evaluation.verdict + (f": {gates}" if gates else ""))
    if evaluation.report:
        table.add_row("report", evaluation.report)
    for published in (status.output.published if status.output else None) or []:
        table.add_row("published", f"{published.url} ({published.files} files, {published.revision or '-'})")
    table.add_row("model", model_dir)
    if first_step is not None:
        table.add_row("first step after", f"{first_step:.1f} s")
    table.add_row("wall time", f"{wall_seconds:.1f} s")
    failed = next((c for c in status.conditions if c.type == "Failed" and c.status == "True"), None)
    if failed:
        table.add_row("failed", f"{failed.reason}: {failed.message}")
    return table
