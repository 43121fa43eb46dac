"""The model card: README.md in the model folder, Hugging Face model-card YAML front matter
and markdown. Rank 0 writes it when training ends; the evaluator writes it again with the
evaluation table (tuned, base, difference, their 95 % intervals) and the verdict."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Optional

from kubetune.contract.config import TrainerConfig
from kubetune.contract.evaluation import GateResult, MetricValue
from kubetune.contract.output import CompletionRecord
from kubetune.contract.report import EvaluationReport

CARD_FILE = "README.md"


def _version() -> str:
    try:
        return metadata.version("kubetune")
    except metadata.PackageNotFoundError:
        return "unknown"


def _hub_id(source: str) -> Optional[str]:
    return source.removeprefix("hf://") if source.startswith("hf://") else None


def front_matter(config: TrainerConfig) -> str:
    from huggingface_hub import ModelCardData

    base, dataset = _hub_id(config.model.source), _hub_id(config.dataset.source)
    data = ModelCardData(
        base_model=base, datasets=[dataset] if dataset else None,
        library_name="peft" if config.peft else "transformers",
        tags=["kubetune", "trl", config.method] + (["lora"] if config.peft else []),
        pipeline_tag=None if config.trainer.scores else "text-generation")
    return data.to_yaml()


def _interval(bounds: Optional[list[float]]) -> str:
    return f" [{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds else ""


def _cell(value: Optional[float], bounds: Optional[list[float]], signed: bool = False) -> str:
    if value is None:
        return "-"
    return (f"{value:+.4g}" if signed else f"{value:.4g}") + _interval(bounds)


def evaluation_section(metrics: dict[str, MetricValue], verdict: str, gates: list[GateResult]) -> list[str]:
    lines = ["## Evaluation", "", "95 % intervals by paired bootstrap over the evaluation rows.", "",
             "| metric | tuned | base | difference | rows |", "|---|---|---|---|---|"]
    for name, value in metrics.items():
        lines.append(f"| {name} | {_cell(value.tuned, value.tuned_interval)} | {_cell(value.base, value.base_interval)}"
                     f" | {_cell(value.delta, value.delta_interval, signed=True)} | {value.rows or '-'} |")
    lines += ["", f"Verdict: **{verdict}**"] + [f"- {gate.describe()}" for gate in gates]
    return lines + [""]


def model_card(config: TrainerConfig, record: Optional[CompletionRecord],
               evaluation: Optional[list[str]] = None) -> str:
    training = {key: value for key, value in config.training.items() if key != "deepspeed"}
    distributed = config.distributed
    lines = [
        "---", front_matter(config).rstrip(), "---", "",
        f"# {config.job.name}", "",
        f"{config.method.upper()} of `{config.model.source}` on `{config.dataset.source}` (split "
        f"`{config.dataset.split}`), trained with TRL by kubetune {_version()}.", "",
        "## Training", "",
        f"- Base model: `{config.model.source}`" + (f" (revision `{config.model.revision}`)"
                                                     if config.model.revision else ""),
        f"- Method: {config.method} (`trl.{config.trainer.trainer_class}`)"
        + (f", LoRA r={config.peft.r} alpha={config.peft.alpha}" if config.peft else ""),
        f"- Data: `{config.dataset.source}`, split `{config.dataset.split}`",
        f"- Distributed: {distributed.strategy}" + (f", offload {distributed.offload}"
                                                     if distributed.offload != "none" else "")
        + (f", {record.world_size} processes" if record and record.world_size else ""),
    ]
    if record:
        lines.append(f"- Steps: {record.global_step}" + (f", tokens: {record.tokens:,}" if record.tokens else "")
                     + (f", mean training loss {record.train_loss:.4g}" if record.train_loss is not None else ""))
    lines += ["", "Training keys (`spec.training` and the keys kubetune manages):", "", "```json",
              json.dumps(training, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines + (evaluation or ["## Evaluation", "", "Not evaluated yet.", ""])) + "\n"


def write_card(config: TrainerConfig, evaluation: Optional[list[str]] = None) -> Path:
    folder = Path(config.output.model)
    record = CompletionRecord.read(Path(config.output.completion_record), config.job.uid)
    path = folder / CARD_FILE
    path.write_text(model_card(config, record, evaluation))
    return path


def report_evaluation(report: EvaluationReport) -> list[str]:
    """The evaluation section from an evaluation report."""
    return evaluation_section(report.metrics, report.verdict, report.gates)
