r"""The reward registry: names to reward functions (TRL's `reward(completions, **columns)`), with documented ranges."""

import difflib
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
    r"""Look a reward up by registered name or by dotted path (`package.module.function`); ValueError naming the fix.

    >>> get_reward("fea_format").__name__, get_reward("llamafactory_fea.rewards.fea_au_f1").__name__
    ('fea_format', 'fea_au_f1')
    """
    if name in REWARDS:
        return REWARDS[name]

    if "." not in name:
        close = difflib.get_close_matches(name, REWARDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(
            f"Unknown reward {name!r}{hint}: use one of {', '.join(REWARDS)} or a dotted path module.function."
        )

    func = import_object(name, "reward")
    if not callable(func):
        raise ValueError(f"Reward {name!r} is not a function but {type(func).__name__}: name a reward function.")

    if not isinstance(getattr(func, "__name__", None), str):
        raise ValueError(f"Reward {name!r} has no `__name__` (TRL logs each reward under it): name a def function.")

    return func


def label_column(completions: Sequence[Any], column: Sequence[Any] | None) -> Sequence[Any]:
    r"""A label column as TRL hands it to a reward, or a column of None when the dataset does not carry it.

    One label per completion: a column of another length is refused rather than truncated by `zip`.

    >>> label_column(["a", "b"], ["sadness"])
    Traceback (most recent call last):
    ...
    ValueError: A label column has 1 values for 2 completions: a reward reads one label per completion.
    """
    if column is None:
        return [None] * len(completions)

    if len(column) != len(completions):
        raise ValueError(
            f"A label column has {len(column)} values for {len(completions)} completions: a reward reads one label "
            "per completion."
        )

    return column
