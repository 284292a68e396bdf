r"""RAF-AU: `RAFAU_label.txt` (`0001.jpg 1+2+L12` or `null`) plus `aligned/0001_aligned.jpg`; emotions from RAF-ML."""

import argparse
from pathlib import Path

from ..files import RecordError, text_lines
from ..records import FEARecord
from .base import (
    BenchmarkReport,
    add_common_arguments,
    check_image,
    hash_split,
    image_reference,
    make_converter,
    number_option,
    parse_au_labels,
    question,
    require,
)


NAME = "raf_au"
LABEL_FILE = "RAFAU_label.txt"
RAF_ML_ORDER: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger")


def read_emotions(path: Path, report: BenchmarkReport) -> dict[str, str | None]:
    r"""Image name -> the emotion with the highest RAF-ML score (None on a tie), from distribution.txt.

    A malformed line is rejected (one input read and rejected); it names no record of the label file.
    """
    emotions: dict[str, str | None] = {}
    for number, line in text_lines(path):
        if isinstance(line, RecordError):
            report.reject_input(line)
            continue

        fields = line.split()
        if not fields:
            continue

        try:
            scores = [float(value) for value in fields[1:]]
        except ValueError:
            scores = []

        if len(scores) != len(RAF_ML_ORDER):
            report.reject_input(RecordError(str(path), number, f"expected a name and {len(RAF_ML_ORDER)} scores."))
            continue

        best = max(scores)
        winners = [emotion for emotion, score in zip(RAF_ML_ORDER, scores) if score == best]
        emotions[Path(fields[0]).stem] = winners[0] if len(winners) == 1 and best > 0 else None

    return emotions


def _test_names(args: argparse.Namespace) -> set[str] | None:
    r"""The image stems listed in `--test-ids`, or None to split by hash."""
    if not args.test_ids:
        return None

    names = set()
    for _, line in text_lines(args.test_ids):
        if isinstance(line, RecordError):
            raise line

        names.update(Path(name).stem for name in line.split())

    return names


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""One record per label line; `null` means no active AU; the split is `--test-ids` or a seeded hash."""
    root = Path(args.source_dir)
    label_file = require(root / LABEL_FILE, "RAFAU_label.txt", NAME)
    emotions = read_emotions(Path(args.emotion_file), report) if args.emotion_file else {}
    test_names, dataset_dir, prompt = _test_names(args), Path(args.dataset_dir), question(NAME)
    splits: dict[str, list[FEARecord]] = {"train": [], "test": []}
    no_emotion = 0
    for number, line in text_lines(label_file):
        if isinstance(line, str) and not line.split():
            continue

        report.read += 1
        try:
            if isinstance(line, RecordError):
                raise line

            fields = line.split()
            if len(fields) != 2:
                raise RecordError(
                    str(label_file), number, f"expected '<image> <AUs joined by +, or null>', got {line!r}."
                )

            name, codes = fields
            aus = (
                []
                if codes.lower() == "null"
                else parse_au_labels(codes.split("+"), str(label_file), number, report, args.strict_aus)
            )
            stem = Path(name).stem
            image = root / "aligned" / f"{stem}_aligned.jpg" if args.images == "aligned" else root / "original" / name
            check_image(image, str(label_file), number, args.verify_images)
        except RecordError as error:
            report.reject(error)
            continue

        emotion = emotions.get(stem)
        no_emotion += bool(args.emotion_file) and emotion is None

        in_test = (
            stem in test_names if test_names is not None else hash_split(stem, args.test_fraction, args.seed) == "test"
        )
        splits["test" if in_test else "train"].append(
            FEARecord(
                id=f"{NAME}_{stem}",
                image=image_reference(image, dataset_dir),
                emotion=emotion,
                aus=aus,
                dataset=NAME,
                question=prompt,
                extra={"au_labelled": True},
            )
        )

    if no_emotion:
        report.notes.append(f"{no_emotion} records kept with AU labels only: no single top emotion in --emotion-file.")

    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""RAF-AU options."""
    add_common_arguments(parser, "The RAF-AU folder holding RAFAU_label.txt and aligned/.")
    parser.add_argument("--images", choices=("aligned", "original"), default="aligned", help="Which images to use.")
    parser.add_argument("--emotion-file", default=None, help="RAF-ML distribution.txt: emotion = highest score.")
    parser.add_argument("--test-ids", default=None, help="File of test image names (else a seeded hash split).")
    parser.add_argument(
        "--test-fraction", type=number_option(float, 0, 1), default=0.2, help="Share of images in the hash test split."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the hash split.")
    parser.add_argument(
        "--strict-aus",
        action="store_true",
        help="Reject a record naming an AU outside the catalogue (default: drop it).",
    )


make_converter(NAME, "RAF-AU AU labels (null = none), optional RAF-ML emotions.", add_arguments, convert)
