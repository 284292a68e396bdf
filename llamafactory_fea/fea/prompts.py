r"""The FEA prompts as editable templates: the question, and the guided prompt of stage 3 with label hints."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .aus import AU_CATALOGUE, format_au
from .emotions import BASIC_EMOTIONS


QUESTION = (
    "You are an expert in facial expression analysis. Look at the face in the image. "
    "First reason about the facial action units (AUs) you see, naming each one in parentheses, "
    "e.g. 'the brows are pulled together (AU4)'. Use only these AUs: {au_catalogue}. "
    "Then decide which emotion the face shows, choosing exactly one of: {emotions}. "
    "Write the reasoning inside <think> </think> and only the emotion word inside <answer> </answer>."
)

GUIDED = (
    "{question}\n"
    "Hints you must agree with: the face shows {emotion}, and its active action units are {aus}. "
    "Explain how each of these AUs appears on the face, name exactly these AUs and no others, "
    "and answer {emotion}."
)

RETRY = "{prompt}\nYour previous answer was:\n{previous}\nIt was rejected: {feedback} Write a corrected answer."


@dataclass(frozen=True)
class FEAPrompts:
    r"""Prompt templates; placeholders in braces are filled by `question`, `guided` and `retry`."""

    question_template: str = QUESTION
    guided_template: str = GUIDED
    retry_template: str = RETRY

    @classmethod
    def from_file(cls, path: "str | Path") -> "FEAPrompts":
        r"""Load templates from a JSON file whose keys are this dataclass's field names."""
        with open(path, encoding="utf-8") as f:
            overrides = json.load(f)

        unknown = set(overrides) - set(asdict(cls()))
        if unknown:
            raise ValueError(f"{path}: unknown prompt keys {sorted(unknown)}; use {sorted(asdict(cls()))}.")

        return cls(**overrides)

    def question(self, emotions: tuple[str, ...] = BASIC_EMOTIONS) -> str:
        r"""The FEA question with the AU catalogue, the label space and the output format."""
        catalogue = ", ".join(f"{format_au(au.number)} {au.name}" for au in AU_CATALOGUE.values())
        return self.question_template.format(au_catalogue=catalogue, emotions=", ".join(emotions))

    def guided(
        self, emotion: str, aus: "list[int] | tuple[int, ...]", emotions: tuple[str, ...] = BASIC_EMOTIONS
    ) -> str:
        r"""The stage-3 prompt: the question plus the ground-truth emotion and AUs as hints."""
        named = ", ".join(str(AU_CATALOGUE[au]) if au in AU_CATALOGUE else format_au(au) for au in sorted(aus))
        return self.guided_template.format(question=self.question(emotions), emotion=emotion, aus=named or "none")

    def retry(self, prompt: str, previous: str, feedback: str) -> str:
        r"""A prompt that repeats the task, shows the rejected answer and says what was wrong with it."""
        return self.retry_template.format(prompt=prompt, previous=previous, feedback=feedback)
