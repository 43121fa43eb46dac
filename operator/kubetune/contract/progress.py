"""Rank 0's progress, served as JSON on /progress and read by the operator and `kubetune run`."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field

from .document import Document
from .plan import StrategyChoice

PROGRESS_PATH = "/progress"


class TrainingNumbers(Document):
    """What training reports and status.progress mirrors."""

    step: int = Field(0, description="Optimizer steps completed.")
    total_steps: Optional[int] = Field(None, description="Optimizer steps the run will take.")
    epoch: Optional[float] = Field(None, description="Fractional epoch reached.")
    loss: Optional[float] = Field(None, description="Training loss at the last logging step.")
    learning_rate: Optional[float] = Field(None, description="Learning rate at the last logging step.")
    tokens_per_second: Optional[float] = Field(None, description="Input tokens per second, all ranks.")
    eta_seconds: Optional[float] = Field(None, description="Estimated seconds until training ends.")
    mfu: Optional[float] = Field(
        None, description="Model FLOPs utilisation, 0-1: the model's training FLOPs per second (6 per weight per "
                          "token plus attention) over the GPUs' dense bf16 peak; absent on CPUs and unknown GPUs.")


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
