r"""FER2013: the pixels CSV `emotion,pixels,Usage` (48x48 grey faces), written out as PNG images; labels 0..6."""

import argparse
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ..files import RecordError
from ..records import FEARecord
from .base import BenchmarkReport, add_common_arguments, csv_records, make_converter, png_bytes, question


NAME = "fer2013"
LABELS: dict[int, str] = {
    0: "anger",
    1: "disgust",
    2: "fear",
    3: "happiness",
    4: "sadness",
    5: "surprise",
    6: "neutral",
}
SIDE = 48
USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
CSV_NAMES: tuple[str, ...] = ("fer2013.csv", "fer2013/fer2013.csv", "icml_face_data.csv")


def find_csv(source: Path) -> Path:
    r"""The pixels CSV: the given file, or fer2013.csv (or Kaggle's icml_face_data.csv) inside the given folder."""
    if source.is_file():
        return source

    for name in CSV_NAMES:
        if (source / name).is_file():
            return source / name

    raise RecordError(str(source), None, f"no {' or '.join(CSV_NAMES)} here; see docs/benchmarks.md for the layout.")


def pixels_to_image(pixels: str, source: str, where: int) -> Image.Image:
    r"""A 48x48 grey image from the space-separated pixel string, raising `RecordError` if it is malformed."""
    values = pixels.split()
    if len(values) != SIDE * SIDE:
        raise RecordError(source, where, f"expected {SIDE * SIDE} pixel values, got {len(values)}.")

    try:
        data = bytes(int(value) for value in values)
    except ValueError:
        raise RecordError(source, where, "pixel values must be integers 0-255.") from None

    return Image.frombytes("L", (SIDE, SIDE), data)


def read_rows(path: Path) -> Iterator[tuple[int, int, "dict[str, str] | RecordError"]]:
    r"""Yield (data row index from 0, line number, row or the line's `RecordError`) of the pixels CSV."""
    rows = csv_records(path, ("emotion", "pixels", "Usage"), "expected emotion,pixels,Usage.")
    for index, (line, row) in enumerate(rows):
        yield index, line, row


def image_file(usage: str, index: int) -> str:
    r"""Where the PNG of a data row goes, relative to the dataset folder."""
    return f"{NAME}/images/{usage}/{index:05d}.png"


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""Label every valid row; its PNG goes to `<dataset-dir>/fer2013/images/<Usage>/` with the splits."""
    path = find_csv(Path(args.source_dir))
    prompt = question(NAME)
    split_of = {"Training": "train", "PrivateTest": "test", "PublicTest": args.public_test}
    splits: dict[str, list[FEARecord]] = {"train": [], "val": [], "test": []}
    for index, line, row in read_rows(path):
        report.read += 1
        try:
            if isinstance(row, RecordError):
                raise row

            usage, label = row.get("Usage", "").strip(), row.get("emotion", "").strip()
            if usage not in USAGES:
                raise RecordError(str(path), line, f"Usage {usage!r} is not one of {', '.join(USAGES)}.")

            if not label.isdigit() or int(label) not in LABELS:
                raise RecordError(str(path), line, f"emotion {label!r} is not a FER2013 label 0-6.")

            image = pixels_to_image(row.get("pixels", ""), str(path), line)
        except RecordError as error:
            report.reject(error)
            continue

        if split_of[usage] == "skip":
            report.exclude("PublicTest left out (--public-test skip)")
            continue

        relative = image_file(usage, index)
        report.images[relative] = png_bytes(image)
        splits[split_of[usage]].append(
            FEARecord(
                id=f"{NAME}_{usage}_{index:05d}",
                image=relative,
                emotion=LABELS[int(label)],
                aus=None,
                dataset=NAME,
                question=prompt,
                extra={"au_labelled": False},
            )
        )

    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""FER2013 options."""
    add_common_arguments(parser, "fer2013.csv, or the folder holding it.")
    parser.add_argument(
        "--public-test",
        choices=("val", "train", "test", "skip"),
        default="val",
        help="Where the PublicTest rows go (PrivateTest is the test split; 'val' registers fer2013_val).",
    )


make_converter(NAME, "FER2013 pixels CSV (7 classes; PrivateTest as test).", add_arguments, convert)
