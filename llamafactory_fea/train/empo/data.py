r"""EMPO datasets: ranking datasets whose two sides may differ in prompt and images, through LLaMA-Factory's loader.

A registered ranking dataset is read by LLaMA-Factory's own loader through a converter that wraps the stock one of
its format and adds one JSON column: the pair's kind (`pair_kind`, default `response`) and the rejected side's prompt
(`rejected_messages`) and images (`rejected_images`), each defaulting to the chosen side's. So `data pairs` output
and any stock ranking dataset (response pairs) both load. `EMPODatasetProcessor` encodes each side with its own
prompt and images exactly as LLaMA-Factory's pairwise processor encodes a pair (for a response pair, the same ids).
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from datasets import DatasetDict
from llamafactory.data.collator import MultiModalDataCollatorForSeq2Seq, PairwiseDataCollatorWithPadding
from llamafactory.data.converter import (
    DATASET_CONVERTERS,
    AlpacaDatasetConverter,
    OpenAIDatasetConverter,
    SharegptDatasetConverter,
    register_dataset_converter,
)
from llamafactory.data.data_utils import get_dataset_module, merge_dataset, split_dataset
from llamafactory.data.parser import get_dataset_list
from llamafactory.data.processor.pairwise import PairwiseDatasetProcessor
from llamafactory.data.processor.processor_utils import infer_seqlen
from llamafactory.extras.constants import IGNORE_INDEX

from ...data.pairs import PAIR_KINDS
from ...seam import load_single_dataset
from .._logging import get_logger


if TYPE_CHECKING:
    from datasets import Dataset
    from llamafactory.data import Template
    from llamafactory.data.converter import DatasetConverter
    from llamafactory.data.data_utils import DatasetModule
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import PreTrainedTokenizer, ProcessorMixin, Seq2SeqTrainingArguments


logger = get_logger(__name__)

CONVERTER_PREFIX = "fea_empo_"
EMPO_COLUMN = "_fea_empo"
KIND_IDS = {kind: index for index, kind in enumerate(PAIR_KINDS)}


class RejectedSideMixin:
    r"""Makes a stock converter also output the pair kind and the rejected side's prompt and images (one JSON column)."""

    def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
        output = super().__call__(example)
        kind = example.get("pair_kind") or "response"
        if kind not in KIND_IDS:
            raise ValueError(
                f"Pair {example.get('id', '')} has pair_kind {kind!r}: use one of {', '.join(PAIR_KINDS)} "
                "(or leave it out for a response pair)."
            )

        side = {"kind": kind, "prompt": output["_prompt"], "system": output["_system"], "images": output["_images"]}
        if example.get("rejected_messages") is not None:
            if not isinstance(self, (SharegptDatasetConverter, OpenAIDatasetConverter)):
                raise ValueError("`rejected_messages` needs sharegpt or openai formatting.")

            rejected = super().__call__({**example, self.dataset_attr.messages: example["rejected_messages"]})
            side.update(prompt=rejected["_prompt"], system=rejected["_system"])

        if example.get("rejected_images") is not None:
            side["images"] = self._find_medias(example["rejected_images"])

        return {**output, EMPO_COLUMN: json.dumps(side)}


@dataclass
class EMPOAlpacaDatasetConverter(RejectedSideMixin, AlpacaDatasetConverter):
    r"""LLaMA-Factory's alpaca converter for pairs (response pairs, or other images)."""


@dataclass
class EMPOSharegptDatasetConverter(RejectedSideMixin, SharegptDatasetConverter):
    r"""LLaMA-Factory's sharegpt converter for pairs whose sides may differ in prompt and images."""


@dataclass
class EMPOOpenAIDatasetConverter(RejectedSideMixin, OpenAIDatasetConverter):
    r"""LLaMA-Factory's openai converter for pairs whose sides may differ in prompt and images."""


CONVERTERS: dict[str, type["DatasetConverter"]] = {
    "alpaca": EMPOAlpacaDatasetConverter,
    "sharegpt": EMPOSharegptDatasetConverter,
    "openai": EMPOOpenAIDatasetConverter,
}


