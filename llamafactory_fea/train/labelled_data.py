r"""LLaMA-Factory's dataset converters, keeping what the plugin's stages need: labels, reference answer, id, dataset.

LLaMA-Factory's converters keep only their own columns, so the `emotion` and `aus` label columns of FEA data would
be lost. Each converter here wraps the stock one of its format and adds one JSON column: the labels (from the
`emotion`/`aus` columns when the dataset has them, else parsed from its reference assistant turn, so ordinary
sharegpt/alpaca/openai data with `<think>...</think><answer>...</answer>` targets works as well), the reference
assistant turn (`solution`) and the row's `id` and source `dataset` (None when absent). The grpo stage and synthesis
load registered datasets through them with LLaMA-Factory's own loader (`dataset_dir`, `media_dir`, `num_samples`,
`max_samples`, hub or file).
"""

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llamafactory.data.converter import (
    DATASET_CONVERTERS,
    AlpacaDatasetConverter,
    OpenAIDatasetConverter,
    SharegptDatasetConverter,
    register_dataset_converter,
)
from llamafactory.data.loader import _load_single_dataset

from ..fea.parsing import parse_completion
from ..rewards import label_aus, label_emotion


if TYPE_CHECKING:
    from datasets import Dataset
    from llamafactory.data.converter import DatasetConverter
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments


CONVERTER_PREFIX = "fea_"
LABELS_COLUMN = "_fea_labels"
EMOTION_COLUMNS = ("emotion", "label", "labels")
AUS_COLUMNS = ("aus", "AUs")


def _first(example: dict[str, Any], names: tuple[str, ...]) -> Any:
    r"""The value of the first of `names` that the example has and that is not empty."""
    for name in names:
        value = example.get(name)
        if value is not None and value != "" and value != []:
            return value

    return None


def extract_labels(example: dict[str, Any], response: str) -> dict[str, Any]:
    r"""An example's labels: its `emotion`/`aus` columns, else the answer and AUs of its reference response.

    >>> extract_labels({"emotion": "Sad", "aus": ["AU4"]}, "")
    {'emotion': 'sadness', 'aus': [4]}
    >>> extract_labels({}, "<think>Brows together (AU4).</think><answer>anger</answer>")
    {'emotion': 'anger', 'aus': [4]}
    """
    emotion, aus = _first(example, EMOTION_COLUMNS), _first(example, AUS_COLUMNS)
    if isinstance(emotion, (list, tuple)):  # FEA-20K keeps `labels: ["Sadness"]`
        emotion = emotion[0] if emotion else None

    parsed = parse_completion(response) if response and (emotion is None or aus is None) else None
    if emotion is None and parsed is not None:
        emotion = parsed.emotion

    if aus is None and parsed is not None:
        aus = sorted(parsed.aus)

    return {"emotion": label_emotion(emotion), "aus": sorted(label_aus(aus) or ())}


class LabelMixin:
    r"""Makes a stock LLaMA-Factory converter also output the labels, `solution`, `id` and `dataset` (one JSON column)."""

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        output = super().__call__(example)
        response = output["_response"][0]["content"] if output["_response"] else ""
        labels = extract_labels(example, response)
        row = {**labels, "solution": response, "id": example.get("id"), "dataset": example.get("dataset")}
        return {**output, LABELS_COLUMN: json.dumps(row, default=str)}


@dataclass
class FEAAlpacaDatasetConverter(LabelMixin, AlpacaDatasetConverter):
    r"""LLaMA-Factory's alpaca converter, keeping the labels, the id and the source dataset."""


@dataclass
class FEASharegptDatasetConverter(LabelMixin, SharegptDatasetConverter):
    r"""LLaMA-Factory's sharegpt converter, keeping the labels, the id and the source dataset."""


@dataclass
class FEAOpenAIDatasetConverter(LabelMixin, OpenAIDatasetConverter):
    r"""LLaMA-Factory's openai converter, keeping the labels, the id and the source dataset."""


LABEL_CONVERTERS: dict[str, type["DatasetConverter"]] = {
    "alpaca": FEAAlpacaDatasetConverter,
    "sharegpt": FEASharegptDatasetConverter,
    "openai": FEAOpenAIDatasetConverter,
}


def register_label_converters() -> None:
    r"""Register the label-keeping converters in LLaMA-Factory's converter registry (`fea_sharegpt`, ...)."""
    for name, converter in LABEL_CONVERTERS.items():
        if f"{CONVERTER_PREFIX}{name}" not in DATASET_CONVERTERS:
            register_dataset_converter(f"{CONVERTER_PREFIX}{name}", converter)


def load_labelled_dataset(
    name: str,
    dataset_attr: "DatasetAttr",
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    reader: str,
) -> "Dataset":
    r"""A registered dataset aligned by LLaMA-Factory's loader through the label-keeping converter of its format."""
    if dataset_attr.formatting not in LABEL_CONVERTERS:
        raise ValueError(f"Dataset {name}: {reader} reads {', '.join(LABEL_CONVERTERS)} formatting only.")

    register_label_converters()
    dataset_attr.formatting = f"{CONVERTER_PREFIX}{dataset_attr.formatting}"
    return _load_single_dataset(dataset_attr, model_args, data_args, training_args)
