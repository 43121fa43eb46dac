"""Reward models in evaluation: scoring generations with a job's reward model (the `reward`
metric of grpo and rloo jobs), and evaluating a trained reward model on preference pairs
(`loss` = mean -log sigmoid(chosen - rejected), `reward` = mean chosen - rejected margin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from kubetune.contract.config import TrainerConfig

from ..errors import PermanentError
from ..sources import model_reference
from . import scoring
from .engines import device
from .report import ModelRun
from .samples import message_text


class RewardScorer:
    def __init__(self, reference: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(reference)
        self.model = AutoModelForSequenceClassification.from_pretrained(reference, num_labels=1).to(device()).eval()

    def _text(self, prompt: Any, completion: str) -> str:
        if isinstance(prompt, list) and getattr(self.tokenizer, "chat_template", None):
            messages = prompt + [{"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return message_text(prompt) + completion

    def mean_score(self, prompt: Any, completions: list[str]) -> float:
        import torch

        scores = []
        with torch.no_grad():
            for completion in completions:
                inputs = self.tokenizer(self._text(prompt, completion), return_tensors="pt", truncation=True)
                scores.append(float(self.model(**inputs.to(self.model.device)).logits[0, 0]))
        return sum(scores) / len(scores)


def reward_scorer(config: TrainerConfig) -> Optional[RewardScorer]:
    """A scorer for the job's first reward model, or None when it has none."""
    for index, reward in enumerate(config.rewards):
        if reward.location:
            return RewardScorer(model_reference(reward.location, f"spec.rewards[{index}].model"))
    return None


def _classifier(folder_or_ref: str):
    from transformers import AutoModelForSequenceClassification

    if (Path(folder_or_ref) / "adapter_config.json").exists():
        from peft import AutoPeftModelForSequenceClassification

        return AutoPeftModelForSequenceClassification.from_pretrained(folder_or_ref, num_labels=1)
    return AutoModelForSequenceClassification.from_pretrained(folder_or_ref, num_labels=1)


def _pair_margins(model, samples) -> dict[int, tuple[float, float]]:
    import torch

    model = model.to(device()).eval()
    scores = {}
    with torch.no_grad():
        for sample in samples:
            chosen, rejected = (
                float(model(input_ids=torch.tensor([sample.prompt_ids + ids], device=model.device)).logits[0, 0])
                for ids in (sample.completion_ids, sample.rejected_ids))
            scores[sample.index] = (chosen, rejected)
    return scores


def evaluate_reward_model(config: TrainerConfig, samples, metrics: list[str]):
    """(runs, per-model scores) for a trained reward model and, with compareBase, its base."""
    import torch

    pairs = [s for s in samples if s.completion_ids and s.rejected_ids]
    if not pairs:
        raise PermanentError("spec.evaluation.dataset: a reward model is evaluated on preference data "
                             "(prompt, chosen, rejected)")
    models = {"tuned": config.output.model}
    if config.evaluation.compare_base:
        models["base"] = model_reference(config.model.location, config.model.source)
    runs, per_model = {}, {}
    for label, reference in models.items():
        torch.manual_seed(config.evaluation.sampling.seed)  # the base model's untrained score head
        margins = _pair_margins(_classifier(reference), pairs)
        run = ModelRun(scores={i: {"chosen": c, "rejected": r} for i, (c, r) in margins.items()})
        values = {
            "loss": scoring.Rows.of_means((s.index, s.group, scoring.pairwise_loss(
                margins[s.index][0] - margins[s.index][1])) for s in pairs),
            "reward": scoring.Rows.of_means((s.index, s.group, margins[s.index][0] - margins[s.index][1])
                                            for s in pairs),
        }
        per_model[label] = {m: values[m] for m in metrics if m in values}
        runs[label] = run
    return runs, per_model
