r"""The strict rewards: pay nothing for the holes the reference rewards leave open.

Repeated or nested tags, text outside the tags, an empty or hedged answer ("A or B"), a bare AU list instead of
reasoning (`fea.parsing`), reasoning that does not support its answer, and AUs claimed but not labelled.
"""

from collections.abc import Callable
from typing import Any

from ..fea.aus import AU_CATALOGUE, supports_emotion
from ..fea.labels import label_aus, label_emotion
from ..fea.parsing import ParsedCompletion, parse_completion
from .reference import au_f1
from .registry import label_column, register_reward


def _score_labelled(
    completions: list[Any],
    column: list[Any] | None,
    read_label: Callable[[Any], Any],
    score: Callable[[ParsedCompletion, Any], float],
) -> list[float | None]:
    r"""`score(parsed completion, label)` for each sample whose label `read_label` finds; None for the others."""
    rewards: list[float | None] = []
    for completion, value in zip(completions, label_column(completions, column)):
        label = read_label(value)
        rewards.append(None if label is None else score(parse_completion(completion), label))

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
    r"""Strict accuracy: 1 only for a fully valid completion (see `fea_strict_format`) whose answer word is the label.

    None for a sample without an emotion label.

    >>> fea_strict_emotion(
    ...     ["<think>x</think><answer>anger</answer><answer>sadness</answer>"] * 2, emotion=["sadness", None]
    ... )
    [0.0, None]
    """
    return _score_labelled(
        completions,
        emotion,
        label_emotion,
        lambda parsed, label: 1.0 if parsed.ok and parsed.emotion == label else 0.0,
    )


@register_reward("fea_strict_au_f1", -1.0, 1.0)
def fea_strict_au_f1(
    completions: list[Any], aus: list[list[int] | None] | None = None, **kwargs
) -> list[float | None]:
    r"""Strict AU reward: 2*F1-1 as the reference, but -1 unless the completion is fully valid (no bare AU list).

    None for a sample without AU labels, and for one labelled with no active AU (an F1 over no AU says nothing).

    >>> fea_strict_au_f1(["<think>AU4 AU15</think><answer>sadness</answer>"] * 3, aus=[[4, 15], [], None])
    [-1.0, None, None]
    """
    return _score_labelled(
        completions,
        aus,
        lambda value: label_aus(value) or None,
        lambda parsed, labelled: 2 * au_f1(parsed.aus, labelled) - 1 if parsed.ok else -1.0,
    )


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


def _unlabelled_share(parsed: ParsedCompletion, labelled: frozenset[int]) -> float:
    r"""Minus the share of the named AUs that are not labelled (or not in the catalogue); 0 when none is named."""
    claimed = {au for au in parsed.aus if au not in labelled or au not in AU_CATALOGUE}
    return -len(claimed) / len(parsed.aus) if parsed.aus else 0.0


@register_reward("fea_au_hallucination", -1.0, 0.0)
def fea_au_hallucination(
    completions: list[Any], aus: list[list[int] | None] | None = None, **kwargs
) -> list[float | None]:
    r"""Penalty for AUs claimed but not labelled: minus their share of the AUs named (outside the catalogue counts).

    None for samples without AU labels (an emotion-only dataset says nothing about which AUs are absent); with
    `aus: []` (labelled: no active AU) every AU named is claimed but not labelled.

    >>> fea_au_hallucination(["<think>(AU4) (AU12)</think><answer>sadness</answer>"] * 3, aus=[[4], [], None])
    [-0.5, -1.0, None]
    """
    return _score_labelled(completions, aus, label_aus, _unlabelled_share)
