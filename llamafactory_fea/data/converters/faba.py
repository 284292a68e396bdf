r"""FABA-Instruct: `{train,eval}/{train,eval}_{au,emotion}_anno.json` (LLaVA-style records) plus the images."""

import argparse
import json
import re
from pathlib import Path
from typing import Any

from ...fea.emotions import normalize_emotion
from ...fea.labels import AU_PATTERN, named_emotions
from ..files import RecordError, read_text
from ..records import FEARecord
from .base import (
    BenchmarkReport,
    add_common_arguments,
    check_image,
    image_reference,
    make_converter,
    parse_au_labels,
    question,
    require,
)


NAME = "faba"
SPLITS: dict[str, str] = {"train": "train", "test": "eval"}
# integer emotion labels of the FABA-Instruct annotations, in the order of the authors' evaluation code
LABELS: tuple[str, ...] = ("happiness", "sadness", "surprise", "anger", "neutral", "disgust", "fear")


def reference_text(entry: dict[str, Any]) -> str | None:
    r"""The reference description: `gpt4` (evaluation files) or the `gpt` turn of `conversations`."""
    if isinstance(entry.get("gpt4"), str):
        return entry["gpt4"].strip()

    for turn in entry.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from") == "gpt":
            return str(turn.get("value", "")).strip()

    return None


def emotion_of(entry: dict[str, Any], text: str | None, infer: bool, source: str, where: int) -> str:
    r"""The emotion of an emotion record: its `label` (0-6 or a word), or with `infer` the first emotion word."""
    label = entry.get("label")
    if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()):
        index = int(label)
        if not 0 <= index < len(LABELS):
            raise RecordError(source, where, f"emotion label {index} is outside 0-{len(LABELS) - 1}.")

        return LABELS[index]

    if isinstance(label, str) and label.strip():
        try:
            return normalize_emotion(label)
        except ValueError as error:
            raise RecordError(source, where, str(error)) from None

    if infer and named_emotions(text or ""):
        return named_emotions(text)[0]

    raise RecordError(source, where, "no emotion label; pass --infer-emotion to read it from the description.")


def aus_of(entry: dict[str, Any], text: str | None, source: str, where: int, report: BenchmarkReport) -> list[int]:
    r"""The AUs of an AU record: its `label` ("1, 2, 4" or a list), else the AUs its description names."""
    label = entry.get("label")
    if isinstance(label, list):
        tokens = [str(token) for token in label]
    elif isinstance(label, (str, int)) and str(label).strip():
        tokens = re.split(r"[,+\s]+", str(label))
    elif text:
        tokens = AU_PATTERN.findall(text)
    else:
        raise RecordError(source, where, "no AU label and no description to read AUs from.")

    return parse_au_labels(tokens, source, where, report)


def find_image(root: Path, split_folder: str, image: str) -> Path:
    r"""Resolve an annotation's image path: relative to the folder above FABAInstruct/, to it, or to <split>/images."""
    candidates = [root.parent / image, root / image]
    if "/images/" in image:
        candidates.append(root / split_folder / "images" / image.split("/images/", 1)[1])

    return next((path for path in candidates if path.is_file()), candidates[0])


def _load(path: Path) -> list[Any]:
    r"""A JSON list of annotations, raising `RecordError` on bad JSON."""
    try:
        entries = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise RecordError(str(path), error.lineno, f"broken JSON: {error.msg}.") from None

    if not isinstance(entries, list):
        raise RecordError(str(path), None, "expected a JSON list of annotations.")

    return entries


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""Merge the AU and emotion annotations of each image into one record (keyed by `id`, else the image path).

    A record is an image: one with a bad annotation is rejected whole; an annotation that names no image is rejected
    as one input.
    """
    root = Path(args.source_dir)
    dataset_dir, prompt = Path(args.dataset_dir), question(NAME)
    splits: dict[str, list[FEARecord]] = {}
    for split, folder in SPLITS.items():
        merged: dict[str, dict[str, Any]] = {}
        paths = {task: root / folder / f"{folder}_{task}_anno.json" for task in ("au", "emotion")}
        if not any(path.is_file() for path in paths.values()):
            require(paths["emotion"], f"FABA-Instruct {folder}_emotion_anno.json (or {folder}_au_anno.json)", NAME)

        for task, path in paths.items():
            if not path.is_file():
                report.notes.append(f"{split}: no {path.name}, only the other task's annotations.")
                continue

            for index, entry in enumerate(_load(path)):
                where = index + 1  # the record's position in the list
                if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                    report.reject_input(RecordError(str(path), where, "expected an object with an 'image' path."))
                    continue

                key = str(entry.get("id") or Path(entry["image"]).with_suffix("").as_posix())
                item = merged.setdefault(
                    key, {"image": entry["image"], "source": str(path), "where": where, "errors": []}
                )
                try:
                    if task in item:
                        raise RecordError(str(path), where, f"duplicate {task} annotation for {key!r}.")

                    text = reference_text(entry)
                    if task == "au":
                        item["au"] = (aus_of(entry, text, str(path), where, report), text)
                    else:
                        item["emotion"] = (emotion_of(entry, text, args.infer_emotion, str(path), where), text)
                except RecordError as error:
                    item["errors"].append(error)

        records = []
        for key, item in merged.items():
            report.read += 1
            if item["errors"]:
                first, *others = item["errors"]
                report.reject(
                    RecordError(first.source, first.where, "".join([first.reason, *(f" Also {e}" for e in others)]))
                )
                continue

            if args.require_both and not {"au", "emotion"} <= set(item):
                report.exclude(f"{split}: only one of the AU / emotion annotations (--require-both)")
                continue

            image = find_image(root, folder, item["image"])
            try:
                check_image(image, item["source"], item["where"], args.verify_images)
            except RecordError as error:
                report.reject(error)
                continue

            aus, au_text = item.get("au", (None, None))
            emotion, emotion_text = item.get("emotion", (None, None))
            records.append(
                FEARecord(
                    id=f"{NAME}_{key}",
                    image=image_reference(image, dataset_dir),
                    emotion=emotion,
                    aus=aus,
                    reasoning="\n\n".join(text for text in (au_text, emotion_text) if text) or None,
                    dataset=NAME,
                    question=prompt,
                    extra={"au_labelled": "au" in item, "reference_au": au_text, "reference_emotion": emotion_text},
                )
            )

        splits[split] = records

    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""FABA-Instruct options."""
    add_common_arguments(parser, "The FABAInstruct folder (holding train/ and eval/).")
    parser.add_argument(
        "--infer-emotion", action="store_true", help="Emotion records without a label: take the first emotion word."
    )
    parser.add_argument(
        "--require-both", action="store_true", help="Keep only images with both an AU and an emotion annotation."
    )


make_converter(NAME, "FABA-Instruct AU and emotion descriptions, merged per image.", add_arguments, convert)
