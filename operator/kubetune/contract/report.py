"""The evaluation report: report.json in the job's evaluation folder. The evaluator writes it
last, whole, in one rename; the model card, the publish Job and a re-run evaluator read it. An
evaluator whose pod was lost and started again finds a complete report of the same
spec.evaluation (its digest) and answers from it instead of evaluating again."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import ConfigDict, Field

from .config import JobRef, SamplingConfig
from .document import Document
from .evaluation import GateResult, MetricValue, Verdict

REPORT_FILE = "report.json"
GENERATIONS_FILE = "generations.jsonl"


class ReportedValue(MetricValue):
    # A metric no row could give is NaN; JSON has no NaN, so the report writes the constant.
    model_config = ConfigDict(ser_json_inf_nan="constants")


class MetricReport(ReportedValue):
    by_group: dict[str, ReportedValue] = Field(
        default_factory=dict, description="The same values per group of rows (e.g. difficulty).")


class ReportedDataset(Document):
    source: str = Field(description="Where the rows came from.")
    format: str = Field(description="Their row format.")
    rows: int = Field(description="Rows evaluated.")


class ReportedIntervals(Document):
    method: str = "paired bootstrap over rows"
    resamples: int
    level: float
    seed: int


class ReportedSampling(SamplingConfig):
    stop: list[str] = Field(default_factory=list, description="Strings that end a completion.")


class ReportStamp(Document):
    """Which evaluation a report is of, and whether it was finished: read from any report, even
    one written by another version or cut short."""

    model_config = ConfigDict(extra="ignore")

    digest: Optional[str] = Field(None, description="The spec.evaluation digest the report is of.")
    complete: bool = Field(False, description="True once every file of the evaluation is written.")


class EvaluationReport(ReportStamp):
    job: JobRef
    engine: str
    method: str
    dataset: ReportedDataset
    intervals: ReportedIntervals
    sampling: ReportedSampling
    sandbox: Optional[str] = Field(None, description="How code samples were isolated, when any ran.")
    metrics: dict[str, MetricReport]
    generations: str = Field(description="Path of the generations file.")
    seconds: float = Field(description="How long the evaluation took.")
    verdict: Verdict
    gates: list[GateResult] = Field(default_factory=list)

    def write(self, folder: Path) -> Path:
        """Whole or not at all: a reader never sees half a report."""
        path = folder / REPORT_FILE
        staging = path.with_suffix(".tmp")
        staging.write_text(self.encode(indent=2))
        staging.replace(path)
        return path

    @classmethod
    def complete_in(cls, folder: Path, digest: Optional[str]) -> Optional["EvaluationReport"]:
        """The complete report of this evaluation (same digest) in the folder, its generations
        beside it; None when there is none, or it is cut short, unreadable or of another one."""
        try:
            report = cls.decode((folder / REPORT_FILE).read_text())
        except (OSError, ValueError):
            return None
        whole = report.complete and Path(report.generations).is_file()
        return report if whole and digest is not None and report.digest == digest else None

    @classmethod
    def verdict_in(cls, folder: Path) -> Optional[str]:
        """The verdict of the report in the folder; None when there is no report (not evaluated).
        A report that cannot be read is an error: publishing must not take it for 'not evaluated'."""
        path = folder / REPORT_FILE
        if not path.exists():
            return None
        return cls.decode(path.read_text()).verdict
