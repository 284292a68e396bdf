r"""Per-sample AU-frequency weights (the reference's `compute_au_weights`) and rewards multiplied by them.

The grpo key `au_frequency_weighting` uses them in one of three ways (`AU_WEIGHTINGS`): `reward_minmax` multiplies
every reward of a sample by its weight scaled to [0, 10] (the earlier reference), `reward_mean_one` by its weight
scaled to mean 1, and `loss_batch_sum` leaves the rewards unweighted and multiplies each micro-batch's loss by the
sum of its samples' [0, 10] weights (the later reference). The old names `reference` and `balanced` still work.
"""

import functools
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..fea.labels import label_aus
from .registry import RewardFunc


AU_WEIGHT_COLUMN = "au_weight"
REFERENCE_WEIGHT_SCALE = 10.0
AU_WEIGHTINGS: dict[str, str] = {
    "none": "no weights",
    "reward_minmax": "each reward x the sample's weight, min-max scaled to [0, 10] per dataset (earlier reference)",
    "reward_mean_one": "each reward x the sample's weight, scaled to mean 1 (unlabelled samples 1)",
    "loss_batch_sum": "rewards unweighted; the loss x the micro-batch's sum of [0, 10] weights (later reference)",
}
RENAMED_WEIGHTINGS: dict[str, str] = {"reference": "reward_minmax", "balanced": "reward_mean_one"}
WEIGHT_SCALES: dict[str, str] = {"reward_minmax": "minmax", "loss_batch_sum": "minmax", "reward_mean_one": "mean_one"}


def resolve_weighting(name: str) -> str:
    r"""The current name of an AU weighting; an old name gives a FutureWarning, an unknown one a ValueError.

    >>> resolve_weighting("loss_batch_sum")
    'loss_batch_sum'
    """
    if name in RENAMED_WEIGHTINGS:
        new = RENAMED_WEIGHTINGS[name]
        warnings.warn(
            f"au_frequency_weighting: {name} is now called {new}; the old name will be removed.", FutureWarning, 2
        )
        return new

    if name not in AU_WEIGHTINGS:
        raise ValueError(f"Unknown AU frequency weighting {name!r}: use one of {', '.join(AU_WEIGHTINGS)}.")

    return name


def au_frequency_weights(aus_column: Sequence[Any], mode: str = "minmax", epsilon: float = 1e-6) -> list[float]:
    r"""Per-sample weights of one dataset from inverse AU frequencies (the reference's `compute_au_weights`).

    Each AU weighs `1 / (share + epsilon)` normalised to sum 1, where `share` is its frequency over the AU
    frequencies of the dataset; a sample weighs the sum over its AUs. `minmax` then min-max scales the sample
    weights to [0, 10] within the dataset (so the lightest sample, and every sample of a dataset without AU labels,
    weighs 0, as in the released code); `mean_one` divides by the mean weight of the AU-labelled samples and gives
    unlabelled samples 1. `mode` may also be an `au_frequency_weighting` name (old names included).

    >>> au_frequency_weights([[1], [1], [1, 4]])
    [0.0, 0.0, 10.0]
    """
    if mode not in ("minmax", "mean_one"):
        mode = WEIGHT_SCALES[resolve_weighting(mode)] if mode != "none" else mode

    samples = [label_aus(aus) or frozenset() for aus in aus_column]
    counts = Counter(au for sample in samples for au in sample)
    total = sum(counts.values())
    inverse = {au: 1.0 / (count / total + epsilon) for au, count in counts.items()} if total else {}
    norm = sum(inverse.values()) or 1.0
    raw = [sum(inverse[au] for au in sample) / norm for sample in samples]
    if mode == "minmax":
        low, high = (min(raw), max(raw)) if raw else (0.0, 0.0)
        span = high - low if high > low else 1.0
        return [REFERENCE_WEIGHT_SCALE * (weight - low) / span for weight in raw]

    if mode == "mean_one":
        labelled = [weight for weight, sample in zip(raw, samples) if sample]
        mean = sum(labelled) / len(labelled) if labelled else 1.0
        return [weight / mean if sample else 1.0 for weight, sample in zip(raw, samples)]

    raise ValueError(f"Unknown AU frequency weighting {mode!r}: use one of {', '.join(WEIGHT_SCALES)}.")


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
