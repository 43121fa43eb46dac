"""The evaluation Job's command: evaluate the trained model (and optionally its base) on the
evaluation data, write a JSON report and the generations to the job's output, and leave a
short summary in the termination message for the operator to copy into status.evaluation.
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kubetune import contract
from kubetune.contract.config import SamplingConfig, TrainerConfig
from kubetune.contract.evaluation import verdict
from kubetune.contract.metrics import metric
from kubetune.contract.report import (
    GENERATIONS_FILE,
    REPORT_FILE,
    EvaluationReport,
    ReportedDataset,
    ReportedIntervals,
    ReportedSampling,
    ReportStamp,
)

from ..card import report_evaluation, write_card
from ..errors import PermanentError, exit_code_for, write_termination_message
from ..sources import model_reference
from .engines import VLLM_LORA_RANKS, Sampling, TransformersEngine, Weights, open_engine
from .intervals import LEVEL, RESAMPLES
from .metrics import check_applicable, needs_generation, needs_logprobs, score_rows
from .report import ModelRun, combine, summary, write_generations
from .samples import Sample, load_samples, stop_strings
from .sandbox import isolation


@dataclass(frozen=True)
class EnginePlan:
    weights: Weights
    runs: list[tuple[str, bool]]  # (label, with adapter)


def sampling_of(spec: SamplingConfig, fmt: str) -> Sampling:
    return Sampling(**spec.model_dump(), stop=stop_strings(fmt))


# --- which models, on which engines ------------------------------------------------------


def _adapter_rank(folder: Path) -> Optional[int]:
    config = folder / "adapter_config.json"
    return int(json.loads(config.read_text()).get("r", 0)) if config.exists() else None


def merge_adapter(base: str, adapter: str, trust_remote_code: bool) -> str:
    """Base weights with the adapter folded in, in a scratch folder. The base is the job's
    resolved model source, not the path recorded in adapter_config.json at training time."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tempfile.mkdtemp(prefix="kubetune-merged-")
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", trust_remote_code=trust_remote_code)
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(target)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(target)
    print(f"kubetune: merged the adapter into {target}", flush=True)
    return target


def engine_plans(config: TrainerConfig) -> list[EnginePlan]:
    """A LoRA job runs one engine (tuned = adapter on, base = adapter off); otherwise one engine a model."""
    model, evaluation = config.model, config.evaluation
    tuned = Path(config.output.model)
    if not tuned.exists():
        raise PermanentError(f"trained model {tuned} does not exist (did training finish?)")
    base = model_reference(model.location, model.source)
    common = {"dtype": model.dtype, "trust_remote_code": model.trust_remote_code}
    rank = _adapter_rank(tuned)
    merge = bool(config.peft and config.peft.merge_for_evaluation)
    if rank is not None and not merge and (evaluation.engine != "vllm" or rank <= VLLM_LORA_RANKS[-1]):
        runs = [("tuned", True)] + ([("base", False)] if evaluation.compare_base else [])
        return [EnginePlan(Weights(base, str(tuned), rank, **common), runs)]
    tuned_weights = merge_adapter(base, str(tuned), model.trust_remote_code) if rank is not None else str(tuned)
    plans = [EnginePlan(Weights(tuned_weights, **common), [("tuned", False)])]
    if evaluation.compare_base:
        plans.append(EnginePlan(Weights(base, **common), [("base", False)]))
    return plans


# --- running --------------------------------------------------------------------------------


def decode(tokenizer, tokens: list[int], stops: list[str]) -> str:
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in stops:
        text = text.split(stop, 1)[0]
    return text


def generate(engine, samples: list[Sample], sampling: Sampling, adapter: bool, tokenizer) -> dict[int, list[str]]:
    outputs = engine.generate([s.prompt_ids for s in samples], sampling, adapter)
    return {s.index: [decode(tokenizer, t, sampling.stop) for t in tokens] for s, tokens in zip(samples, outputs)}


def completion_logprobs(scorer: TransformersEngine, samples: list[Sample], adapter: bool) -> dict[int, float]:
    scored = [s for s in samples if s.completion_ids]
    sums = scorer.completion_logprobs([(s.prompt_ids, s.completion_ids) for s in scored], adapter)
    return {s.index: value for s, value in zip(scored, sums)}


def within_context(samples: list[Sample], engine) -> list[Sample]:
    return [s for s in samples if len(s.prompt_ids) + len(s.completion_ids or []) < engine.context_length]


