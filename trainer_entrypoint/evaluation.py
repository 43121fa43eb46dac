"""The evaluation Job's command: evaluate the trained model (and optionally its base) on the
evaluation data, write a JSON report and the generations to the job's output, and leave a
short summary in the termination message for the operator to copy into status.evaluation.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from contextlib import closing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from kubetune import contract

from . import scoring
from .code_checks import HumanEvalTask, apps_passes, humaneval_passes
from .engines import VLLM_LORA_RANKS, Sampling, TransformersEngine, Weights, open_engine
from .errors import PermanentError, record_permanent_error, write_termination_message
from .eval_data import Sample, load_samples, stop_strings
from .sandbox import isolation
from .sources import model_reference

REPORT_FILE = "report.json"
GENERATIONS_FILE = "generations.jsonl"
TERMINATION_LIMIT = 4000
GENERATION_METRICS = ("exact_match", "contains", "reward")


@dataclass
class ModelRun:
    """What one model produced: completions per sample and summed completion log-probabilities."""

    completions: dict[int, list[str]] = field(default_factory=dict)
    logprobs: dict[int, float] = field(default_factory=dict)
    scores: dict[int, dict[str, float]] = field(default_factory=dict)  # per sample, per metric


@dataclass(frozen=True)
class EnginePlan:
    weights: Weights
    runs: list[tuple[str, bool]]  # (label, with adapter)


def needs_generation(metrics: list[str]) -> bool:
    return any(m in GENERATION_METRICS or m.startswith("pass@") for m in metrics)


def needs_logprobs(metrics: list[str]) -> bool:
    return any(m in ("loss", "perplexity") for m in metrics)


def sampling_of(evaluation: dict[str, Any], fmt: str) -> Sampling:
    spec = evaluation["sampling"]
    return Sampling(n=spec["n"], temperature=spec["temperature"], top_p=spec["topP"], max_tokens=spec["maxTokens"],
                    seed=spec["seed"], stop=stop_strings(fmt))


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


def engine_plans(config: dict[str, Any]) -> list[EnginePlan]:
    """A LoRA job runs one engine (tuned = adapter on, base = adapter off); otherwise one engine a model."""
    model, evaluation = config["model"], config["evaluation"]
    tuned = Path(config["output"]["model"])
    if not tuned.exists():
        raise PermanentError(f"trained model {tuned} does not exist (did training finish?)")
    base = model_reference(model["location"], model["source"])
    common = {"dtype": model.get("dtype", "auto"), "trust_remote_code": model.get("trustRemoteCode", False)}
    rank = _adapter_rank(tuned)
    compare = evaluation.get("compareBase", False)
    merge = bool((config.get("peft") or {}).get("mergeForEvaluation"))
    if rank is not None and not merge and (evaluation["engine"] != "vllm" or rank <= VLLM_LORA_RANKS[-1]):
        runs = [("tuned", True)] + ([("base", False)] if compare else [])
        return [EnginePlan(Weights(base, str(tuned), rank, **common), runs)]
    tuned_weights = merge_adapter(base, str(tuned), common["trust_remote_code"]) if rank is not None else str(tuned)
    plans = [EnginePlan(Weights(tuned_weights, **common), [("tuned", False)])]
    if compare:
        plans.append(EnginePlan(Weights(base, **common), [("base", False)]))
    return plans


# --- running and scoring ------------------------------------------------------------------


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


def _passes(sample: Sample, completion: str, timeout: float) -> bool:
    if isinstance(sample.code, HumanEvalTask):
        return humaneval_passes(sample.code, completion, timeout)
    return apps_passes(sample.code, completion, timeout)


def execute_code(samples: list[Sample], run: ModelRun, timeout: float) -> dict[int, list[bool]]:
    """Whether each completion of each code sample passes its tests (in parallel sandboxes)."""
    jobs = [(s, i, c) for s in samples if s.code for i, c in enumerate(run.completions.get(s.index, []))]
    verdicts = {s.index: [False] * len(run.completions[s.index]) for s in samples
                if s.code and s.index in run.completions}
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda job: _passes(job[0], job[2], timeout), jobs)
        for (sample, position, _), passed in zip(jobs, results):
            verdicts[sample.index][position] = passed
    for index, passed in verdicts.items():
        run.scores.setdefault(index, {})["passed"] = passed
    return verdicts


def _token_weighted_loss(samples: list[Sample], run: ModelRun) -> dict[str, float]:
    return scoring.weighted_means_by_group(
        (s.group, -run.logprobs[s.index], len(s.completion_ids or [])) for s in samples if s.index in run.logprobs)


def score_model(samples: list[Sample], run: ModelRun, metrics: list[str], timeout: float,
                reward=None) -> dict[str, dict[str, float]]:
    """{metric: {"all": value, group: value, ...}} for one model."""
    results: dict[str, dict[str, float]] = {}
    loss = _token_weighted_loss(samples, run) if needs_logprobs(metrics) else {}
    verdicts = execute_code(samples, run, timeout) if any(m.startswith("pass@") for m in metrics) else {}
    for metric in metrics:
        if metric == "loss":
            results[metric] = loss
        elif metric == "perplexity":
            results[metric] = {key: scoring.perplexity(value) for key, value in loss.items()}
        elif metric.startswith("pass@"):
            k = int(metric[5:])
            results[metric] = scoring.means_by_group(
                (s.group, scoring.pass_at_k(len(verdicts[s.index]), sum(verdicts[s.index]), k))
                for s in samples if s.index in verdicts)
        else:
            results[metric] = _generation_metric(metric, samples, run, reward)
    return results


def _generation_metric(metric: str, samples: list[Sample], run: ModelRun, reward) -> dict[str, float]:
    generated = [s for s in samples if run.completions.get(s.index)]
    if metric == "reward":
        values = [(s, reward.mean_score(s.prompt, run.completions[s.index])) for s in generated]
    else:
        compare = scoring.exact_match if metric == "exact_match" else scoring.contains
        values = [(s, sum(compare(c, s.reference) for c in run.completions[s.index]) / len(run.completions[s.index]))
                  for s in generated if s.reference is not None]
    for sample, value in values:
        run.scores.setdefault(sample.index, {})[metric] = value
    return scoring.means_by_group((s.group, v) for s, v in values)


# What each metric needs from the evaluation rows.
REQUIREMENTS = {
    "loss": (lambda s: bool(s.completion_ids), "reference completions"),
    "perplexity": (lambda s: bool(s.completion_ids), "reference completions"),
    "exact_match": (lambda s: s.reference is not None, "reference answers"),
    "contains": (lambda s: s.reference is not None, "reference answers"),
    "pass@": (lambda s: s.code is not None, "code tests (humaneval or apps format)"),
}


def check_applicable(metrics: list[str], samples: list[Sample], fmt: str, where: str, reward) -> None:
    """Fail before any model loads when the data cannot give a requested metric."""
    for metric in metrics:
        if metric == "reward":
            if reward is None:
                raise PermanentError("spec.evaluation.metrics: reward needs a reward model in spec.rewards")
            continue
        usable, what = REQUIREMENTS["pass@" if metric.startswith("pass@") else metric]
        if not any(usable(s) for s in samples):
            raise PermanentError(f"spec.evaluation.metrics: {metric} needs {what}; the evaluation data "
                                 f"{where} (format {fmt}) has none")


# --- report -------------------------------------------------------------------------------


def combine(per_model: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """{metric: {"tuned", "base", "delta", "byGroup": {group: {...}}}} from each model's scores."""
    combined: dict[str, dict[str, Any]] = {}
    for metric, tuned in per_model["tuned"].items():
        base = per_model.get("base", {}).get(metric, {})
        entries = {key: _entry(value, base.get(key)) for key, value in tuned.items()}
        result = entries.pop(scoring.ALL, {"tuned": math.nan})
        if entries:
            result["byGroup"] = dict(sorted(entries.items()))
        combined[metric] = result
    return combined


