r"""Per-sample AU-frequency weights (the reference's `compute_au_weights`) and rewards multiplied by them."""

import functools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..fea.labels import label_aus
from .registry import RewardFunc


AU_WEIGHT_COLUMN = "au_weight"
REFERENCE_WEIGHT_SCALE = 10.0


def au_frequency_weights(aus_column: Sequence[Any], mode: str = "reference", epsilon: float = 1e-6) -> list[float]:
    r"""Per-sample weights of one dataset from inverse AU frequencies (the reference's `compute_au_weights`).

    Each AU weighs `1 / (share + epsilon)` normalised to sum 1, where `share` is its frequency over the AU
    frequencies of the dataset; a sample weighs the sum over its AUs. `reference` then min-max scales the sample
    weights to [0, 10] within the dataset (so the lightest sample, and every sample of a dataset without AU labels,
    weighs 0, as in the released code); `balanced` divides by the mean weight of the AU-labelled samples and gives
    unlabelled samples 1.

    >>> au_frequency_weights([[1], [1], [1, 4]])
    [0.0, 0.0, 10.0]
    """
    samples = [label_aus(aus) or frozenset() for aus in aus_column]
    counts = Counter(au for sample in samples for au in sample)
    total = sum(counts.values())
    inverse = {au: 1.0 / (count / total + epsilon) for au, count in counts.items()} if total else {}
    norm = sum(inverse.values()) or 1.0
    raw = [sum(inverse[au] for au in sample) / norm for sample in samples]
    if mode == "reference":
        low, high = (min(raw), max(raw)) if raw else (0.0, 0.0)
        span = high - low if high > low else 1.0
        return [REFERENCE_WEIGHT_SCALE * (weight - low) / span for weight in raw]

    if mode == "balanced":
        labelled = [weight for weight, sample in zip(raw, samples) if sample]
        mean = sum(labelled) / len(labelled) if labelled else 1.0
        return [weight / mean if sample else 1.0 for weight, sample in zip(raw, samples)]

    raise ValueError(f"Unknown AU frequency weighting {mode!r}: use reference or balanced.")


def with_sample_weights(func: RewardFunc, column: str = AU_WEIGHT_COLUMN) -> RewardFunc:
    r"""A reward multiplied per sample by a weight column (as the reference weighs format, accuracy and AU rewards).

    >>> from llamafactory_fea.rewards import fea_format
    >>> with_sample_weights(fea_format)(["<think>x</think><answer>anger</answer>", "x"], au_weight=[2.0, 3.0])
    [2.0, 0.0]
    """

    @functools.wraps(func)
    def weighted(completions: list[Any], **kwargs) -> list[float | None]:
        rewards = func(completions, **kwargs)
        weights = kwargs.get(column) or [1.0] * len(rewards)
        return [
            None if reward is None else reward * (1.0 if weight is None else float(weight))
            for reward, weight in zip(rewards, weights)
        ]

    return weighted
