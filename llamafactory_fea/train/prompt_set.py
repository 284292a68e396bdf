r"""The `fea_prompt_set` key: one prompt set for SFT data, GRPO prompts, synthesis and prediction.

    fea_prompt_set: reference          # or concise, or a JSON file of templates (see fea/prompts.py)

Set, the first user turn of every row is rendered with the set when LLaMA-Factory loads the data: the row's own
question is kept (framed by a set that frames it), a question that is one of the shipped sets' renderings is
replaced, and the emotion choices are the row's own label space (its `dataset` column), never a mix's union. Not
set (the default), rows are read as stored. Plugin stages declare the key in their arguments; every stock stage
(sft, predict) accepts it through the `prompt_set` extension, which routes the stock converters through rendering
ones for that run (a `run` row of the seam).
"""

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from ..fea.emotions import BASIC_EMOTIONS, EMOTIONS, LABEL_SPACES
from ..fea.labels import extract_labels
from ..fea.prompts import PROMPT_SETS, FEAPrompts, label_space_of, load_prompt_set
from ..seam import dataset_formattings
from .plugin import PluginExtension, register_extension


if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments


PROMPT_SET_ATTR = "fea_prompt_set"  # read from the run's DataArguments by the converters
_SENTINEL = "\x00"


@dataclass
class PromptSetArguments:
    r"""The prompt set of a run (a YAML key of every stage)."""

    fea_prompt_set: str | None = field(
        default=None,
        metadata={
            "help": "Prompt set of the FEA prompts: `concise`, `reference` (the Facial-R1 prompt's content) or a "
            "JSON file of `FEAPrompts` templates. Renders the question of SFT, GRPO and prediction rows and the "
            "synthesis prompts. null: rows as stored, `concise` for generated prompts."
        },
    )

    def __post_init__(self) -> None:
        if self.fea_prompt_set is not None:
            load_prompt_set(self.fea_prompt_set)  # an unknown name or a broken file fails at parse time


@cache
def _frames(prompts: FEAPrompts) -> tuple[tuple[str, str, str | None], ...]:
    r"""(prefix, suffix, default question) of a set's renderings in every label space: how one is recognised.

    A set that does not frame a record's own question has its whole rendering as prefix and None as default.
    """
    frames = set()
    for space in {*LABEL_SPACES.values(), BASIC_EMOTIONS, EMOTIONS}:
        if "{question}" in prompts.question_template:
            prefix, suffix = prompts.question(space, _SENTINEL).split(_SENTINEL)
            frames.add((prefix, suffix, prompts.default_question))
        else:
            frames.add((prompts.question(space), "", None))

    return tuple(sorted(frames))


def own_question(text: str, prompts: FEAPrompts | None = None) -> str | None:
    r"""The record's own question in a user turn's text: None when it is a rendering of a shipped set or `prompts`.

    Every form `data convert fea20k --question` writes is recognised: a set's framing of the record's question
    (`framed` with a set that frames it), the record's question, a blank line and a set's whole rendering (`framed`
    with a set that does not), a rendering alone (`fea`) and the record's question alone (`record`).
    """
    for known in (*PROMPT_SETS.values(), *([prompts] if prompts is not None else [])):
        for prefix, suffix, default in _frames(known):
            if default is None and text == prefix:
                return None

            if default is None and text.endswith(prefix) and text[: -len(prefix)].endswith(("\n", " ")):
                return text[: -len(prefix)].strip() or None  # `own`, blank line, the set's rendering

            if default is not None and len(text) >= len(prefix) + len(suffix):
                if text.startswith(prefix) and text.endswith(suffix):
                    own = text[len(prefix) : len(text) - len(suffix)].strip()
                    return None if own in ("", default) else own

    return text or None


def render_question(text: str, prompts: FEAPrompts, dataset: str | None, emotion: str | None) -> str:
    r"""A user turn's text rendered with a prompt set; leading image/video/audio placeholders are kept in place."""
    from llamafactory.extras.constants import AUDIO_PLACEHOLDER, IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER

    lead = ""
    body = text
    while True:
        stripped = body.lstrip()
        for placeholder in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, AUDIO_PLACEHOLDER):
            if stripped.startswith(placeholder):
                lead += placeholder
                body = stripped[len(placeholder) :]
                break
        else:
            break

    own = own_question(body.strip(), prompts)
    return lead + prompts.question(label_space_of(dataset, emotion), own)


def render_prompt(output: dict[str, Any], example: dict[str, Any], prompts: FEAPrompts) -> dict[str, Any]:
    r"""An aligned example (LLaMA-Factory's `_prompt`) with its first user turn rendered by `prompts`."""
    response = output["_response"][0]["content"] if output.get("_response") else ""
    emotion = extract_labels(example, response)["emotion"]
    messages = [dict(message) for message in output["_prompt"]]
    for message in messages:
        if message.get("role") == "user":
            message["content"] = render_question(message.get("content", ""), prompts, example.get("dataset"), emotion)
            break

    return {**output, "_prompt": messages}


def active_prompt_set(data_args: "DataArguments | None") -> FEAPrompts | None:
    r"""The prompt set a run's data is rendered with (None: rows as stored)."""
    name = getattr(data_args, PROMPT_SET_ATTR, None)
    return load_prompt_set(name) if name else None


def render_with_run_set(output: dict[str, Any], example: dict[str, Any], data_args: Any) -> dict[str, Any]:
    r"""An aligned example rendered with the run's prompt set; as it is when the run sets none."""
    prompts = active_prompt_set(data_args)
    return render_prompt(output, example, prompts) if prompts is not None else output


def use_prompt_set(data_args: "DataArguments", name: str | None) -> None:
    r"""Make the converters of this run's data render with a prompt set (None: as stored)."""
    setattr(data_args, PROMPT_SET_ATTR, name)


class RenderMixin:
    r"""Makes a LLaMA-Factory converter render the first user turn with the run's prompt set, if one is set."""

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        return render_with_run_set(super().__call__(example), example, self.data_args)


@cache
def _rendering_converters() -> dict[str, type]:
    r"""The stock converters with rendering, by formatting name."""
    from llamafactory.data.converter import AlpacaDatasetConverter, OpenAIDatasetConverter, SharegptDatasetConverter

    stock = {"alpaca": AlpacaDatasetConverter, "sharegpt": SharegptDatasetConverter, "openai": OpenAIDatasetConverter}
    return {name: dataclass(type(f"Render{cls.__name__}", (RenderMixin, cls), {})) for name, cls in stock.items()}


def prompt_set_run(prompt_args: PromptSetArguments) -> AbstractContextManager:
    r"""The `prompt_set` extension's run: the stock formattings render with the set (nothing when none is set)."""
    if prompt_args.fea_prompt_set is None:
        return nullcontext()

    return dataset_formattings(_rendering_converters())


def prompt_set_callbacks(prompt_args: PromptSetArguments, model_args, data_args, training_args, *rest) -> list[Any]:
    r"""The `prompt_set` extension: the run's data arguments name the set its converters render with (no callbacks)."""
    use_prompt_set(data_args, prompt_args.fea_prompt_set)
    return []


EXTENSION = register_extension(
    PluginExtension(
        name="prompt_set",
        arguments="llamafactory_fea.train.prompt_set.PromptSetArguments",
        callbacks="llamafactory_fea.train.prompt_set.prompt_set_callbacks",
        run_context="llamafactory_fea.train.prompt_set.prompt_set_run",
    )
)
