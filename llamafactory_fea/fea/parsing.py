r"""Parse a `<think>...</think><answer>...</answer>` completion into a typed result with its faults (tags: `labels.py`)."""

import re
from dataclasses import dataclass, field
from typing import Any

from .aus import AU_CATALOGUE
from .emotions import EMOTIONS
from .labels import (
    AU_PATTERN,
    TAG_PATTERN,
    answer_emotion,
    answer_text,
    named_aus,
    named_emotions,
    think_text,
    well_formed,
)


MIN_REASONING_WORDS = 3


@dataclass(frozen=True)
class ParsedCompletion:
    r"""What a completion says (reasoning, answer, emotion, AUs) and what is wrong with it."""

    text: str
    reasoning: str | None
    answer: str | None
    emotion: str | None
    aus: frozenset[int]
    well_formed: bool
    structured: bool
    problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        r"""Whether the completion has no fault at all."""
        return not self.problems

    @property
    def unknown_aus(self) -> frozenset[int]:
        r"""AUs named in the reasoning that are not in the catalogue."""
        return frozenset(au for au in self.aus if au not in AU_CATALOGUE)

    def feedback(self) -> str:
        r"""The faults as one paragraph to show a model that should try again."""
        return " ".join(self.problems)


def completion_text(completion: Any) -> str:
    r"""The text of a completion: a string, a chat message, or a list of messages (TRL's conversational form).

    >>> completion_text([{"role": "assistant", "content": "<answer>anger</answer>"}])
    '<answer>anger</answer>'
    """
    if completion is None:
        return ""

    if isinstance(completion, str):
        return completion

    if isinstance(completion, dict):
        completion = [completion]

    if not isinstance(completion, (list, tuple)):
        return str(completion)

    parts = []
    for message in completion:
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, (list, tuple)):  # multimodal content parts
            content = "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))

        parts.append("" if content is None else str(content))

    return "".join(parts)


def _tag_problems(text: str) -> list[str]:
    r"""Return the structural faults of the tags: missing, repeated, nested, misordered or surrounded by text."""
    tags = TAG_PATTERN.findall(text)
    problems = []
    for name in ("think", "answer"):
        opened, closed = tags.count(f"<{name}>"), tags.count(f"</{name}>")
        if opened == 0 or closed == 0:
            problems.append(f"Put the {'reasoning' if name == 'think' else 'answer'} inside <{name}> and </{name}>.")
        elif opened > 1 or closed > 1:
            problems.append(f"Write exactly one <{name}> block.")

    if tags and tags != ["<think>", "</think>", "<answer>", "</answer>"] and not problems:
        problems.append(
            "Write <think>...</think> first and <answer>...</answer> after it, with no tag inside another."
        )

    if tags and not problems:
        stripped = text.strip()
        if not stripped.startswith("<think>") or not stripped.endswith("</answer>"):
            problems.append("Write nothing before <think> or after </answer>.")

    return problems


def _answer_problems(answer: str | None) -> list[str]:
    r"""Return the faults of the answer: empty, several emotions, or not exactly one emotion word."""
    if answer is None:
        return []

    if not answer:
        return ["The answer is empty: write one emotion word."]

    named = named_emotions(answer)
    if len(named) > 1:
        return [f"The answer names several emotions ({', '.join(sorted(named))}): choose one."]

    if answer_emotion(answer) is None:
        return [f"The answer must be exactly one emotion word from: {', '.join(EMOTIONS)}; got {answer!r}."]

    return []


def _reasoning_problems(reasoning: str | None, aus: frozenset[int]) -> list[str]:
    r"""Return the faults of the reasoning: empty, no AU, an AU outside the catalogue, or a bare AU list."""
    if reasoning is None:
        return []

    if not reasoning:
        return ["The reasoning is empty: describe the facial movements you see."]

    problems = []
    if not aus:
        problems.append("The reasoning names no action unit: name each one you see in parentheses, e.g. (AU4).")

    unknown = sorted(au for au in aus if au not in AU_CATALOGUE)
    if unknown:
        problems.append(f"{', '.join(f'AU{au}' for au in unknown)} not in the AU catalogue: use catalogue AUs only.")

    words = re.findall(r"[A-Za-z]{2,}", AU_PATTERN.sub(" ", reasoning))
    if aus and len(words) < MIN_REASONING_WORDS:
        problems.append("The reasoning only lists action units: explain what you see on the face.")

    return problems


def parse_completion(completion: Any) -> ParsedCompletion:
    r"""Parse a completion: first `<think>` block, last `<answer>` block, AUs named in the reasoning.

    >>> parsed = parse_completion("<think>Brows pulled together (AU4).</think><answer>Sad</answer>")
    >>> parsed.emotion, sorted(parsed.aus), parsed.ok
    ('sadness', [4], True)
    """
    text = completion_text(completion)
    reasoning, answer = think_text(text), answer_text(text)
    aus = named_aus(reasoning)
    tag_problems = _tag_problems(text)
    problems = tag_problems + _reasoning_problems(reasoning, aus) + _answer_problems(answer)
    return ParsedCompletion(
        text=text,
        reasoning=reasoning,
        answer=answer,
        emotion=answer_emotion(answer),
        aus=aus,
        well_formed=well_formed(text),
        structured=not tag_problems,
        problems=tuple(problems),
    )
