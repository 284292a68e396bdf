r"""GRPO datasets from LLaMA-Factory's registered datasets, keeping the labels the rewards need.

Each registered dataset is loaded by LLaMA-Factory's own loader through the label-keeping converters of
`train/labelled_data.py` (labels normalised there, from the `emotion`/`aus` columns, else read from the reference
assistant turn), then rendered into GRPO rows.

A row of the result: `prompt` (the user turns rendered by LLaMA-Factory's template, one unexpanded image token per
image), `images` (PIL images with LLaMA-Factory's `image_max_pixels`/`image_min_pixels`, loaded on access), `emotion`,
`aus`, `solution` (the reference assistant turn) and, with `au_frequency_weighting`, `au_weight`. A label a row does
not have is null (`emotion` of an AU-only source, `aus` of an emotion-only one; `aus: []` is "no active AU"): the
rewards reading it give that row None, which TRL leaves out of the reward sum and of that reward's logged mean.
"""

import copy
import inspect
from functools import partial
from typing import TYPE_CHECKING, Any

from datasets import DatasetDict, Features, Sequence, Value
from llamafactory.data.data_utils import get_dataset_module, merge_dataset, split_dataset
from llamafactory.data.parser import get_dataset_list

from ...rewards import AU_WEIGHT_COLUMN, REWARDS, au_frequency_weights, get_reward
from ...seam import regularize_images
from .._logging import get_logger
from ..labelled_data import check_image, decode_labels, load_labelled_dataset


if TYPE_CHECKING:
    from datasets import Dataset
    from llamafactory.data import Template
    from llamafactory.data.data_utils import DatasetModule
    from llamafactory.data.mm_plugin import BasePlugin
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import PreTrainedTokenizer, ProcessorMixin, Seq2SeqTrainingArguments

    from .args import GRPOArguments


logger = get_logger(__name__)

LABELS = ("emotion", "aus", "solution")  # of the converters' JSON column (its `id` and `dataset` serve synthesis)
REWARD_LABELS = ("emotion", "aus")  # a registered reward reads those its signature names
FEATURES = Features(
    {
        "prompt": Value("string"),
        "image_paths": Sequence(Value("string")),
        "emotion": Value("string"),
        "aus": Sequence(Value("int64")),
        "solution": Value("string"),
    }
)


def _to_grpo_row(
    example: dict[str, Any],
    index: int,
    name: str,
    template: "Template",
    plugin: "BasePlugin",
    tokenizer: "PreTrainedTokenizer",
    processor: "ProcessorMixin | None",
) -> dict[str, Any]:
    r"""Render an aligned example's prompt with the template (as the sft stage would) and unpack its labels."""
    if example["_videos"] or example["_audios"]:
        raise ValueError("The grpo stage supports image and text prompts only: remove videos and audios.")

    labels = decode_labels(example)
    images = example["_images"] or []
    for image in images:
        if isinstance(image, str):
            check_image(name, labels["id"], index, image)

    messages = example["_prompt"] + [{"role": "assistant", "content": labels["solution"]}]
    messages = plugin.process_messages(messages, images, [], [], processor)
    prompt_ids, _ = template.encode_oneturn(tokenizer, messages, example["_system"], example["_tools"])
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return {"prompt": prompt, "image_paths": images, **{key: labels[key] for key in LABELS}}


def needed_labels(reward_funcs: list[str]) -> dict[str, frozenset[str]] | None:
    r"""The label columns each chosen reward reads, from the signatures of the registered ones; None with a user reward.

    >>> needed_labels(["fea_format", "fea_emotion", "fea_au_f1"])
    {'fea_format': frozenset(), 'fea_emotion': frozenset({'emotion'}), 'fea_au_f1': frozenset({'aus'})}
    """
    needs = {}
    for name in reward_funcs:
        func = get_reward(name)
        if func not in REWARDS.values():
            return None  # what a user's reward needs is unknown

        needs[name] = frozenset(REWARD_LABELS) & frozenset(inspect.signature(func).parameters)

    return needs


def _check_labels(name: str, rows: int, counts: dict[str, int], reward_funcs: list[str]) -> None:
    r"""Refuse a dataset in which no row has any label the chosen rewards read (`counts`: rows with each label)."""
    needs = needed_labels(reward_funcs)
    if needs is None or any(counts[column] for labels in needs.values() for column in labels):
        return

    readers = ", ".join(f"{reward} ({'/'.join(sorted(labels))})" for reward, labels in needs.items() if labels)
    if not readers:  # the rewards read no label
        return

    unlabelled = ", ".join(reward for reward, labels in needed_labels(list(REWARDS)).items() if not labels)
    raise ValueError(
        f"Dataset {name}: none of its {rows} rows has a label that the rewards {readers} read, so they would grade "
        "nothing. Give its rows `emotion`/`aus` columns, or reference answers whose <answer> names the emotion and "
        f"whose <think> names the AUs (AU4), or choose rewards that read no label ({unlabelled})."
    )


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
        return {**batch, "images": [self._open(row) for row in paths]}

    def _open(self, paths: list[str]) -> list[Any]:
        r"""The images of one row; an image that opened at load time but cannot be decoded now is named."""
        try:
            return regularize_images(self.plugin, paths, **self.limits) if paths else []
        except Exception as err:  # a truncated file passes the load-time header check
            raise ValueError(
                f"An image of {', '.join(paths)} cannot be decoded ({type(err).__name__}: {err}): replace the file "
                "or remove its record from the dataset."
            ) from err


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

        aligned = load_labelled_dataset(name, dataset_attr, model_args, data_args, training_args, "the grpo stage")
        dataset = aligned.map(
            partial(to_row, name=name),
            with_indices=True,
            remove_columns=aligned.column_names,
            features=FEATURES,
            num_proc=data_args.preprocessing_num_workers,
            load_from_cache_file=(not data_args.overwrite_cache) or (training_args.local_process_index != 0),
            desc=f"Rendering GRPO prompts of {name}",
        )
        if grpo_args.au_frequency_weighting != "none":
            weights = au_frequency_weights(dataset["aus"], grpo_args.au_frequency_weighting)
            dataset = dataset.add_column(AU_WEIGHT_COLUMN, weights)

        counts = {column: sum(1 for value in dataset[column] if value is not None) for column in REWARD_LABELS}
        logger.info_rank0(
            f"GRPO dataset {name}: {len(dataset)} prompts, {counts['emotion']} with an emotion label, "
            f"{counts['aus']} with AU labels (a reward reading a label a row lacks gives that row None)."
        )
        _check_labels(name, len(dataset), counts, grpo_args.reward_funcs)
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
