r"""The FEA prompts as editable templates, in named sets: the question, the guided prompt of stage 3, the retry.

Two sets ship: `concise` (a short paragraph, the default) and `reference` (the content of the Facial-R1 reference
prompt in our words: the record's own question, requirements, the 30-AU definition list, one worked example and the
emotion choices). A JSON file whose keys are `FEAPrompts` field names gives any other text
(`examples/prompts_reference_placeholders.json`); `load_prompt_set` accepts a set name or such a file.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .aus import AU_CATALOGUE, format_au
from .emotions import BASIC_EMOTIONS, EMOTIONS, source_label_space


QUESTION = (
    "You are an expert in facial expression analysis. Look at the face in the image. "
    "First reason about the facial action units (AUs) you see, naming each one in parentheses, "
    "e.g. 'the brows are pulled together (AU4)'. Use only these AUs: {au_catalogue}. "
    "Then decide which emotion the face shows, choosing exactly one of: {emotions}. "
    "Write the reasoning inside <think> </think> and only the emotion word inside <answer> </answer>."
)

GUIDED = "{question}\nHints you must agree with:\n{hints}"

EMOTION_HINT = "The face shows {emotion}: answer {emotion}."

AUS_HINT = (
    "Its active action units are {aus}: explain how each of these AUs appears on the face, "
    "and name exactly these AUs and no others."
)

RETRY = "{prompt}\nYour previous answer was:\n{previous}\nIt was rejected: {feedback} Write a corrected answer."

REFERENCE_QUESTION = """## Task
{question}

## What to write
Reason first, inside <think> and </think>:
- one short, exact paragraph about the action units (AUs) that matter for this face;
- name every visible facial movement with its AU number in parentheses, e.g. "the brows are pulled together (AU4)";
- once the AUs are named, say how together they point to one emotion;
- state only what you see: no negated or hedged AU claims (no "no", "not", "without", "maybe");
- keep it brief, with no words that do not serve the analysis.
Then give only the emotion inside <answer> and </answer>: one word, chosen from {emotions}.

## Action units
{au_definitions}

