"""report.json, typed once in the contract: the evaluator writes it and the card reads it, and an
evaluator started again after its pod was lost answers from a complete report of the same
spec.evaluation instead of evaluating again (no vLLM starts here); a report cut short, unreadable
or of another evaluation is not reused."""

import json
import math
from pathlib import Path

import pytest

from conftest import with_spec
from kubetune import contract
from kubetune.contract.evaluation import EvaluationSummary, verdict
from kubetune.contract.report import (
    GENERATIONS_FILE,
    EvaluationReport,
    ReportedDataset,
    ReportedIntervals,
    ReportedSampling,
    ReportStamp,
)
from local_pods import map_paths, rendered_config
from trainer_entrypoint.card import report_evaluation
from trainer_entrypoint.evaluate.main import finished_report, main
from trainer_entrypoint.evaluate.report import combine, summary
from trainer_entrypoint.evaluate.scoring import Rows

EVALUATION = {"metrics": ["loss", "exact_match"], "compareBase": True,
              "dataset": {"source": "builtin://tiny", "split": "train"},
              "gates": [{"metric": "exact_match", "minDelta": 0.0}]}


def rows(*values):
    return Rows({index: (group, value, 1.0) for index, (group, value) in enumerate(values)})


@pytest.fixture
def config(tmp_path):
    """The evaluator's rendered config with its paths under tmp_path; no trained model exists there."""
    _, rendered = rendered_config(with_spec(evaluation=EVALUATION))
    return map_paths(rendered, tmp_path)


def written_report(config, complete=True):
    """A report as the evaluator writes it, from scored rows (NaN: a metric no row gave), and its
    generations file."""
    folder = Path(config.output.evaluation)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = combine({"tuned": {"exact_match": rows(("easy", 1.0), ("hard", 0.0)), "loss": rows()},
                       "base": {"exact_match": rows(("easy", 0.0), ("hard", 0.0)), "loss": rows()}})
    outcome, gates, _ = verdict(config.evaluation.gates, metrics)
    report = EvaluationReport(
        digest=config.evaluation.digest, complete=complete, job=config.job, engine="vllm", method=config.method,
        dataset=ReportedDataset(source="builtin://tiny", format="prompt_answer", rows=2),
        intervals=ReportedIntervals(resamples=100, level=0.95, seed=0),
        sampling=ReportedSampling(**config.evaluation.sampling.model_dump(), stop=["\n"]),
        metrics=metrics, generations=str(folder / GENERATIONS_FILE), seconds=1.5, verdict=outcome, gates=gates)
    (folder / GENERATIONS_FILE).write_text("{}\n")
    return report, report.write(folder)


def test_the_report_reads_back_as_it_was_written_a_nan_included(config):
    report, path = written_report(config)
    read = EvaluationReport.decode(path.read_text())
    assert math.isnan(read.metrics["loss"].tuned) and read.metrics["exact_match"].by_group["easy"].delta == 1.0
    assert read.model_dump(exclude={"metrics"}) == report.model_dump(exclude={"metrics"})
    assert read.verdict == "Passed" and read.digest == config.evaluation.digest
    assert "Verdict: **Passed**" in report_evaluation(read) and "| exact_match | 0.5" in "\n".join(
        report_evaluation(read))


def test_a_rerun_evaluator_answers_from_the_complete_report_without_evaluating(config, tmp_path, monkeypatch):
    report, path = written_report(config)
    (tmp_path / "config.json").write_text(config.encode())
    monkeypatch.setenv(contract.ENV_CONFIG, str(tmp_path / "config.json"))
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(tmp_path / "termination-log"))
    # No trained model exists: evaluating would fail, answering from the report does not.
    assert main() == contract.EXIT_SUCCESS
    message = (tmp_path / "termination-log").read_text()
    assert message == summary(report.metrics, str(path))
    read = EvaluationSummary.read(message)
    assert read.report == str(path) and read.metrics["exact_match"].delta == 0.5 and "loss" not in read.metrics


def test_a_report_of_another_evaluation_is_not_reused(config):
    written_report(config)
    other = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"digest": "0ther000"})})
    assert finished_report(config) is not None and finished_report(other) is None


def test_a_report_cut_short_or_unfinished_or_without_its_generations_is_not_reused(config):
    _, path = written_report(config)
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    assert finished_report(config) is None
    path.write_text("not json")
    assert finished_report(config) is None
    path.write_text(whole)
    (path.parent / GENERATIONS_FILE).unlink()
    assert finished_report(config) is None
    written_report(config, complete=False)
    assert finished_report(config) is None


def test_the_stamp_reads_the_digest_of_any_report():
    assert ReportStamp.decode(json.dumps({"digest": "aaaa1111", "metrics": {}})).digest == "aaaa1111"
