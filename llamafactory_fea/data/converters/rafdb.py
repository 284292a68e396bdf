r"""RAF-DB (basic): `EmoLabel/list_patition_label.txt` plus `Image/aligned/*_aligned.jpg`; labels 1..7."""

import argparse
from pathlib import Path

from ..files import RecordError, text_lines
from ..records import FEARecord
from .base import (
    BenchmarkReport,
    add_common_arguments,
    check_image,
    image_reference,
    make_converter,
    question,
    require,
)


NAME = "rafdb"
LABELS: dict[int, str] = {
    1: "surprise",
    2: "fear",
    3: "disgust",
    4: "happiness",
    5: "sadness",
    6: "anger",
    7: "neutral",
}
LABEL_FILE = "EmoLabel/list_patition_label.txt"


def _image_path(root: Path, name: str, images: str) -> Path:
    r"""The image of a list entry: `Image/aligned/<stem>_aligned.jpg` or `Image/original/<name>`."""
    if images == "aligned":
        return root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"

    return root / "Image" / "original" / name


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""Read the RAF-DB basic list file; the split is the file name's prefix (train_ / test_)."""
    root = Path(args.source_dir)
    label_file = require(root / LABEL_FILE, "the RAF-DB label list", NAME)
    dataset_dir, prompt = Path(args.dataset_dir), question(NAME)
    splits: dict[str, list[FEARecord]] = {"train": [], "test": []}
    for number, line in text_lines(label_file):
        if isinstance(line, str) and not line.strip():
            continue

        report.read += 1
        try:
            if isinstance(line, RecordError):
                raise line

            fields = line.split()
            if len(fields) != 2 or not fields[1].isdigit():
                raise RecordError(str(label_file), number, f"expected '<image name> <label 1-7>', got {line!r}.")

            name, label = fields[0], int(fields[1])
            if label not in LABELS:
                raise RecordError(str(label_file), number, f"unknown emotion label {label}: RAF-DB uses 1-7.")

            split = name.split("_", 1)[0]
            if split not in splits:
                raise RecordError(str(label_file), number, f"{name!r} starts with neither train_ nor test_.")

            image = _image_path(root, name, args.images)
            check_image(image, str(label_file), number, args.verify_images)
        except RecordError as error:
            report.reject(error)
            continue

        splits[split].append(
            FEARecord(
                id=f"{NAME}_{Path(name).stem}",
                image=image_reference(image, dataset_dir),
                emotion=LABELS[label],
                aus=None,
                dataset=NAME,
                question=prompt,
                extra={"au_labelled": False},
            )
        )

    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""RAF-DB options."""
    add_common_arguments(parser, "The RAF-DB 'basic' folder (holding EmoLabel/ and Image/).")
    parser.add_argument(
        "--images", choices=("aligned", "original"), default="aligned", help="Which RAF-DB images to use."
    )


make_converter(NAME, "RAF-DB basic emotion labels (7 classes).", add_arguments, convert)
