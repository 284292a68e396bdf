r"""The reference rewards: format, emotion and AU as the released Facial-R1 code (`open_r1/grpo_jsonl.py`) grades them.

`fea_emotion` is the paper's exact match and `fea_emotion_fuzzy` the Levenshtein similarity the released code actually
computes; both read the answer and clean the label as the reference does (`fea.labels`), so runs are comparable with
the paper, holes included (an empty answer, "A or B", a bare AU list: see `strict.py`).
"""

from collections.abc import Callable
from typing import Any

from ..fea.labels import clean_answer, label_aus, reference_answer, reference_aus, well_formed
from ..fea.parsing import completion_text
from .registry import label_column, register_reward


def au_f1(predicted: frozenset, labelled: frozenset) -> float:
    r"""Set F1 between predicted and labelled AUs (0 when they share none).

    >>> au_f1(frozenset({4, 15}), frozenset({4}))
    0.6666666666666666
    """
    true_positives = len(predicted & labelled)
    if true_positives == 0:
        return 0.0

    return 2 * true_positives / (len(predicted) + len(labelled))


def indel_ratio(first: str, second: str) -> float:
    r"""`Levenshtein.ratio`: 1 - indel distance / total length = 2 * LCS / total length (1.0 for two empty strings).

    The LCS costs at most (shorter length)^2 `str.find` calls, so a label against a megabyte answer is cheap.

    >>> indel_ratio("sad", "sadness")
    0.6
    """
    if not first and not second:
        return 1.0

    short, long = sorted((first, second), key=len)
    ends = [0]  # ends[k]: the shortest prefix of `long` with a subsequence of length k in common with `short` so far
    for char in short:
        for length in range(len(ends), 0, -1):  # longest first, so each reads the ends before this character
            end = long.find(char, ends[length - 1]) + 1
            if end and length == len(ends):
                ends.append(end)
            elif end and end < ends[length]:
                ends[length] = end

    return 2 * (len(ends) - 1) / (len(first) + len(second))


def _grade_answers(
    completions: list[Any], emotion: list[str | None] | None, grade: Callable[[str, str], float]
) -> list[float | None]:
    r"""`grade(answer, label)` of each cleaned reference answer and cleaned label; None for unlabelled samples."""
    rewards: list[float | None] = []
    for completion, label in zip(completions, label_column(completions, emotion)):
        if label is None or not str(label).strip():
            rewards.append(None)
            continue

        rewards.append(grade(reference_answer(completion_text(completion)), clean_answer(str(label))))

    return rewards


@register_reward("fea_format", 0.0, 1.0)
def fea_format(completions: list[Any], **kwargs) -> list[float | None]:
    r"""Reference format reward: 1 if the completion fully matches `<think>.*?</think>\s*<answer>.*?</answer>`.

    >>> fea_format(["<think>(AU12)</think><answer>happiness</answer>", "happiness"])
    [1.0, 0.0]
    """
    return [1.0 if well_formed(completion_text(c)) else 0.0 for c in completions]


@register_reward("fea_emotion", 0.0, 1.0)
def fea_emotion(completions: list[Any], emotion: list[str | None] | None = None, **kwargs) -> list[float | None]:
    r"""Paper accuracy reward: 1 if the last `<answer>` (else the whole completion), cleaned as the reference does, is the label.

    None for a sample without an emotion label (an AU-only source; the reference pays a constant 0.5, which shifts a
    whole group and leaves the advantages unchanged).

    >>> fea_emotion(
    ...     ["<answer>Sadness</answer>", "<answer>sad</answer>", "sadness"], emotion=["sadness", "sadness", None]
    ... )
    [1.0, 0.0, None]
    """
    return _grade_answers(completions, emotion, lambda answer, label: 1.0 if answer == label else 0.0)


@register_reward("fea_emotion_fuzzy", 0.0, 1.0)
def fea_emotion_fuzzy(completions: list[Any], emotion: list[str | None] | None = None, **kwargs) -> list[float | None]:
    r"""The released code's accuracy reward for word labels: Levenshtein ratio of the cleaned answer and the label.

    None for a sample without an emotion label, as `fea_emotion`.

    >>> fea_emotion_fuzzy(["<answer>sad</answer>", "<answer>sadness</answer>"], emotion=["sadness"] * 2)
    [0.6, 1.0]
    """
    return _grade_answers(completions, emotion, indel_ratio)


@register_reward("fea_au_f1", -1.0, 1.0)
def fea_au_f1(completions: list[Any], aus: list[list[int] | None] | None = None, **kwargs) -> list[float | None]:
    r"""Reference AU reward: 2*F1-1 of the AUs named in `<think>`; -1 if none named.

    None for a sample without AU labels (not labelled: an emotion-only source); 0 for one labelled with no active AU
    (the reference pays 0 for an empty AU list; constant within a group, so no advantage either way).

    >>> fea_au_f1(["<think>(AU4) and (AU15)</think><answer>sadness</answer>"] * 3, aus=[[4], [], None])
    [0.33333333333333326, 0.0, None]
    """
    rewards: list[float | None] = []
    for completion, labels in zip(completions, label_column(completions, aus)):
        labelled = label_aus(labels)
        if not labelled:
            rewards.append(None if labelled is None else 0.0)
            continue

        predicted = reference_aus(completion_text(completion))
        expected = frozenset(f"AU{number}" for number in labelled)
        rewards.append(2 * au_f1(predicted, expected) - 1 if predicted else -1.0)

    return rewards