def run_plan(plan: EnginePlan, engine_name: str, samples, sampling, metrics, tokenizer) -> dict[str, ModelRun]:
    """The generations (on the chosen engine) and completion log-probabilities of a plan's models."""
    runs = {label: ModelRun() for label, _ in plan.runs}
    usable: list[Sample] = []
    generate_here = needs_generation(metrics) and engine_name == "transformers"
    if needs_logprobs(metrics) or generate_here:
        with closing(TransformersEngine(plan.weights, tokenizer)) as engine:
            usable = within_context(samples, engine)
            for label, adapter in plan.runs:
                if needs_logprobs(metrics):
                    runs[label].logprobs = completion_logprobs(engine, usable, adapter)
                if generate_here:
                    runs[label].completions = generate(engine, usable, sampling, adapter, tokenizer)
    if needs_generation(metrics) and not generate_here:
        with closing(open_engine(engine_name, plan.weights, tokenizer)) as engine:
            usable = within_context(samples, engine)
            for label, adapter in plan.runs:
                runs[label].completions = generate(engine, usable, sampling, adapter, tokenizer)
    print(f"kubetune: evaluated {', '.join(runs)} ({len(usable)} of {len(samples)} rows fit the context)",
          flush=True)
    return runs


def run_models(config: TrainerConfig, samples, sampling, metrics, tokenizer) -> dict[str, ModelRun]:
    runs: dict[str, ModelRun] = {}
    for plan in engine_plans(config):
        runs.update(run_plan(plan, config.evaluation.engine, samples, sampling, metrics, tokenizer))
    return runs


# --- the command ----------------------------------------------------------------------------


def load_tokenizer(config: TrainerConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.output.model, trust_remote_code=config.model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def keep_earlier_report(folder: Path, digest: Optional[str]) -> None:
    """A report of another spec.evaluation moves to a folder named by its digest, beside the new one."""
    try:
        earlier = ReportStamp.decode((folder / REPORT_FILE).read_text()).digest
    except (OSError, ValueError):
        return
    if earlier and earlier != digest:
        (folder / earlier).mkdir(exist_ok=True)
        for name in (REPORT_FILE, GENERATIONS_FILE):
            if (folder / name).exists():
                (folder / name).replace(folder / earlier / name)


def evaluate(config: TrainerConfig) -> EvaluationReport:
    """Evaluate, write the generations, the card and, last, the report; returns the report."""
    from .reward_models import evaluate_reward_model, reward_scorer

    started = time.monotonic()
    evaluation = config.evaluation
    metrics = evaluation.metrics
    tokenizer = load_tokenizer(config)
    samples, fmt, where = load_samples(config, tokenizer)
    scores_pairs = config.trainer.scores  # a reward model is scored on pairs; it does not generate
    reward = reward_scorer(config) if not scores_pairs and any(metric(m).reward_model for m in metrics) else None
    check_applicable([] if scores_pairs else metrics, samples, fmt, where, reward)
    sampling = sampling_of(evaluation.sampling, fmt)
    if scores_pairs:
        runs, per_model = evaluate_reward_model(config, samples, metrics)
    else:
        runs = run_models(config, samples, sampling, metrics, tokenizer)
        per_model = {label: score_rows(samples, run, metrics, evaluation.timeout_seconds_per_sample, reward)
                     for label, run in runs.items()}
    folder = Path(config.output.evaluation)
    folder.mkdir(parents=True, exist_ok=True)
    keep_earlier_report(folder, evaluation.digest)
    write_generations(folder / GENERATIONS_FILE, samples, runs)
    results = combine(per_model, evaluation.sampling.seed)
    outcome, gates, _ = verdict(evaluation.gates, results)
    report = EvaluationReport(
        digest=evaluation.digest, complete=True, job=config.job, method=config.method,
        engine="transformers" if scores_pairs else evaluation.engine,
        dataset=ReportedDataset(source=where, format=fmt, rows=len(samples)),
        intervals=ReportedIntervals(resamples=RESAMPLES, level=LEVEL, seed=evaluation.sampling.seed),
        sampling=ReportedSampling(**evaluation.sampling.model_dump(), stop=sampling.stop),
        sandbox=isolation() if any(metric(m).needs == "code_tests" for m in metrics) else None,
        metrics=results, generations=str(folder / GENERATIONS_FILE), verdict=outcome, gates=gates,
        seconds=round(time.monotonic() - started, 1))
    write_card(config, report_evaluation(report))
    report.write(folder)  # last: a complete report means the card and generations are there too
    return report


def finished_report(config: TrainerConfig) -> Optional[EvaluationReport]:
    """The complete report this evaluation already left on the volume (its pod was lost after
    writing it), so a new pod answers from it instead of evaluating again."""
    report = EvaluationReport.complete_in(Path(config.output.evaluation), config.evaluation.digest)
    if report is not None:
        print(f"kubetune: evaluation {report.digest} is already complete: answering from its report", flush=True)
    return report


def answer(config: TrainerConfig, report: EvaluationReport) -> str:
    """The termination message the operator copies into status.evaluation."""
    message = summary(report.metrics, str(Path(config.output.evaluation) / REPORT_FILE))
    write_termination_message(message)
    return message


def main() -> int:
    from ..config import load_config

    try:
        config = load_config()
        report = finished_report(config) or evaluate(config)
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            raise  # retryable: the Job retries the pod
        return code
    message = answer(config, report)
    print(f"kubetune: evaluation finished: {message}", flush=True)
    return contract.EXIT_SUCCESS
