r"""GRPO datasets from LLaMA-Factory's registered datasets, keeping the labels the rewards need.

LLaMA-Factory's converters keep only their own columns, so the `emotion` and `aus` label columns of FEA data would
be lost. Here each registered dataset is loaded by LLaMA-Factory's own loader (`dataset_dir`, `media_dir`,
`num_samples`, `max_samples`, hub or file) through a converter that wraps the stock one of its format and adds the
labels: from the `emotion`/`aus` columns when the dataset has them, else parsed from its reference assistant turn,
so ordinary sharegpt/alpaca/openai data with `<think>...</think><answer>...</answer>` targets works as well.

A row of the result: `prompt` (the user turns rendered by LLaMA-Factory's template, one unexpanded image token per
image), `images` (PIL images with LLaMA-Factory's `image_max_pixels`/`image_min_pixels`, loaded on access), `emotion`,
`aus`, `solution` (the reference assistant turn) and, with `au_frequency_weighting`, `au_weight`.
"""

import copy
import json
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from datasets import DatasetDict, Features, Sequence, Value
from llamafactory.data.converter import (
    DATASET_CONVERTERS,
    AlpacaDatasetConverter,
    OpenAIDatasetConverter,
    SharegptDatasetConverter,
    register_dataset_converter,
)
from llamafactory.data.data_utils import get_dataset_module, merge_dataset, split_dataset
from llamafactory.data.loader import _load_single_dataset
from llamafactory.data.parser import get_dataset_list

from ...fea.emotions import try_normalize_emotion
from ...fea.parsing import parse_completion
from ...rewards import AU_WEIGHT_COLUMN, au_frequency_weights, label_aus
from .._logging import get_logger


if TYPE_CHECKING:
    from datasets import Dataset
    from llamafactory.data import Template
    from llamafactory.data.converter import DatasetConverter
    from llamafactory.data.data_utils import DatasetModule
    from llamafactory.data.mm_plugin import BasePlugin
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import PreTrainedTokenizer, ProcessorMixin, Seq2SeqTrainingArguments

    from .args import GRPOArguments


logger = get_logger(__name__)

CONVERTER_PREFIX = "fea_grpo_"
LABELS_COLUMN = "_fea_labels"
EMOTION_COLUMNS = ("emotion", "label", "labels")
AUS_COLUMNS = ("aus", "AUs")
FEATURES = Features(
    {
        "prompt": Value("string"),
        "image_paths": Sequence(Value("string")),
        "emotion": Value("string"),
        "aus": Sequence(Value("int64")),
        "solution": Value("string"),
    }
)


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

    if emotion is not None:
        emotion = try_normalize_emotion(str(emotion)) or str(emotion).strip().lower() or None

    return {"emotion": emotion, "aus": sorted(label_aus(aus) or ())}


class LabelMixin:
    r"""Makes a stock LLaMA-Factory converter also output the example's labels, as one JSON column."""

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        output = super().__call__(example)
        response = output["_response"][0]["content"] if output["_response"] else ""
        labels = extract_labels(example, response)
        return {**output, LABELS_COLUMN: json.dumps({**labels, "solution": response})}


@dataclass
class FEAAlpacaDatasetConverter(LabelMixin, AlpacaDatasetConverter):
    r"""LLaMA-Factory's alpaca converter, keeping the labels."""


@dataclass
class FEASharegptDatasetConverter(LabelMixin, SharegptDatasetConverter):
    r"""LLaMA-Factory's sharegpt converter, keeping the labels."""


@dataclass
class FEAOpenAIDatasetConverter(LabelMixin, OpenAIDatasetConverter):
    r"""LLaMA-Factory's openai converter, keeping the labels."""


LABEL_CONVERTERS: dict[str, type["DatasetConverter"]] = {
    "alpaca": FEAAlpacaDatasetConverter,
    "sharegpt": FEASharegptDatasetConverter,
    "openai": FEAOpenAIDatasetConverter,
}


def register_label_converters() -> None:
    r"""Register the label-keeping converters in LLaMA-Factory's converter registry (`fea_grpo_sharegpt`, ...)."""
    for name, converter in LABEL_CONVERTERS.items():
        if f"{CONVERTER_PREFIX}{name}" not in DATASET_CONVERTERS:
            register_dataset_converter(f"{CONVERTER_PREFIX}{name}", converter)


def _to_grpo_row(
    example: dict[str, Any],
    template: "Template",
    plugin: "BasePlugin",
    tokenizer: "PreTrainedTokenizer",
    processor: "ProcessorMixin | None",
) -> dict[str, Any]:
    r"""Render an aligned example's prompt with the template (as the sft stage would) and unpack its labels."""
    if example["_videos"] or example["_audios"]:
        raise ValueError("The grpo stage supports image and text prompts only: remove videos and audios.")

    labels = json.loads(example[LABELS_COLUMN])
    images = example["_images"] or []
    messages = example["_prompt"] + [{"role": "assistant", "content": labels["solution"]}]
    messages = plugin.process_messages(messages, images, [], [], processor)
    prompt_ids, _ = template.encode_oneturn(tokenizer, messages, example["_system"], example["_tools"])
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return {"prompt": prompt, "image_paths": images, **labels}


