"""Reward functions for GRPO and RLOO: TRL's built-ins by name, kubetune's own, or a reward model."""

from __future__ import annotations

import functools
from typing import Any, Callable

from kubetune.contract.config import RewardConfig

from ..errors import PermanentError
from ..sources import model_reference


def _text(completion: Any) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def answer_match(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """1.0 where the completion contains the row's `answer` column, else 0.0."""
    return [1.0 if str(expected).strip() in _text(c) else 0.0 for c, expected in zip(completions, answer)]


KUBETUNE_REWARDS: dict[str, Callable[..., list[float]]] = {"answer_match": answer_match}


def reward_function(name: str) -> Callable[..., list[float]]:
    if name in KUBETUNE_REWARDS:
        return KUBETUNE_REWARDS[name]
    import trl.rewards

    function = getattr(trl.rewards, name, None)
    if not callable(function) or name.startswith("get_"):
        known = sorted(set(KUBETUNE_REWARDS) | {n for n in trl.rewards.__all__ if not n.startswith("get_")})
        raise PermanentError(f"spec.rewards: unknown reward function {name!r}; known: {', '.join(known)}")
    return function


def needing_its_packages(function: Callable[..., list[float]], field: str) -> Callable[..., list[float]]:
    """The reward function; a package it needs and the image lacks is a permanent error naming the
    field (TRL's functions import theirs when first called)."""
    @functools.wraps(function)
    def reward(*args: Any, **kwargs: Any) -> list[float]:
        try:
            return function(*args, **kwargs)
        except ImportError as error:
            raise PermanentError(f"{field}: {function.__name__} needs a package this image lacks: {error}") from None
    return reward


def reward_funcs(rewards: list[RewardConfig]) -> list[Any]:
    """reward_funcs for the TRL trainer: functions, or reward-model references."""
    functions: list[Any] = []
    for index, reward in enumerate(rewards):
        if reward.function:
            field = f"spec.rewards[{index}].function"
            functions.append(needing_its_packages(reward_function(reward.function), field))
        else:
            functions.append(model_reference(reward.location, f"spec.rewards[{index}].model"))
    return functions
