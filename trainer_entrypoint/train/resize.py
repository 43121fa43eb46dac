"""Resuming at another world size than the checkpoint was saved at (an elastic job resized).

- The global batch: an elastic job that keeps it gets gradient_accumulation_steps recomputed
  for the current world size.
- The plan: the step count (and with it the learning-rate schedule) stays the one the
  checkpoint was saved with, even when it was derived from epochs.
- ZeRO: each data-parallel rank saved its own optimizer partition, so a checkpoint saved at
  another data-parallel size is converted once to DeepSpeed's universal checkpoint (rank 0,
  the others wait) and loaded as one. DDP checkpoints hold whole states; FSDP's sharded
  state is torch distributed checkpoint, which reshards on load.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from kubetune.contract.config import TrainerConfig
from kubetune.contract.output import CHECKPOINT_STATE_FILE

from ..errors import PermanentError

UNIVERSAL_TAG_FILE = "latest_universal"
ZERO_OPTIMIZER_FILE = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")


@dataclass
class ResumePlan:
    training: dict[str, Any] = field(default_factory=dict)  # TRL keys set for this world size
    universal: bool = False  # the ZeRO checkpoint is loaded as a universal checkpoint
    saved_world_size: Optional[int] = None
    notes: list[str] = field(default_factory=list)  # printed once, by rank 0


def saved_world_size(checkpoint: Path) -> int:
    """How many processes saved a checkpoint: ZeRO optimizer partitions, else RNG states."""
    tag_file = checkpoint / "latest"
    if tag_file.exists():
        ranks = {match.group(1) for file in (checkpoint / tag_file.read_text().strip()).iterdir()
                 if (match := ZERO_OPTIMIZER_FILE.search(file.name))}
        if ranks:
            return len(ranks)
    return len(list(checkpoint.glob("rng_state_*.pth"))) or 1


def plan_resume(config: TrainerConfig, checkpoint: Optional[Path], world_size: int,
                per_device_default: int) -> ResumePlan:
    plan = ResumePlan()
    kept = config.elastic.global_batch_size if config.elastic else None
    if kept:
        per_device = config.training.get("per_device_train_batch_size", per_device_default)
        if kept % (per_device * world_size):
            raise PermanentError(f"spec.training.gradient_accumulation_steps: the global batch {kept} does not split "
                                 f"into whole accumulation steps of {per_device} samples on {world_size} processes")
        plan.training["gradient_accumulation_steps"] = kept // (per_device * world_size)
        plan.notes.append(f"{world_size} process(es): gradient_accumulation_steps "
                          f"{plan.training['gradient_accumulation_steps']} keeps the global batch at {kept}")
    if checkpoint is None:
        return plan
    plan.saved_world_size = saved_world_size(checkpoint)
    if plan.saved_world_size == world_size:
        return plan
    state = json.loads((checkpoint / CHECKPOINT_STATE_FILE).read_text())
    plan.training["max_steps"] = state["max_steps"]
    plan.universal = bool(config.training.get("deepspeed"))
    plan.notes.append(f"{checkpoint.name} was saved by {plan.saved_world_size} process(es), resuming on "
                      f"{world_size}: the plan of {state['max_steps']} steps is kept"
                      + ("; its ZeRO partitions are loaded as a universal checkpoint" if plan.universal else ""))
    if plan.universal:
        plan.training["deepspeed"] = universal_deepspeed_config(config.training["deepspeed"])
    return plan


def universal_deepspeed_config(deepspeed: Any) -> dict[str, Any]:
    """The job's DeepSpeed config, loading the checkpoint as a universal one."""
    settings = dict(deepspeed) if isinstance(deepspeed, dict) else json.loads(Path(deepspeed).read_text())
    return {**settings, "checkpoint": {**settings.get("checkpoint", {}), "load_universal": True}}


def convert_to_universal(checkpoint: Path) -> Optional[Path]:
    """Write the universal form of the checkpoint's ZeRO state beside it, once; None when it
    already exists (a previous attempt finished it: ds_to_universal writes its tag file last)."""
    if (checkpoint / UNIVERSAL_TAG_FILE).exists():
        return None
    tag = (checkpoint / "latest").read_text().strip()
    target = checkpoint / f"{tag}_universal"
    shutil.rmtree(target, ignore_errors=True)  # a conversion cut short
    command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
               str(checkpoint / tag), "--output_folder", str(target), "--inject_missing_state",
               "--num_extract_workers", "1", "--num_merge_workers", "1"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"converting {checkpoint.name} to a universal checkpoint failed: {done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    return target
