"""Rank 0's progress, served as JSON on /progress and read by the operator and `kubetune run`."""

from __future__ import annotations

import re
import urllib.request
from typing import Any, Literal, Optional

from pydantic import ConfigDict, Field

from .document import D, Document
from .plan import StrategyChoice

PROGRESS_PATH = "/progress"


def read_served(document: type[D], host: str, port: int, timeout: float) -> Optional[D]:
    """The document a pod serves on PROGRESS_PATH (rank 0's Progress, the initializer's report);
    None while it cannot be reached or read."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{PROGRESS_PATH}", timeout=timeout) as reply:
            return document.decode(reply.read())
    except (OSError, ValueError):
        return None


class TrainingNumbers(Document):
    """What training reports and status.progress mirrors."""

    step: int = Field(0, description="Optimizer steps completed.")
    total_steps: Optional[int] = Field(None, description="Optimizer steps the run will take.")
    epoch: Optional[float] = Field(None, description="Fractional epoch reached.")
    loss: Optional[float] = Field(
        None, description="Training loss at the last logging step; the run's mean when it ended before one.")
    learning_rate: Optional[float] = Field(None, description="Learning rate at the last logging step.")
    tokens_per_second: Optional[float] = Field(
        None, description="Input tokens per second, all ranks, where the trainer counts tokens.")
    samples_per_second: Optional[float] = Field(
        None, description="Training samples per second, all ranks, where the trainer counts no tokens "
                          "(then tokensPerSecond is absent).")
    eta_seconds: Optional[float] = Field(None, description="Estimated seconds until training ends.")
    mfu: Optional[float] = Field(
        None, description="Model FLOPs utilisation, 0-1: the model's training FLOPs per second (6 per weight per "
                          "token plus attention) over the GPUs' dense bf16 peak; absent on CPUs and unknown GPUs.")
    # What an RL run (GRPO, RLOO) logs about its completions, at the last logging step.
    reward: Optional[float] = Field(None, description="RL: mean total reward of the completions (TRL's reward).")
    reward_std: Optional[float] = Field(None, description="RL: standard deviation of the total reward.")
    rewards: Optional[dict[str, float]] = Field(
        None, description="RL: mean reward of each reward function, by its name (TRL's rewards/<name>/mean).")
    completion_mean_length: Optional[float] = Field(
        None, description="RL: mean length of the completions, in tokens (TRL's completions/mean_length).")
    kl: Optional[float] = Field(None, description="RL: KL divergence from the reference model, when beta is not 0.")
    entropy: Optional[float] = Field(None, description="RL: mean entropy of the policy over completion tokens.")
    generation_tokens_per_second: Optional[float] = Field(
        None, description="RL: completion tokens generated per second of generation (weight syncs to vLLM left out), "
                          "all ranks.")

    def throughput(self) -> Optional[tuple[float, str]]:
        """The training rate with its unit (tokens/s before samples/s); None before one is measured."""
        for field, unit in THROUGHPUT_UNITS.items():
            value = getattr(self, field)
            if value is not None:
                return value, unit
        return None


# The rate fields, by the unit a person reads; a trainer reports the first it can count.
THROUGHPUT_UNITS = {"tokens_per_second": "tok/s", "samples_per_second": "samples/s"}

# The generation rate the ranks log among TRL's metrics (TRL's own timings go to trackers only).
GENERATION_RATE_LOG_KEY = "kubetune/generation_tokens_per_second"
# TRL's RL log keys, by the progress field each fills; and the key of each reward function's mean.
RL_LOG_KEYS = {"reward": "reward", "reward_std": "reward_std", "completion_mean_length": "completions/mean_length",
               "kl": "kl", "entropy": "entropy", "generation_tokens_per_second": GENERATION_RATE_LOG_KEY}
REWARD_FUNCTION_LOG_KEY = re.compile(r"^rewards/(?P<name>.+)/mean$")


def rl_numbers(logs: dict[str, Any]) -> dict[str, Any]:
    """The RL fields a trainer's log line fills (none for a method that logs no rewards)."""
    numbers: dict[str, Any] = {field: logs[key] for field, key in RL_LOG_KEYS.items() if logs.get(key) is not None}
    rewards = {match["name"]: value for key, value in logs.items() if (match := REWARD_FUNCTION_LOG_KEY.match(key))}
    return {**numbers, "rewards": rewards} if rewards else numbers


# What rank 0 is doing. A checkpoint save or an evaluation during training may take a while
# without a step: the stall watchdog gives them more time.
TrainingPhase = Literal["starting", "training", "checkpointing", "evaluating", "saving", "succeeded"]
BUSY_PHASES = ("checkpointing", "evaluating", "saving")


class Progress(TrainingNumbers):
    # A newer trainer image may report more than this operator reads.
    model_config = ConfigDict(extra="ignore")

    phase: TrainingPhase = "starting"
    progress: Optional[float] = Field(None, description="step / totalSteps.")
    checkpoint: Optional[str] = Field(None, description="The newest checkpoint saved, e.g. checkpoint-50.")
    distributed: Optional[StrategyChoice] = Field(None, description="The strategy training runs with, and why.")