def _entry(tuned: float, base: Optional[float]) -> dict[str, float]:
    return {"tuned": tuned} if base is None else {"tuned": tuned, "base": base, "delta": tuned - base}


def summary(metrics: dict[str, dict[str, Any]], report_path: str) -> str:
    """The termination message: metrics (and per-group values while they fit) plus the report path."""
    flat = {name: {k: v for k, v in value.items() if k in ("tuned", "base")} for name, value in metrics.items()}
    with_groups = dict(flat)
    for name, value in metrics.items():
        for group, entry in value.get("byGroup", {}).items():
            with_groups[f"{name}/{group}"] = {k: v for k, v in entry.items() if k in ("tuned", "base")}
    for candidate in (with_groups, flat):
        message = json.dumps({"metrics": candidate, "report": report_path}, separators=(",", ":"))
        if len(message) <= TERMINATION_LIMIT:
            return message
    return json.dumps({"metrics": {}, "report": report_path})


def write_generations(path: Path, samples: list[Sample], runs: dict[str, ModelRun]) -> None:
    with open(path, "w") as handle:
        for sample in samples:
            record: dict[str, Any] = {"index": sample.index, "group": sample.group, "prompt": sample.prompt,
                                      "reference": sample.reference}
            for label, run in runs.items():
                record[label] = {"completions": run.completions.get(sample.index, []),
                                 **run.scores.get(sample.index, {})}
                if sample.index in run.logprobs:
                    record[label]["completionLogprob"] = run.logprobs[sample.index]
            handle.write(json.dumps(record) + "\n")


