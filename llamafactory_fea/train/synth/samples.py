r"""Labelled samples for synthesis, loaded by LLaMA-Factory's own loader with the plugin's label-keeping converters.

`dataset_dir`, `media_dir`, `num_samples`, `max_samples`, hub or file datasets work as in any stage; the converters
of `train/labelled_data.py` keep the labels (the `emotion`/`aus` columns, else parsed from the reference answer) and
each row's `id` and `dataset`, so a restarted run finds its place by id. A sample may have an emotion, AU labels or
both (None: not labelled; `aus: ()`: labelled, no AU active); one with neither is skipped as `no_labels`, one whose
emotion is not an FEA emotion as `unknown_emotion`. The image of every sample to synthesize is opened at load time
(its header, nothing decoded): a missing or corrupt one is said at once (dataset, record, path) and its sample skipped
as `unreadable_image`, as a sample without an image is skipped (`no_image`): one bad face does not stop a synthesis of
thousands, and the report counts it.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llamafactory.data.parser import get_dataset_list
from llamafactory.extras.constants import IMAGE_PLACEHOLDER

from ...fea.emotions import BASIC_EMOTIONS, EMOTIONS
from ...fea.prompts import FEAPrompts, label_space_of
from .._logging import get_logger
from ..labelled_data import check_image, decode_labels, load_labelled_dataset


if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments, ModelArguments
    from PIL.Image import Image
    from transformers import Seq2SeqTrainingArguments


logger = get_logger(__name__)

NO_LABELS = "no_labels"
UNKNOWN_EMOTION = "unknown_emotion"
NO_IMAGE = "no_image"
UNREADABLE_IMAGE = "unreadable_image"


@dataclass(frozen=True)
class SynthSample:
    r"""One labelled face to synthesize reasoning for (a label None: not labelled); `problem`: why it is skipped."""

    key: str
    index: int
    id: str
    source: str
    image: str | None
    emotion: str | None
    aus: tuple[int, ...] | None
    question: str
    label_space: tuple[str, ...] = BASIC_EMOTIONS
    dataset: str = "fea"
    problem: str | None = None

    def load_image(self) -> "Image":
        r"""Open and decode the image (RGB); raises `OSError`/`ValueError` for a missing or corrupt file."""
        from PIL import Image

        if not self.image:
            raise ValueError("the sample has no image")

        with Image.open(self.image) as image:
            image.load()
            return image.convert("RGB")


def _question(prompt: list[dict[str, str]]) -> str:
    r"""The text of the first user turn without image placeholders."""
    for message in prompt:
        if message.get("role") == "user":
            return message.get("content", "").replace(IMAGE_PLACEHOLDER, "").strip()

    return ""


def _sample(name: str, position: int, example: dict[str, Any], index: int, prompts: FEAPrompts) -> SynthSample:
    r"""A sample of an aligned example; its key is `<dataset name>/<id>` (the row position when it has no id)."""
    labels = decode_labels(example)
    emotion = labels["emotion"]
    aus = None if labels["aus"] is None else tuple(labels["aus"])
    dataset = str(labels["dataset"] or "fea")
    label_space = label_space_of(dataset, emotion)  # any spelling of the source ("RAF-DB")

    images = example["_images"] or []
    image = os.path.abspath(images[0]) if images and isinstance(images[0], str) else None
    problem = None
    if emotion is None and aus is None:
        problem = NO_LABELS
    elif emotion is not None and emotion not in EMOTIONS:
        problem = UNKNOWN_EMOTION
    elif image is None:
        problem = NO_IMAGE

    sample_id = str(labels["id"] if labels["id"] is not None else position)
    return SynthSample(
        key=f"{name}/{sample_id}",
        index=index,
        id=sample_id,
        source=name,
        image=image,
        emotion=emotion,
        aus=aus,
        question=_question(example["_prompt"]) or prompts.question(label_space),
        label_space=label_space,
        dataset=dataset,
        problem=problem,
    )


def load_samples(
    dataset_names: list[str],
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    prompts: FEAPrompts | None = None,
) -> list[SynthSample]:
    r"""The labelled samples of registered datasets in source order, each with a unique, stable key."""
    if data_args.streaming:
        raise ValueError("Synthesis does not support `streaming`: it resumes by position in a map-style dataset.")

    prompts = prompts or FEAPrompts()
    samples: list[SynthSample] = []
    seen: set[str] = set()
    for name, dataset_attr in zip(dataset_names, get_dataset_list(dataset_names, data_args.dataset_dir)):
        aligned = load_labelled_dataset(name, dataset_attr, model_args, data_args, training_args, "synthesis")
        first = len(samples)
        for position, example in enumerate(aligned):
            sample = _sample(name, position, example, len(samples), prompts)
            if sample.key in seen:  # a repeated id still gets its own key, stable across runs
                sample = SynthSample(**{**sample.__dict__, "key": f"{sample.key}#{position}"})

            seen.add(sample.key)
            samples.append(sample)

        samples[first:] = _check_images(samples[first:], data_args.preprocessing_num_workers)

    return samples


def _check_images(samples: list[SynthSample], workers: int | None) -> list[SynthSample]:
    r"""Open the image of every sample to synthesize (header only); one that does not open is said and skipped."""

    def checked(sample: SynthSample) -> SynthSample:
        if sample.problem is not None:
            return sample

        try:
            check_image(sample.source, sample.id, sample.index, sample.image)
        except ValueError as err:
            logger.warning_rank0(f"{err} Its sample is skipped ({UNREADABLE_IMAGE}).")
            return replace(sample, problem=UNREADABLE_IMAGE)

        return sample

    with ThreadPoolExecutor(max_workers=workers or 1) as pool:  # reading headers waits on the disk, not the CPU
        return list(pool.map(checked, samples))
