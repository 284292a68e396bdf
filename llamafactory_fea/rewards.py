r"""Reward registry and the FEA reward functions (TRL signature: `reward(completions, **columns)`).

The `fea_format`, `fea_emotion`, `fea_emotion_fuzzy` and `fea_au_f1` rewards follow the released Facial-R1 code
(`open_r1/grpo_jsonl.py`) so runs are comparable with the paper; `fea_emotion` is the paper's exact match, and
`fea_emotion_fuzzy` the Levenshtein similarity the released code actually computes. The `fea_strict_*` rewards and the
extra ones close the holes those leave open (repeated or nested tags, text outside the tags, bare AU lists, AUs
claimed but not labelled). Every reward returns one value per completion, `None` where a label it needs is missing
(TRL leaves it out of the sum), and never raises on any string or chat-message list.
"""

import functools
import importlib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .fea.aus import AU_CATALOGUE, supports_emotion
from .fea.emotions import try_normalize_emotion
from .fea.parsing import FORMAT_PATTERN, completion_text, parse_completion


RewardFunc = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFunc] = {}
REWARD_RANGES: dict[str, tuple[float, float]] = {}

# the reference's extraction (open_r1/grpo_jsonl.py): last answer block; first think block, any case; AU\d+ upper-cased
REFERENCE_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
REFERENCE_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)
REFERENCE_AU = re.compile(r"AU\d+")
_LABEL_AU = re.compile(r"(?i)(?:AU)?\s*0*(\d{1,6})")
AU_WEIGHT_COLUMN = "au_weight"
REFERENCE_WEIGHT_SCALE = 10.0


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
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Cannot import reward {name!r}: {err}.") from err

    if not callable(func):
        raise ValueError(f"Reward {name!r} is not a function.")

    return func


def clean_answer(text: str) -> str:
    r"""The reference's `clean_text`: last answer block if any, line breaks as spaces, stripped, no final dot, lower case.

    >>> clean_answer("<answer>Sadness.</answer>")
    'sadness'
    """
    answers = REFERENCE_ANSWER.findall(text)
    if answers:
        text = answers[-1]

    for char in ("\n", "\r"):
        text = re.sub(r"(?<=\s)" + re.escape(char), "", text)
        text = re.sub(r"(?<!\s)" + re.escape(char), " ", text)

    return text.strip().rstrip(".").lower()


def reference_answer(text: str) -> str:
    r"""The answer the reference grades: the last `<answer>` block, else the whole completion, cleaned."""
    answers = REFERENCE_ANSWER.findall(text)
    return clean_answer(answers[-1].strip() if answers else text.strip())


def reference_aus(text: str) -> frozenset[str]:
    r"""The AUs the reference reads: `AU\d+` in the first `<think>` block (tags in any case), upper-cased, as strings.

    >>> sorted(reference_aus("<think>brows down (au4), AU04 and AU15</think>"))
    ['AU04', 'AU15', 'AU4']
    """
    think = REFERENCE_THINK.search(text)
    return frozenset(REFERENCE_AU.findall(think.group(1).upper())) if think else frozenset()


def label_aus(aus: Any) -> frozenset[int] | None:
    r"""A label AU column value (ints, "AU4" strings, or one "AU1, AU4" string) as a set of numbers; None if absent.

    >>> sorted(label_aus(["AU1", 4, "au15"]))
    [1, 4, 15]
    """
    if aus is None:
        return None

    items = aus if isinstance(aus, (list, tuple, set, frozenset)) else [aus]
    numbers = set()
    for item in items:
        if isinstance(item, bool):
            continue

        if isinstance(item, int):
            numbers.add(item)
            continue

        numbers.update(int(number) for number in _LABEL_AU.findall(str(item)))

    return frozenset(numbers)


def label_emotion(emotion: Any) -> str | None:
    r"""A label emotion as the normalised noun (synonyms and adjectives accepted); None when absent or empty."""
    if emotion is None or not str(emotion).strip():
        return None

    return try_normalize_emotion(str(emotion)) or str(emotion).strip().lower()


def _column(completions: Sequence[Any], column: Sequence[Any] | None) -> Sequence[Any]:
    r"""A label column, or a column of None when the dataset does not carry it."""
    return column if column is not None else [None] * len(completions)


def au_f1(predicted: frozenset, labelled: frozenset) -> float:
    r"""Set F1 between predicted and labelled AUs (0 when they share none)."""
    true_positives = len(predicted & labelled)
    if true_positives == 0:
        return 0.0

    return 2 * true_positives / (len(predicted) + len(labelled))


def indel_ratio(first: str, second: str) -> float:
    r"""`Levenshtein.ratio`: 1 - indel distance / total length = 2 * LCS / total length (1.0 for two empty strings).

    >>> indel_ratio("sad", "sadness")
    0.6
    """
    if not first and not second:
        return 1.0

    if len(first) < len(second):
        first, second = second, first

    previous = [0] * (len(second) + 1)
    for char in first:
        current = [0]
        for j, other in enumerate(second):
            current.append(previous[j] + 1 if char == other else max(previous[j + 1], current[j]))

        previous = current

    return 2 * previous[-1] / (len(first) + len(second))