## A worked example
This answer follows the rules:
<think>The inner corners of the brows rise (AU1) and draw together (AU4), and the lip corners are pulled \
down (AU15) while the chin pushes up (AU17). Raised, drawn brows with lowered lip corners and a raised chin form \
the typical pattern of sorrow, so the face shows sadness.</think>
<answer>sadness</answer>"""

REFERENCE_DEFAULT_QUESTION = "Which emotion does the face in this image show?"

REFERENCE_GUIDED = "{question}\n\n## Labels you must reproduce\n{hints}"

REFERENCE_EMOTION_HINT = "Your answer must be exactly this emotion: {emotion}."

REFERENCE_AUS_HINT = "Your reasoning must name exactly these action units: {aus}."


@dataclass(frozen=True)
class FEAPrompts:
    r"""Prompt templates; placeholders in braces are filled by `question`, `guided` and `retry`.

    `question_template` may use {question} (the record's own question, else `default_question`), {emotions} (the
    row's label space), {au_catalogue} (one line of `AU4 brow lowerer, ...`) and {au_definitions} (one AU a line).
    A template without {question} replaces a record's own question only when the record has none.
    """

    question_template: str = QUESTION
    default_question: str = ""
    guided_template: str = GUIDED
    emotion_hint_template: str = EMOTION_HINT
    aus_hint_template: str = AUS_HINT
    retry_template: str = RETRY

    @classmethod
    def from_file(cls, path: "str | Path", base: "FEAPrompts | None" = None) -> "FEAPrompts":
        r"""Load templates from a JSON file whose keys are this dataclass's field names (the rest from `base`)."""
        try:
            with open(path, encoding="utf-8") as f:
                overrides = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"{path}: cannot read the prompt file ({err}); give a JSON object of templates."
            ) from None

        names = sorted(field.name for field in fields(cls))
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}: expected a JSON object whose keys are among {names}.")

        overrides = {key: value for key, value in overrides.items() if not key.startswith("_")}  # _comment etc.
        base_name = overrides.pop("base", None)
        unknown = set(overrides) - set(names)
        if unknown:
            raise ValueError(f"{path}: unknown prompt keys {sorted(unknown)}; use {names} (and `base`).")

        if base_name is not None and base_name not in PROMPT_SETS:
            raise ValueError(f"{path}: unknown base set {base_name!r}; use one of {', '.join(PROMPT_SETS)}.")

        base = PROMPT_SETS[base_name] if base_name is not None else base or cls()
        return replace(base, **overrides)

    def question(self, emotions: Sequence[str] = BASIC_EMOTIONS, own: str | None = None) -> str:
        r"""The FEA question with the AU catalogue, the label space and the output format.

        `own` is the record's own question: kept as it is by a template without {question}, framed otherwise.
        """
        if own and "{question}" not in self.question_template:
            return own

        catalogue = ", ".join(f"{format_au(au.number)} {au.name}" for au in AU_CATALOGUE.values())
        definitions = "\n".join(f"- {format_au(au.number)}: {au.name}" for au in AU_CATALOGUE.values())
        return self.question_template.format(
            question=own or self.default_question,
            emotions=", ".join(emotions),
            au_catalogue=catalogue,
            au_definitions=definitions,
        )

    def guided(
        self,
        emotion: str | None,
        aus: Sequence[int] | None,
        emotions: Sequence[str] = BASIC_EMOTIONS,
        own: str | None = None,
    ) -> str:
        r"""The stage-3 prompt: the question plus the labels that exist as hints (None = not labelled).

        `aus=[]` is a label (no active AU) and gives the hint "none"; with neither label it is the question alone.
        """
        question = self.question(emotions, own)
        named = None
        if aus is not None:
            named = ", ".join(str(AU_CATALOGUE[au]) if au in AU_CATALOGUE else format_au(au) for au in sorted(aus))
            named = named or "none"

        hints = []
        if emotion is not None:
            hints.append(self.emotion_hint_template.format(emotion=emotion))

        if named is not None:
            hints.append(self.aus_hint_template.format(aus=named))

        if not hints:
            return question

        return self.guided_template.format(
            question=question, hints="\n".join(hints), emotion=emotion or "", aus=named or ""
        )

    def retry(self, prompt: str, previous: str, feedback: str) -> str:
        r"""A prompt that repeats the task, shows the rejected answer and says what was wrong with it."""
        return self.retry_template.format(prompt=prompt, previous=previous, feedback=feedback)


PROMPT_SETS: dict[str, FEAPrompts] = {
    "concise": FEAPrompts(),
    "reference": FEAPrompts(
        question_template=REFERENCE_QUESTION,
        default_question=REFERENCE_DEFAULT_QUESTION,
        guided_template=REFERENCE_GUIDED,
        emotion_hint_template=REFERENCE_EMOTION_HINT,
        aus_hint_template=REFERENCE_AUS_HINT,
    ),
}


def load_prompt_set(name_or_path: str | None) -> FEAPrompts:
    r"""The prompt set of a name (`concise`, `reference`) or a JSON file of templates; None = `concise`."""
    if not name_or_path:
        return PROMPT_SETS["concise"]

    if name_or_path in PROMPT_SETS:
        return PROMPT_SETS[name_or_path]

    if name_or_path.endswith(".json") or os.path.sep in name_or_path:
        if not os.path.isfile(name_or_path):
            raise ValueError(f"Prompt set file {name_or_path} does not exist: give its path or a set name.")

        return FEAPrompts.from_file(name_or_path)

    raise ValueError(
        f"Unknown prompt set {name_or_path!r}: use one of {', '.join(PROMPT_SETS)} or a JSON file of templates."
    )


def label_space_of(dataset: str | None, emotion: str | None = None) -> tuple[str, ...]:
    r"""The emotion choices of a row: its source dataset's label space (basic emotions when unknown).

    The dataset may be spelled as the converters accept it ("RAF-DB", "raf_db", "CK+": `emotions.source_label_space`).
    A row whose emotion lies outside its dataset's space (contempt in a basic-emotion set) is offered all emotions.
    """
    space = source_label_space(dataset)
    if emotion in EMOTIONS and emotion not in space:
        return EMOTIONS

    return space
