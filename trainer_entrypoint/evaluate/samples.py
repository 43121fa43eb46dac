"""Evaluation rows as samples: the prompt's token ids, the reference answer, the completion
scored for loss, the code task to execute, and the row's difficulty group.

Prompts are tokenised once here, so every engine and model sees the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from kubetune.contract.config import TrainerConfig
from kubetune.contract.formats import detect_format

from ..data import load_split
from ..errors import PermanentError
from .code_checks import HUMANEVAL_STOPS, AppsTask, HumanEvalTask, apps_task

Prompt = Union[str, list]
GROUP_COLUMNS = ("difficulty", "level")


@dataclass
class Sample:
    index: int
    prompt: Prompt
    prompt_ids: list[int]
    reference: Optional[str] = None  # the answer exact_match and contains compare with
    completion_ids: Optional[list[int]] = None  # scored by loss and perplexity
    rejected_ids: Optional[list[int]] = None  # a reward model's rejected completion
    code: Optional[Union[HumanEvalTask, AppsTask]] = None
    group: Optional[str] = None


def message_text(value: Any) -> str:
    """A message list's contents joined, or the value as text."""
    if isinstance(value, list):
        return "".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return str(value)


class Encoder:
    """Tokenises prompts and completions the way the trainers did: chat template when the row
    is conversational (and the tokenizer has one), plain text otherwise."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    def _encode(self, text: str, special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def prompt(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, list):
            if not self.chat:
                return self._encode("\n".join(message_text([m]) for m in prompt), True)
            text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            return self._encode(text, False)
        return self._encode(prompt, True)

    def completion(self, prompt: Prompt, prompt_ids: list[int], completion: Any) -> list[int]:
        if isinstance(prompt, list) and self.chat:
            messages = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
            full = self._encode(self.tokenizer.apply_chat_template(prompt + messages, tokenize=False), False)
            if full[:len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
                return full[len(prompt_ids):]
        ids = self._encode(message_text(completion), False)
        eos = self.tokenizer.eos_token_id
        return ids + ([eos] if eos is not None else [])

    def as_chat(self, text: str) -> Prompt:
        return [{"role": "user", "content": text}] if self.chat else text


def _pair(row: dict[str, Any], fmt: str, encoder: Encoder) -> tuple[Prompt, Any]:
    """(prompt, reference completion or None) of a row in a text format."""
    if fmt == "messages":
        messages = row["messages"]
        if messages and messages[-1].get("role") == "assistant":
            return messages[:-1], [messages[-1]]
        return messages, None
    if fmt in ("prompt_completion", "unpaired_preference"):
        wanted = fmt == "prompt_completion" or bool(row.get("label"))
        return row["prompt"], row["completion"] if wanted else None
    if fmt == "preference":
        return row["prompt"], row["chosen"]
    if fmt == "prompt_answer":
        return encoder.as_chat(str(row["prompt"])), str(row["answer"])
    if fmt == "prompt_only":
        answer = row.get("answer", row.get("solution"))
        return row["prompt"], None if answer is None else str(answer)
    raise PermanentError(f"evaluation data format {fmt} is not supported")


def _code_sample(index: int, row: dict[str, Any], fmt: str, encoder: Encoder) -> Sample:
    if fmt == "humaneval":
        task = HumanEvalTask(row["prompt"], row["test"], row["entry_point"])
        ids = encoder.prompt(row["prompt"])
        return Sample(index, row["prompt"], ids, completion_ids=encoder.completion(
            row["prompt"], ids, row["canonical_solution"]), code=task)
    task = apps_task(row)
    question = str(row["question"])
    if task.starter_code:
        question += f"\n\nStart from:\n```python\n{task.starter_code}\n```"
    prompt = encoder.as_chat(question)
    return Sample(index, prompt, encoder.prompt(prompt), code=task)


def _text_sample(index: int, row: dict[str, Any], encoder: Encoder) -> Sample:
    ids = encoder.prompt(str(row["text"]))
    return Sample(index, "", ids[:1], completion_ids=ids[1:])


def to_sample(index: int, row: dict[str, Any], fmt: str, encoder: Encoder, rejected: bool) -> Sample:
    if fmt in ("humaneval", "apps"):
        sample = _code_sample(index, row, fmt, encoder)
    elif fmt == "text":
        sample = _text_sample(index, row, encoder)
    else:
        prompt, completion = _pair(row, fmt, encoder)
        ids = encoder.prompt(prompt)
        sample = Sample(index, prompt, ids)
        if completion is not None:
            sample.reference = message_text(completion)
            sample.completion_ids = encoder.completion(prompt, ids, completion)
        if rejected and fmt == "preference":
            sample.rejected_ids = encoder.completion(prompt, ids, row["rejected"])
    group = next((row[c] for c in GROUP_COLUMNS if row.get(c) not in (None, "")), None)
    sample.group = None if group is None else str(group)
    return sample


def stop_strings(fmt: str) -> list[str]:
    return list(HUMANEVAL_STOPS) if fmt == "humaneval" else []


def load_samples(config: TrainerConfig, tokenizer) -> tuple[list[Sample], str, str]:
    """(samples, format, where the data came from)."""
    data = config.evaluation_data()
    if data is None:
        raise PermanentError("spec.evaluation.dataset: no evaluation data; set it or spec.dataset.evalSplit")
    spec, split = data
    dataset, where = load_split(spec, split, config.method)
    fmt = detect_format(set(dataset.column_names)) if spec.format == "auto" else spec.format
    if fmt is None:
        raise PermanentError(f"evaluation dataset {where}: unrecognised columns {', '.join(dataset.column_names)}")
    encoder = Encoder(tokenizer)
    rejected = config.trainer.scores  # a reward model is scored on its preference pairs
    try:
        samples = [to_sample(i, row, fmt, encoder, rejected) for i, row in enumerate(dataset)]
    except KeyError as error:
        raise PermanentError(f"evaluation dataset {where}: format {fmt} needs column {error}") from None
    return samples, fmt, where
