r"""Reward registry and the FEA reward functions (TRL signature: `reward(completions, **columns)`).

The `fea_format`, `fea_emotion` and `fea_au_f1` rewards follow the Facial-R1 reference exactly, so runs are
comparable with the paper; the `fea_strict_*` rewards and the extra ones close the holes those leave open
(repeated tags, text after `</answer>`, bare AU lists, AUs claimed but not labelled).
"""

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from .fea.aus import AU_CATALOGUE, supports_emotion
from .fea.parsing import ANSWER_PATTERN, FORMAT_PATTERN, completion_text, parse_completion


RewardFunc = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFunc] = {}
REWARD_RANGES: dict[str, tuple[float, float]] = {}


def register_reward(name: str, low: float, high: float) -> Callable[[RewardFunc], RewardFunc]:
    r"""Register a reward function under a name with its documented range; duplicates are refused."""

    def decorator(func: RewardFunc) -> RewardFunc:
        if name in REWARDS:
            raise ValueError(f"Reward {name} already exists.")

        REWARDS[name] = func
        REWARD_RANGES[name] = (low, high)
        return func

    return decorator


def get_reward(name: str) -> RewardFunc:
    r"""Look a reward up by registered name or by dotted path (`package.module.function`)."""
    if name in REWARDS:
        return REWARDS[name]

    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise ValueError(f"Unknown reward {name!r}: use one of {', '.join(REWARDS)} or a dotted path module.function.")

    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Cannot import reward {name!r}: {err}.") from err


def _au_set(aus: Any) -> frozenset[int] | None:
    r"""Return a label AU column value (list of ints or "AU4" strings) as a set; None when absent."""
    if aus is None:
        return None

    return frozenset(int(str(au).strip().upper().removeprefix("AU")) for au in aus)


def _columns(completions: Sequence[Any], column: Sequence[Any] | None) -> Sequence[Any]:
    r"""Return a label column, or a column of None when the dataset does not carry it."""
    return column if column is not None else [None] * len(completions)


def au_f1(predicted: frozenset[int], labelled: frozenset[int]) -> float:
    r"""Set F1 between predicted and labelled AUs."""
    true_positives = len(predicted & labelled)
    if true_positives == 0:
        return 0.0

    return 2 * true_positives / (len(predicted) + len(labelled))


@register_reward("fea_format", 0.0, 1.0)
def fea_format(completions: list[Any], **kwargs) -> list[float | None]:
    r"""Reference format reward: 1 if the completion fully matches `<think>.*?</think>\s*<answer>.*?</answer>`.

    >>> fea_format(["<think>(AU12)</think><answer>happiness</answer>", "happiness"])
    [1.0, 0.0]
    """
    return [1.0 if FORMAT_PATTERN.fullmatch(completion_text(c)) else 0.0 for c in completions]


@register_reward("fea_emotion", 0.0, 1.0)
def fea_emotion(completions: list[Any], emotion: list[str | None] | None = None, **kwargs) -> list[float | None]:
    r"""Reference accuracy reward: 1 if the last `<answer>` equals the label (case-insensitive), None if unlabelled.

    >>> fea_emotion(["<think>x</think><answer>Sadness</answer>"], emotion=["sadness"])
    [1.0]
    """
    rewards: list[float | None] = []
    for completion, label in zip(completions, _columns(completions, emotion)):
        if not label:
            rewards.append(None)
            continue

        answers = ANSWER_PATTERN.findall(completion_text(completion))
        rewards.append(1.0 if answers and answers[-1].strip().lower() == label.strip().lower() else 0.0)

    return rewards


@register_reward("fea_au_f1", -1.0, 1.0)
def fea_au_f1(completions: list[Any], aus: list[list[int] | None] | None = None, **kwargs) -> list[float | None]:
    r"""Reference AU reward: 2*F1-1 of the AUs named in `<think>`; -1 if none named; 0 if the sample has no AUs.

    >>> fea_au_f1(["<think>(AU4) and (AU15)</think><answer>sadness</answer>"], aus=[[4]])
    [0.33333333333333326]
    """
    rewards: list[float | None] = []
    for completion, labels in zip(completions, _columns(completions, aus)):
        labelled = _au_set(labels)
        if not labelled:
            rewards.append(0.0)
            continue

        predicted = parse_completion(completion).aus
        rewards.append(2 * au_f1(predicted, labelled) - 1 if predicted else -1.0)

    return rewards


