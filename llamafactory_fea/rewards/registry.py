r"""The reward registry: names to reward functions (TRL's `reward(completions, **columns)`), with documented ranges."""

from collections.abc import Callable, Sequence
from typing import Any

from ..registry import Registry, import_object


RewardFunc = Callable[..., list[float | None]]
REWARDS: Registry[RewardFunc] = Registry("reward")
REWARD_RANGES: dict[str, tuple[float, float]] = {}


def register_reward(name: str, low: float, high: float) -> Callable[[RewardFunc], RewardFunc]:
    r"""Register a reward function under a name with its documented range; duplicates are refused."""

    def decorator(func: RewardFunc) -> RewardFunc:
        REWARDS.register(name, func)
        REWARD_RANGES[name] = (low, high)
        return func

    return decorator


def get_reward(name: str) -> RewardFunc:
    r"""Look a reward up by registered name or by dotted path (`package.module.function`).

    >>> get_reward("fea_format").__name__, get_reward("llamafactory_fea.rewards.fea_au_f1").__name__
    ('fea_format', 'fea_au_f1')
    """
    if name in REWARDS:
        return REWARDS[name]

    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise ValueError(f"Unknown reward {name!r}: use one of {', '.join(REWARDS)} or a dotted path module.function.")

    func = import_object(name, "reward")

    if not callable(func):
        raise ValueError(f"Reward {name!r} is not a function.")

    return func


def label_column(completions: Sequence[Any], column: Sequence[Any] | None) -> Sequence[Any]:
    r"""A label column as TRL hands it to a reward, or a column of None when the dataset does not carry it."""
    return column if column is not None else [None] * len(completions)
