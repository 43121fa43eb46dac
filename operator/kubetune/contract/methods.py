"""The table of training methods: one row per TRL trainer kubetune runs.

Adding a method is adding a row here (then `make trl-keys crd` regenerates the derived files):
the API's method names and CEL rules, the TRL config key table, the trainer the pods build,
the data it reads and the evaluation it gets all come from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formats import FORMAT_NAMES

@dataclass(frozen=True)
class Method:
    name: str
    config_class: str  # in the trl package
    trainer_class: str
    reads: tuple[str, ...]  # data formats the trainer takes; others are converted when they can be
    builtin_format: str  # what it trains on from builtin://tiny
    description: str
    # Takes spec.rewards (TRL's reward_funcs and reward_weights).
    rewards: bool = False
    # Trains a reward model (a sequence classifier): evaluated on preference pairs; it does not generate.
    scores: bool = False
    # Generates completions from the policy while it trains (TRL's use_vllm keys): on GPUs it
    # generates with vLLM, colocated in the training ranks, unless the job says otherwise.
    generates_online: bool = False

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "SFTConfig", "SFTTrainer", ("messages", "prompt_completion", "text"), "messages",
           "supervised fine-tuning"),
    Method("dpo", "DPOConfig", "DPOTrainer", ("preference",), "preference", "direct preference optimisation"),
    Method("grpo", "GRPOConfig", "GRPOTrainer", ("prompt_only",), "prompt_only",
           "group relative policy optimisation", rewards=True, generates_online=True),
    Method("rloo", "RLOOConfig", "RLOOTrainer", ("prompt_only",), "prompt_only", "REINFORCE leave-one-out",
           rewards=True, generates_online=True),
    Method("reward", "RewardConfig", "RewardTrainer", ("preference",), "preference", "reward modelling",
           scores=True),
    Method("kto", "KTOConfig", "KTOTrainer", ("unpaired_preference",), "unpaired_preference",
           "Kahneman-Tversky optimisation"),
)}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
REWARD_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS.values() if m.rewards)
SCORING_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS.values() if m.scores)

assert all(set(m.reads) | {m.builtin_format} <= set(FORMAT_NAMES) for m in METHODS.values())