@register_reward("fea_strict_format", 0.0, 1.0)
def fea_strict_format(completions: list[Any], **kwargs) -> list[float | None]:
    r"""Strict format: one think block then one answer block, nothing around them, a single emotion word, real reasoning.

    >>> fea_strict_format(
    ...     [
    ...         "<think>Lips pulled up (AU12).</think><answer>happiness</answer>",
    ...         "<think>AU12</think><answer>happiness</answer>",
    ...     ]
    ... )
    [1.0, 0.0]
    """
    return [1.0 if parse_completion(c).ok else 0.0 for c in completions]


@register_reward("fea_strict_emotion", 0.0, 1.0)
def fea_strict_emotion(
    completions: list[Any], emotion: list[str | None] | None = None, **kwargs
) -> list[float | None]:
    r"""Strict accuracy: 1 only for a well-structured completion whose single answer word is the label.

    >>> fea_strict_emotion(["<think>x</think><answer>anger</answer><answer>sadness</answer>"], emotion=["sadness"])
    [0.0]
    """
    rewards: list[float | None] = []
    for completion, label in zip(completions, _columns(completions, emotion)):
        if not label:
            rewards.append(None)
            continue

        parsed = parse_completion(completion)
        rewards.append(1.0 if parsed.structured and parsed.emotion == label.strip().lower() else 0.0)

    return rewards


@register_reward("fea_strict_au_f1", -1.0, 1.0)
def fea_strict_au_f1(
    completions: list[Any], aus: list[list[int] | None] | None = None, **kwargs
) -> list[float | None]:
    r"""Strict AU reward: 2*F1-1 as the reference, but -1 unless the completion is fully valid (no bare AU list).

    >>> fea_strict_au_f1(["<think>AU4 AU15</think><answer>sadness</answer>"], aus=[[4, 15]])
    [-1.0]
    """
    rewards: list[float | None] = []
    for completion, labels in zip(completions, _columns(completions, aus)):
        labelled = _au_set(labels)
        if not labelled:
            rewards.append(None)
            continue

        parsed = parse_completion(completion)
        rewards.append(2 * au_f1(parsed.aus, labelled) - 1 if parsed.ok else -1.0)

    return rewards


@register_reward("fea_consistency", 0.0, 1.0)
def fea_consistency(completions: list[Any], **kwargs) -> list[float | None]:
    r"""Reasoning supports the answer: a valid completion whose AUs include one typical of the chosen emotion.

    >>> fea_consistency(
    ...     ["<think>Cheeks raised (AU6), lip corners pulled up (AU12).</think><answer>happiness</answer>"]
    ... )
    [1.0]
    """
    rewards: list[float | None] = []
    for completion in completions:
        parsed = parse_completion(completion)
        rewards.append(1.0 if parsed.ok and supports_emotion(parsed.aus, parsed.emotion) else 0.0)

    return rewards


@register_reward("fea_au_hallucination", -1.0, 0.0)
def fea_au_hallucination(
    completions: list[Any], aus: list[list[int] | None] | None = None, **kwargs
) -> list[float | None]:
    r"""Penalty for AUs claimed but not labelled: minus their share of the AUs named (outside the catalogue counts).

    >>> fea_au_hallucination(["<think>(AU4) (AU12)</think><answer>sadness</answer>"], aus=[[4]])
    [-0.5]
    """
    rewards: list[float | None] = []
    for completion, labels in zip(completions, _columns(completions, aus)):
        labelled = _au_set(labels)
        if labelled is None:
            rewards.append(None)
            continue

        predicted = parse_completion(completion).aus
        claimed = {au for au in predicted if au not in labelled or au not in AU_CATALOGUE}
        rewards.append(-len(claimed) / len(predicted) if predicted else 0.0)

    return rewards
