"""Generation tokens/s of a trainer that generates while it trains (GRPO, RLOO).

TRL 1.16 times its generation step only for trackers (trl/extras/profiling.py: W&B, MLflow,
Trackio), never in its logs. So the step itself (`_generate_single_turn`, in both trainers) is
timed here, less the weight syncs to vLLM inside it, and each rank logs its completion tokens
per second times the world size through TRL's own metrics (`_log_metric`, the hook TRL gives
reward functions): TRL averages them over the ranks and the logging step, which makes the rate
of all ranks generating side by side (each its own prompts in colocate, or its share of a
server's output).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from kubetune.contract.progress import GENERATION_RATE_LOG_KEY


def completion_tokens(result: Any) -> int:
    """Tokens in a generation step's completions: GRPO returns (ids, logprobs), RLOO the ids."""
    completions = result[0] if isinstance(result, tuple) else result
    return sum(len(ids) for ids in completions)


class GenerationMeter:
    """Wraps one trainer's generation step (and its vLLM weight sync) to log the rate."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.syncing = 0.0  # seconds spent in weight syncs during the current step

    def install(self) -> bool:
        """False where the trainer has no generation step TRL 1.16's way (nothing is logged then)."""
        trainer = self.trainer
        if not (callable(getattr(trainer, "_generate_single_turn", None)) and hasattr(trainer, "_log_metric")):
            return False
        vllm = getattr(trainer, "vllm_generation", None) if getattr(trainer, "use_vllm", False) else None
        if vllm is not None:
            vllm.sync_weights = self._timed_sync(vllm.sync_weights)
        trainer._generate_single_turn = self._metered(trainer._generate_single_turn)
        return True

    def _timed_sync(self, sync: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return sync(*args, **kwargs)
            finally:
                self.syncing += time.perf_counter() - started
        return timed

    def _metered(self, generate: Callable[..., Any]) -> Callable[..., Any]:
        def metered(*args: Any, **kwargs: Any) -> Any:
            self.syncing = 0.0
            started = time.perf_counter()
            result = generate(*args, **kwargs)
            seconds = time.perf_counter() - started - self.syncing
            if seconds > 0:
                world = self.trainer.accelerator.num_processes
                self.trainer._log_metric(GENERATION_RATE_LOG_KEY, completion_tokens(result) / seconds * world)
            return result
        return metered