def register_pair_converters() -> None:
    r"""Register the pair converters in LLaMA-Factory's converter registry (`fea_empo_sharegpt`, ...)."""
    for name, converter in CONVERTERS.items():
        if f"{CONVERTER_PREFIX}{name}" not in DATASET_CONVERTERS:
            register_dataset_converter(f"{CONVERTER_PREFIX}{name}", converter)


class EMPODatasetProcessor(PairwiseDatasetProcessor):
    r"""LLaMA-Factory's pairwise processor, each side encoded with its own prompt and images."""

    def _encode_sides(
        self, example: dict[str, Any], rejected_side: dict[str, Any]
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        r"""Input ids and labels of both sides; the truncation of `PairwiseDatasetProcessor`, per side."""
        videos, audios, tools = example["_videos"] or [], example["_audios"] or [], example["_tools"]
        sides = (
            (example["_prompt"], example["_response"][0], example["_system"], example["_images"] or []),
            (rejected_side["prompt"], example["_response"][1], rejected_side["system"], rejected_side["images"] or []),
        )
        encoded = []
        for prompt, response, system, images in sides:
            messages = self.template.mm_plugin.process_messages(
                prompt + [response], images, videos, audios, self.processor
            )
            prompt_ids, response_ids = self.template.encode_oneturn(self.tokenizer, messages, system, tools)
            if self.template.efficient_eos:
                response_ids += [self.tokenizer.eos_token_id]

            prompt_ids, _ = self.template.mm_plugin.process_token_ids(
                prompt_ids, None, images, videos, audios, self.tokenizer, self.processor
            )
            encoded.append((prompt_ids, response_ids))

        target = max(len(response_ids) for _, response_ids in encoded)  # the response matters more, as stock
        ids_and_labels = []
        for prompt_ids, response_ids in encoded:
            source_len, target_len = infer_seqlen(len(prompt_ids), target, self.data_args.cutoff_len)
            prompt_ids, response_ids = prompt_ids[:source_len], response_ids[:target_len]
            ids_and_labels += [prompt_ids + response_ids, [IGNORE_INDEX] * source_len + response_ids]

        return tuple(ids_and_labels)

    def preprocess_dataset(self, examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        model_inputs = defaultdict(list)
        for i in range(len(examples["_prompt"])):
            rejected_side = json.loads(examples[EMPO_COLUMN][i])
            if (
                len(examples["_prompt"][i]) % 2 != 1
                or len(rejected_side["prompt"]) % 2 != 1
                or len(examples["_response"][i]) < 2
            ):
                logger.warning_rank0(f"Dropped invalid pair: {examples['_prompt'][i] + examples['_response'][i]}")
                continue

            example = {key: examples[key][i] for key in examples}
            chosen_ids, chosen_labels, rejected_ids, rejected_labels = self._encode_sides(example, rejected_side)
            model_inputs["chosen_input_ids"].append(chosen_ids)
            model_inputs["chosen_attention_mask"].append([1] * len(chosen_ids))
            model_inputs["chosen_labels"].append(chosen_labels)
            model_inputs["rejected_input_ids"].append(rejected_ids)
            model_inputs["rejected_attention_mask"].append([1] * len(rejected_ids))
            model_inputs["rejected_labels"].append(rejected_labels)
            model_inputs["images"].append(examples["_images"][i])
            model_inputs["rejected_images"].append(rejected_side["images"])
            model_inputs["videos"].append(examples["_videos"][i])
            model_inputs["audios"].append(examples["_audios"][i])
            model_inputs["pair_kind"].append(KIND_IDS[rejected_side["kind"]])

        return model_inputs


@dataclass
class EMPODataCollator(PairwiseDataCollatorWithPadding):
    r"""LLaMA-Factory's pairwise collator with each side's own images and a `pair_kinds` tensor."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, "torch.Tensor"]:
        kinds = torch.tensor([feature.get("pair_kind", 0) for feature in features], dtype=torch.long)
        concatenated_features = []
        for key in ("chosen", "rejected"):
            for feature in features:
                images = feature["images"] if key == "chosen" else feature.get("rejected_images", feature["images"])
                concatenated_features.append(
                    {
                        "input_ids": feature[f"{key}_input_ids"],
                        "attention_mask": feature[f"{key}_attention_mask"],
                        "labels": feature[f"{key}_labels"],
                        "images": images,
                        "videos": feature["videos"],
                        "audios": feature["audios"],
                    }
                )

        batch = MultiModalDataCollatorForSeq2Seq.__call__(self, concatenated_features)
        batch["pair_kinds"] = kinds
        return batch


def _load(
    names: list[str] | None,
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
) -> "list[Dataset]":
    r"""Registered ranking datasets aligned by LLaMA-Factory's loader through the pair converters."""
    if names is None:
        return []

    register_pair_converters()
    datasets = []
    for name, dataset_attr in zip(names, get_dataset_list(names, data_args.dataset_dir)):
        if not dataset_attr.ranking:
            raise ValueError(
                f"Dataset {name} is not a ranking (pairwise) dataset: the empo stage trains on pairs. Make them with "
                "`llamafactory-fea data pairs`, or register your pairs with `ranking: true`."
            )

        if dataset_attr.formatting not in CONVERTERS:
            raise ValueError(f"Dataset {name}: the empo stage reads {', '.join(CONVERTERS)} formatting only.")

        converter = f"{CONVERTER_PREFIX}{dataset_attr.formatting}"
        datasets.append(load_single_dataset(converter, dataset_attr, model_args, data_args, training_args))

    return datasets


def _preprocess(
    dataset: "Dataset",
    processor: EMPODatasetProcessor,
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    is_eval: bool = False,
) -> "Dataset":
    r"""Tokenize the pairs as LLaMA-Factory's `_get_preprocessed_dataset` does, with the EMPO processor."""
    dataset = dataset.map(
        processor.preprocess_dataset,
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        remove_columns=list(next(iter(dataset)).keys()),
        num_proc=data_args.preprocessing_num_workers,
        load_from_cache_file=(not data_args.overwrite_cache) or (training_args.local_process_index != 0),
        desc="Running tokenizer on pairs",
    )
    if training_args.should_log:
        if not len(dataset):
            raise ValueError("No valid pair left after tokenization: check the pairs' turns (user first, odd count).")

        print("eval example:" if is_eval else "training example:")
        processor.print_data_example(next(iter(dataset)))

    return dataset


def get_empo_dataset(
    template: "Template",
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    tokenizer: "PreTrainedTokenizer",
    processor: "ProcessorMixin | None" = None,
) -> "DatasetModule":
    r"""The train (and eval) pairs of the empo stage, loaded, mixed, split and tokenized in LLaMA-Factory's order."""
    if data_args.streaming:
        raise ValueError("The empo stage does not support `streaming`.")

    if data_args.tokenized_path is not None:
        logger.warning_rank0("`tokenized_path` is ignored by the empo stage: pairs are tokenized at load time.")

    load = partial(_load, model_args=model_args, data_args=data_args, training_args=training_args)
    with training_args.main_process_first(desc="load dataset", local=(not data_args.data_shared_file_system)):
        train, evals = load(data_args.dataset), load(data_args.eval_dataset)
        dataset = merge_dataset(train, data_args, seed=training_args.seed) if train else None
        if data_args.eval_on_each_dataset and evals:
            eval_dataset = dict(zip(data_args.eval_dataset, evals))
        else:
            eval_dataset = merge_dataset(evals, data_args, seed=training_args.seed) if evals else None

    dataset_processor = EMPODatasetProcessor(template, tokenizer, processor, data_args)
    with training_args.main_process_first(desc="pre-process dataset", local=(not data_args.data_shared_file_system)):
        train_dict, eval_dict = split_dataset(dataset, eval_dataset, data_args, seed=training_args.seed)
        if "train" in train_dict:
            train_dict["train"] = _preprocess(train_dict["train"], dataset_processor, data_args, training_args)

        for key in eval_dict:
            eval_dict[key] = _preprocess(eval_dict[key], dataset_processor, data_args, training_args, is_eval=True)

        return get_dataset_module(DatasetDict({**train_dict, **eval_dict}))