# --- the command ----------------------------------------------------------------------------


def load_tokenizer(config: dict[str, Any]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config["output"]["model"],
                                              trust_remote_code=config["model"].get("trustRemoteCode", False))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """Evaluate, write the report and generations; returns the report."""
    from .reward_scoring import evaluate_reward_model, reward_scorer

    started = time.monotonic()
    evaluation = config["evaluation"]
    metrics = evaluation["metrics"]
    tokenizer = load_tokenizer(config)
    samples, fmt, where = load_samples(config, tokenizer)
    reward_job = config["method"] == "reward"  # a reward model is scored on pairs; it does not generate
    reward = reward_scorer(config) if "reward" in metrics and not reward_job else None
    check_applicable([] if reward_job else metrics, samples, fmt, where, reward)
    sampling = sampling_of(evaluation, fmt)
    engine_name = "transformers" if reward_job else evaluation["engine"]
    if reward_job:
        runs, per_model = evaluate_reward_model(config, samples, metrics)
    else:
        runs = run_models(config, samples, sampling, metrics, tokenizer)
        per_model = {label: score_model(samples, run, metrics, evaluation["timeoutSecondsPerSample"], reward)
                     for label, run in runs.items()}
    folder = Path(config["output"]["evaluation"])
    folder.mkdir(parents=True, exist_ok=True)
    write_generations(folder / GENERATIONS_FILE, samples, runs)
    report = {
        "job": config["job"], "engine": engine_name, "method": config["method"],
        "dataset": {"source": where, "format": fmt, "rows": len(samples)},
        "sampling": {**evaluation["sampling"], "stop": sampling.stop},
        "sandbox": isolation() if any(m.startswith("pass@") for m in metrics) else None,
        "metrics": combine(per_model), "generations": str(folder / GENERATIONS_FILE),
        "seconds": round(time.monotonic() - started, 1),
    }
    (folder / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


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


def run_models(config, samples, sampling, metrics, tokenizer) -> dict[str, ModelRun]:
    runs: dict[str, ModelRun] = {}
    for plan in engine_plans(config):
        runs.update(run_plan(plan, config["evaluation"]["engine"], samples, sampling, metrics, tokenizer))
    return runs


def main() -> int:
    from .config import load_config

    try:
        config = load_config()
        report = evaluate(config)
    except PermanentError as error:
        return record_permanent_error(error)
    folder = Path(config["output"]["evaluation"])
    message = summary(report["metrics"], str(folder / REPORT_FILE))
    write_termination_message(message)
    print(f"kubetune: evaluation finished: {message}", flush=True)
    return contract.EXIT_SUCCESS