@register_reward("fea_format", 0.0, 1.0)
def fea_format(completions: list[Any], **kwargs) -> list[float | None]:
    r"""Reference format reward: 1 if the completion fully matches `<think>.*?</think>\s*<answer>.*?</answer>`.

    >>> fea_format(["<think>(AU12)</think><answer>happiness</answer>", "happiness"])
    [1.0, 0.0]
    """
    return [1.0 if FORMAT_PATTERN.fullmatch(completion_text(c)) else 0.0 for c in completions]


@register_reward("fea_emotion", 0.0, 1.0)
def fea_emotion(completions: list[Any], emotion: list[str | None] | None = None, **kwargs) -> list[float | None]:
    r"""Paper accuracy reward: 1 if the last `<answer>` (else the whole completion), cleaned as the reference does, is the label.

    None for unlabelled samples (the reference pays a constant 0.5, which shifts a whole group and leaves the
    advantages unchanged).

    >>> fea_emotion(["<think>x</think><answer>Sadness</answer>", "<answer>sad</answer>"], emotion=["sadness"] * 2)
    [1.0, 0.0]
    """
    rewards: list[float | None] = []
    for completion, label in zip(completions, _column(completions, emotion)):
        if label is None or not str(label).strip():
            rewards.append(None)
            continue

        rewards.append(1.0 if reference_answer(completion_text(completion)) == clean_answer(str(label)) else 0.0)

    return rewards


@register_reward("fea_emotion_fuzzy", 0.0, 1.0)
def fea_emotion_fuzzy(completions: list[Any], emotion: list[str | None] | None = None, **kwargs) -> list[float | None]:
    r"""The released code's accuracy reward for word labels: Levenshtein ratio of the cleaned answer and the label.

    >>> fea_emotion_fuzzy(["<answer>sad</answer>", "<answer>sadness</answer>"], emotion=["sadness"] * 2)
    [0.6, 1.0]
    """
    rewards: list[float | None] = []
    for completion, label in zip(completions, _column(completions, emotion)):
        if label is None or not str(label).strip():
            rewards.append(None)
            continue

        rewards.append(indel_ratio(reference_answer(completion_text(completion)), clean_answer(str(label))))

    return rewards


@register_reward("fea_au_f1", -1.0, 1.0)
def fea_au_f1(completions: list[Any], aus: list[list[int] | None] | None = None, **kwargs) -> list[float | None]:
    r"""Reference AU reward: 2*F1-1 of the AUs named in `<think>`; -1 if none named; 0 if the sample has no AUs.

    >>> fea_au_f1(["<think>(AU4) and (AU15)</think><answer>sadness</answer>"], aus=[[4]])
    [0.33333333333333326]
    """
    rewards: list[float | None] = []
    for completion, labels in zip(completions, _column(completions, aus)):
        labelled = label_aus(labels)
        if not labelled:
            rewards.append(0.0)
            continue

        predicted = reference_aus(completion_text(completion))
        expected = frozenset(f"AU{number}" for number in labelled)
        rewards.append(2 * au_f1(predicted, expected) - 1 if predicted else -1.0)

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

    >>> fea_strict_emotion(["<think>x</think><answer>anger</answer><answer>sadness</answer>"], emotion=["sadness"])
    [0.0]
    """
    rewards: list[float | None] = []
    for completion, label in zip(completions, _column(completions, emotion)):
        expected = label_emotion(label)
        if expected is None:
            rewards.append(None)
            continue

        parsed = parse_completion(completion)
        rewards.append(1.0 if parsed.ok and parsed.emotion == expected else 0.0)

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
    for completion, labels in zip(completions, _column(completions, aus)):
        labelled = label_aus(labels)
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

    None for samples without AU labels (an emotion-only dataset says nothing about which AUs are absent).

    >>> fea_au_hallucination(["<think>(AU4) (AU12)</think><answer>sadness</answer>"], aus=[[4]])
    [-0.5]
    """
    rewards: list[float | None] = []
    for completion, labels in zip(completions, _column(completions, aus)):
        labelled = label_aus(labels)
        if not labelled:
            rewards.append(None)
            continue

        predicted = parse_completion(completion).aus
        claimed = {au for au in predicted if au not in labelled or au not in AU_CATALOGUE}
        rewards.append(-len(claimed) / len(predicted) if predicted else 0.0)

    return rewards


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
    r"""A reward multiplied per sample by a weight column (as the reference weighs format, accuracy and AU rewards)."""

    @functools.wraps(func)
    def weighted(completions: list[Any], **kwargs) -> list[float | None]:
        rewards = func(completions, **kwargs)
        weights = kwargs.get(column) or [1.0] * len(rewards)
        return [
            None if reward is None else reward * (1.0 if weight is None else float(weight))
            for reward, weight in zip(rewards, weights)
        ]

    return weighted
