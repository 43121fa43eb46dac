"""builtin://tiny: a tiny random-weight Llama, a locally trained tokenizer, and a small dataset
in every format the methods read. Made on first use, deterministically, with no downloads.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kubetune import contract
from kubetune.contract.builtin import TINY_MODEL, TINY_SPLITS, TINY_VOCAB
from kubetune.contract.formats import FORMAT_NAMES
from kubetune.contract.methods import METHODS

BUILD_VERSION = "3"
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPLITS = TINY_SPLITS


def builtin_root() -> Path:
    default = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "kubetune-builtin"
    return Path(os.environ.get(contract.ENV_BUILTIN_DIR, default))


def tiny_dir() -> Path:
    """The built tiny model and data, made once; safe when several ranks ask at the same time."""
    target = builtin_root() / f"tiny-v{BUILD_VERSION}"
    if (target / "DONE").exists():
        return target
    if _in_process_group():
        # transformers writes weights only on rank 0 once a process group exists; build in a
        # process of its own so every rank's copy is whole.
        subprocess.run([sys.executable, "-m", "trainer_entrypoint", "build-tiny"], check=True,
                       stdout=subprocess.DEVNULL)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tiny-", dir=target.parent))
    try:
        _build(staging)
        (staging / "DONE").write_text("ok")
        try:
            os.rename(staging, target)
        except OSError:
            pass  # Another rank finished first; its copy is identical.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _in_process_group() -> bool:
    import torch.distributed

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _questions(count: int, seed: int) -> list[tuple[str, str, str]]:
    """(question, right answer, wrong answer) about small sums."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        wrong = a + b + rng.choice([-2, -1, 1, 2])
        rows.append((f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {wrong}."))
    return rows


def _rows(fmt: str, question: str, right: str, wrong: str, index: int) -> list[dict[str, Any]]:
    user = [{"role": "user", "content": question}]
    if fmt == "messages":
        return [{"messages": user + [{"role": "assistant", "content": right}]}]
    if fmt == "prompt_completion":
        return [{"prompt": user, "completion": [{"role": "assistant", "content": right}]}]
    if fmt == "text":
        return [{"text": f"Question: {question} Answer: {right}"}]
    if fmt == "preference":
        return [{"prompt": user, "chosen": [{"role": "assistant", "content": right}],
                 "rejected": [{"role": "assistant", "content": wrong}]}]
    if fmt == "unpaired_preference":
        good = index % 2 == 0
        return [{"prompt": user, "completion": [{"role": "assistant", "content": right if good else wrong}],
                 "label": good}]
    if fmt == "prompt_only":
        # `answer` for kubetune's answer_match, `solution` for TRL's accuracy_reward.
        return [{"prompt": user, "answer": right, "solution": right}]
    if fmt == "prompt_answer":
        return [{"prompt": question, "answer": right}]
    raise ValueError(fmt)


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def _write_data(root: Path) -> list[str]:
    from .code_samples import CODE_DATA

    texts = []
    for split, count in SPLITS.items():
        questions = _questions(count, seed=len(split))
        texts += [f"{q} {r} {w}" for q, r, w in questions]
        for fmt in FORMAT_NAMES:
            records = CODE_DATA.get(fmt) or [
                record for index, row in enumerate(questions) for record in _rows(fmt, *row, index)]
            _write_jsonl(root / "data" / fmt / f"{split}.jsonl", records)
    return texts


def _build(root: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = _write_data(root)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts + ["Question: Answer:"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|end|>", pad_token="<|pad|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=512)
    model_dir = root / "model"
    fast.save_pretrained(model_dir)
    dimensions = {key: value for key, value in TINY_MODEL.items() if key not in ("model_type", "architectures")}
    config = LlamaConfig(vocab_size=len(fast), pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id,
                         bos_token_id=None, **dimensions)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(model_dir)


def tiny_model_dir() -> Path:
    return tiny_dir() / "model"


def tiny_data_dir(method: str, fmt: str) -> Path:
    chosen = METHODS[method].builtin_format if fmt == "auto" else fmt
    if chosen not in FORMAT_NAMES:
        from .errors import PermanentError

        raise PermanentError(f"builtin://tiny has no {chosen!r} data; it has {', '.join(FORMAT_NAMES)}")
    return tiny_dir() / "data" / chosen
