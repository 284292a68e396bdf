r"""LLaMA-Factory's dataset converters, keeping what the plugin's stages need: labels, reference answer, id, dataset.

LLaMA-Factory's converters keep only their own columns, so the `emotion` and `aus` label columns of FEA data would
be lost. Each converter here wraps the stock one of its format and adds one JSON column: the labels, normalised once
here (`fea.labels.extract_labels`: the `emotion`/`aus` columns or their aliases when the dataset has them, else read
from its reference assistant turn, so ordinary sharegpt/alpaca/openai data with `<think>...</think><answer>...</answer>`
targets works as well), the reference assistant turn (`solution`) and the row's `id` and source `dataset` (None when
absent); `decode_labels` reads it back. A label may be None ("not labelled": an AU-only row has no emotion, an
emotion-only row no AUs) and `aus` may be `[]` ("labelled: no active AU"); JSON keeps the difference. One JSON
string rather than typed columns: LLaMA-Factory maps the converter without fixed features, so a typed column takes
the type of the first written batch, and a dataset whose first 1000 rows have no emotion (`null`) then fails on the
first row with one, as do ids of mixed types. The grpo stage and
synthesis load registered datasets through them with LLaMA-Factory's own loader (`dataset_dir`, `media_dir`,
`num_samples`, `max_samples`, hub or file).
"""

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llamafactory.data.converter import (
    DATASET_CONVERTERS,
    AlpacaDatasetConverter,
    OpenAIDatasetConverter,
    SharegptDatasetConverter,
    register_dataset_converter,
)

from ..fea.labels import extract_labels
from ..seam import load_single_dataset
from .prompt_set import render_with_run_set


if TYPE_CHECKING:
    from datasets import Dataset
    from llamafactory.data.converter import DatasetConverter
    from llamafactory.data.parser import DatasetAttr
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments


CONVERTER_PREFIX = "fea_"
LABELS_COLUMN = "_fea_labels"


class LabelMixin:
    r"""Makes a stock LLaMA-Factory converter also output the labels, `solution`, `id` and `dataset` (one JSON column)."""

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        output = render_with_run_set(super().__call__(example), example, self.data_args)  # fea_prompt_set
        response = output["_response"][0]["content"] if output["_response"] else ""
        labels = extract_labels(example, response)
        row = {**labels, "solution": response, "id": example.get("id"), "dataset": example.get("dataset")}
        return {**output, LABELS_COLUMN: json.dumps(row, default=str)}


def decode_labels(example: dict[str, Any]) -> dict[str, Any]:
    r"""The labels, `solution`, `id` and `dataset` a label-keeping converter wrote into an aligned example.

    `emotion` is a string or None, `aus` a sorted list of AU numbers or None (`fea.labels.extract_labels`).

    >>> decode_labels({LABELS_COLUMN: '{"emotion": null, "aus": [], "solution": "", "id": "a", "dataset": null}'})
    {'emotion': None, 'aus': [], 'solution': '', 'id': 'a', 'dataset': None}
    """
    return json.loads(example[LABELS_COLUMN])


def check_image(dataset: str, record: Any, position: int, path: str) -> None:
    r"""Refuse an image that is missing or does not open (its header and size are read, nothing is decoded).

    The error names the dataset, the record (its `id`, else its row) and the path, and says how to fix it.
    """
    from PIL import Image

    record = record if record is not None else f"at row {position} (no id)"
    where = f"Dataset {dataset}, record {record}: image {path}"
    if not os.path.isfile(path):
        problem = "is not a file" if os.path.exists(path) else "does not exist"
        raise ValueError(
            f"{where} {problem}. Fix its path (relative paths are read from `media_dir`, by default `dataset_dir`) "
            "or remove the record."
        )

    try:
        with Image.open(path) as image:
            if not image.width or not image.height:
                raise ValueError(f"its size is {image.width}x{image.height}")
    except Exception as err:  # PIL raises many kinds for a corrupt file
        raise ValueError(
            f"{where} cannot be read as an image ({type(err).__name__}: {err}). Replace the file or remove the record."
        ) from None


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
    converter = f"{CONVERTER_PREFIX}{dataset_attr.formatting}"
    return load_single_dataset(converter, dataset_attr, model_args, data_args, training_args)