class ImageLoader:
    r"""Dataset transform: open a row's image paths as PIL images with LLaMA-Factory's pixel limits."""

    def __init__(self, plugin: "BasePlugin", processor: "ProcessorMixin") -> None:
        self.plugin = plugin
        self.limits = {
            "image_max_pixels": getattr(processor, "image_max_pixels", 768 * 768),
            "image_min_pixels": getattr(processor, "image_min_pixels", 32 * 32),
        }

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if "image_paths" not in batch:  # a column read, e.g. dataset["emotion"]
            return batch

        paths = batch.pop("image_paths")
        images = [self.plugin._regularize_images(row, **self.limits)["images"] if row else [] for row in paths]
        return {**batch, "images": images}


def _load(
    names: list[str] | None,
    template: "Template",
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    grpo_args: "GRPOArguments",
    tokenizer: "PreTrainedTokenizer",
    processor: "ProcessorMixin | None",
) -> "list[Dataset]":
    r"""Load registered datasets as GRPO rows, one dataset per name (AU weights are computed per dataset)."""
    if names is None:
        return []

    plugin = copy.copy(template.mm_plugin)
    plugin.expand_mm_tokens = False  # the processor expands the image tokens when TRL calls it with the images
    to_row = partial(_to_grpo_row, template=template, plugin=plugin, tokenizer=tokenizer, processor=processor)
    datasets = []
    for name, dataset_attr in zip(names, get_dataset_list(names, data_args.dataset_dir)):
        if dataset_attr.ranking:
            raise ValueError(f"Dataset {name} is a ranking (pairwise) dataset: the grpo stage needs prompts.")

        if dataset_attr.formatting not in LABEL_CONVERTERS:
            raise ValueError(f"Dataset {name}: the grpo stage reads {', '.join(LABEL_CONVERTERS)} formatting only.")

        dataset_attr.formatting = f"{CONVERTER_PREFIX}{dataset_attr.formatting}"
        aligned = _load_single_dataset(dataset_attr, model_args, data_args, training_args)
        dataset = aligned.map(
            to_row,
            remove_columns=aligned.column_names,
            features=FEATURES,
            num_proc=data_args.preprocessing_num_workers,
            load_from_cache_file=(not data_args.overwrite_cache) or (training_args.local_process_index != 0),
            desc=f"Rendering GRPO prompts of {name}",
        )
        if grpo_args.au_frequency_weighting != "none":
            weights = au_frequency_weights(dataset["aus"], grpo_args.au_frequency_weighting)
            dataset = dataset.add_column(AU_WEIGHT_COLUMN, weights)

        labelled = sum(1 for emotion in dataset["emotion"] if emotion)
        logger.info_rank0(f"GRPO dataset {name}: {len(dataset)} prompts, {labelled} with an emotion label.")
        datasets.append(dataset)

    return datasets


def _with_images(dataset: "Dataset | None", loader: ImageLoader | None) -> "Dataset | None":
    r"""Images are opened when a row is read (TRL's `images` column); text-only data drops the path column."""
    if dataset is None:
        return None

    if loader is not None and any(dataset["image_paths"]):
        return dataset.with_transform(loader)

    return dataset.remove_columns("image_paths")


def get_grpo_dataset(
    template: "Template",
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    grpo_args: "GRPOArguments",
    tokenizer: "PreTrainedTokenizer",
    processor: "ProcessorMixin | None" = None,
) -> "DatasetModule":
    r"""The train (and eval) datasets of the grpo stage: `dataset`, `eval_dataset` or `val_size`, mixed as LLaMA-Factory does."""
    if data_args.streaming:
        raise ValueError("The grpo stage does not support `streaming` (TRL's GRPOTrainer needs a map-style dataset).")

    if data_args.tokenized_path is not None:
        logger.warning_rank0("`tokenized_path` is ignored by the grpo stage: prompts are rendered at load time.")

    register_label_converters()
    load = partial(
        _load,
        template=template,
        model_args=model_args,
        data_args=data_args,
        training_args=training_args,
        grpo_args=grpo_args,
        tokenizer=tokenizer,
        processor=processor,
    )
    with training_args.main_process_first(desc="load dataset", local=(not data_args.data_shared_file_system)):
        train = load(data_args.dataset)
        evals = load(data_args.eval_dataset)

    dataset = merge_dataset(train, data_args, seed=training_args.seed) if train else None
    if data_args.eval_on_each_dataset and evals:
        eval_dataset = dict(zip(data_args.eval_dataset, evals))
    else:
        eval_dataset = merge_dataset(evals, data_args, seed=training_args.seed) if evals else None

    train_dict, eval_dict = split_dataset(dataset, eval_dataset, data_args, seed=training_args.seed)
    loader = ImageLoader(template.mm_plugin, processor) if processor is not None else None
    module = get_dataset_module(DatasetDict({**train_dict, **eval_dict}))
    module["train_dataset"] = _with_images(module.get("train_dataset"), loader)
    if isinstance(module.get("eval_dataset"), dict):
        module["eval_dataset"] = {key: _with_images(value, loader) for key, value in module["eval_dataset"].items()}
    elif module.get("eval_dataset") is not None:
        module["eval_dataset"] = _with_images(module["eval_dataset"], loader)

    return module
