"""Generation engines for evaluation: vLLM's offline engine, or transformers.

Both take token ids (tokenised once, by the evaluator) and return token ids, so the two engines
see identical inputs and their outputs are compared token for token. A model with a LoRA
adapter is loaded once; `adapter=False` evaluates the base weights of the same engine.

Loss and perplexity (teacher-forced log-probabilities) always come from transformers, the
numbers the trainer's own eval_loss uses: vLLM's prompt_logprobs fail or mis-map with LoRA
adapters (vllm-project/vllm#16668, #29955).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Optional, Protocol

# vLLM's supported LoRA ranks (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = [1, 8, 16, 32, 64, 128, 256, 320, 512]
TRANSFORMERS_BATCH = 8


@dataclass(frozen=True)
class Sampling:
    """spec.evaluation.sampling (contract SamplingConfig, where the defaults are) and the stop strings."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop: list[str]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Weights:
    """What an engine loads: full weights, optionally with a LoRA adapter on top."""

    model: str
    adapter: Optional[str] = None
    adapter_rank: int = 0
    dtype: str = "auto"
    trust_remote_code: bool = False


class Engine(Protocol):
    context_length: int

    def generate(self, prompts: list[list[int]], sampling: Sampling, adapter: bool) -> list[list[list[int]]]:
        """For each prompt, sampling.n completions as token ids (ending at EOS or the budget)."""

    def close(self) -> None: ...


def budget(prompt: list[int], sampling: Sampling, context_length: int) -> int:
    return max(1, min(sampling.max_tokens, context_length - len(prompt)))


class VllmEngine:
    def __init__(self, weights: Weights):
        from vllm import LLM

        cpu = not _cuda()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default sizing fails on small hosts
        options = {"enforce_eager": True} if cpu else {"tensor_parallel_size": max(1, _gpu_count())}
        if weights.adapter:
            rank = next(r for r in VLLM_LORA_RANKS if r >= weights.adapter_rank)
            options.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
        self.llm = LLM(model=weights.model, dtype=weights.dtype, trust_remote_code=weights.trust_remote_code,
                       seed=0, **options)
        self.weights = weights
        self.context_length = self.llm.llm_engine.model_config.max_model_len

    def _lora(self, adapter: bool):
        from vllm.lora.request import LoRARequest

        return LoRARequest("tuned", 1, self.weights.adapter) if adapter and self.weights.adapter else None

    def generate(self, prompts, sampling, adapter):
        from vllm import SamplingParams

        params = [
            SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=budget(prompt, sampling, self.context_length), seed=sampling.seed,
                           stop=sampling.stop or None)
            for prompt in prompts
        ]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                    lora_request=self._lora(adapter), use_tqdm=False)
        return [[list(sample.token_ids) for sample in output.outputs] for output in outputs]

    def close(self):
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()


class TransformersEngine:
    def __init__(self, weights: Weights, tokenizer):
        import torch
        from transformers import AutoModelForCausalLM

        self.device = device()
        dtype = "auto" if weights.dtype == "auto" else getattr(torch, weights.dtype)
        model = AutoModelForCausalLM.from_pretrained(weights.model, dtype=dtype,
                                                     trust_remote_code=weights.trust_remote_code)
        if weights.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, weights.adapter)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.has_adapter = bool(weights.adapter)
        self.context_length = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = (set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}) - {None}

    def _weights(self, adapter: bool):
        from contextlib import nullcontext

        return self.model.disable_adapter() if self.has_adapter and not adapter else nullcontext()

    def generate(self, prompts, sampling, adapter):
        import torch

        torch.manual_seed(sampling.seed)
        results: list[list[list[int]]] = []
        for start in range(0, len(prompts), TRANSFORMERS_BATCH):
            results += self._generate_batch(prompts[start:start + TRANSFORMERS_BATCH], sampling, adapter)
        return results

    def _generate_batch(self, prompts, sampling, adapter):
        import torch

        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        new_tokens = min(budget(p, sampling, self.context_length) for p in prompts)
        options = {"do_sample": False} if sampling.greedy else {
            "do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        with torch.no_grad(), self._weights(adapter):
            output = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, num_return_sequences=sampling.n,
                pad_token_id=pad, stop_strings=sampling.stop or None, tokenizer=self.tokenizer, **options)
        completions = [self._until_stop(row[width:].tolist()) for row in output]
        return [completions[i * sampling.n:(i + 1) * sampling.n] for i in range(len(prompts))]

    def _until_stop(self, tokens: list[int]) -> list[int]:
        for index, token in enumerate(tokens):
            if token in self.stop_ids:
                return tokens[:index + 1]
        return tokens

    def completion_logprobs(self, pairs: list[tuple[list[int], list[int]]], adapter: bool) -> list[float]:
        """For each (prompt, completion), the summed log-probability of the completion tokens."""
        import torch

        sums = []
        with torch.no_grad(), self._weights(adapter):
            for prompt, completion in pairs:
                ids = torch.tensor([prompt + completion], device=self.device)
                logprobs = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
                targets = ids[0, len(prompt):]
                picked = logprobs[len(prompt) - 1:-1].gather(1, targets.unsqueeze(1))
                sums.append(float(picked.sum()))
        return sums

    def close(self):
        del self.model
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()


def open_engine(name: str, weights: Weights, tokenizer) -> Engine:
    if name == "vllm":
        return VllmEngine(weights)
    return TransformersEngine(weights, tokenizer)


def device() -> str:
    return "cuda" if _cuda() else "cpu"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()
