r"""FERPlus: the `fer2013new.csv` label votes over FER2013's `fer2013.csv` pixels, reduced by majority vote."""

import argparse
from pathlib import Path

from ..files import RecordError
from ..records import FEARecord
from .base import BenchmarkReport, add_common_arguments, csv_records, make_converter, png_bytes, question, require
from .fer2013 import find_csv, pixels_to_image, read_rows


NAME = "ferplus"
VOTE_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FOLDERS: dict[str, str] = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def majority(votes: dict[str, int]) -> str | None:
    r"""FERPlus' 'majority' rule: drop single votes, then the top class needs more than half of the rest.

    Returns the emotion, or None when there is no such majority (a tie included) or the majority is unknown / NF.

    >>> majority(
    ...     {
    ...         "neutral": 4,
    ...         "happiness": 0,
    ...         "surprise": 0,
    ...         "sadness": 1,
    ...         "anger": 3,
    ...         "disgust": 2,
    ...         "fear": 0,
    ...         "contempt": 0,
    ...         "unknown": 0,
    ...         "NF": 0,
    ...     }
    ... ) is None
    True
    >>> majority({"neutral": 9, "sadness": 1})
    'neutral'
    """
    kept = {name: count for name, count in votes.items() if count > 1}
    total = sum(kept.values())
    if not total:
        return None

    top = max(kept, key=kept.get)
    if kept[top] * 2 <= total or top in ("unknown", "NF"):
        return None

    return top


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""Pair `fer2013new.csv` with `fer2013.csv` line by line; write the kept faces under their FERPlus names."""
    source = Path(args.source_dir)
    votes_file = require(source / "fer2013new.csv" if source.is_dir() else source, "fer2013new.csv", NAME)
    pixels_file = find_csv(Path(args.fer2013_csv) if args.fer2013_csv else votes_file.parent)
    prompt = question(NAME)
    splits: dict[str, list[FEARecord]] = {"train": [], "val": [], "test": []}
    split_of = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    vote_rows = list(csv_records(votes_file, ("Usage", "Image name", *VOTE_COLUMNS), "is this fer2013new.csv?"))
    pixel_rows = list(read_rows(pixels_file))
    if len(pixel_rows) != len(vote_rows):
        raise RecordError(
            str(votes_file),
            None,
            f"{len(vote_rows)} rows but {pixels_file} has {len(pixel_rows)}: the files must match.",
        )

    for (line, votes_row), (_, pixel_line, pixel_row) in zip(vote_rows, pixel_rows):
        report.read += 1
        try:
            for row in (votes_row, pixel_row):
                if isinstance(row, RecordError):
                    raise row

            usage, name = votes_row.get("Usage", "").strip(), votes_row.get("Image name", "").strip()
            if usage != pixel_row.get("Usage", "").strip() or usage not in FOLDERS:
                raise RecordError(
                    str(votes_file), line, f"Usage {usage!r} differs from fer2013.csv line {pixel_line}."
                )

            if not name:
                report.exclude("no image name in fer2013new.csv (not a face)")
                continue

            try:
                votes = {column: int(votes_row.get(column, "")) for column in VOTE_COLUMNS}
            except ValueError:
                raise RecordError(str(votes_file), line, "vote counts must be integers.") from None

            emotion = majority(votes)
            if emotion is None:
                report.exclude("no majority emotion (tie, unknown or not a face)")
                continue

            image = pixels_to_image(pixel_row.get("pixels", ""), str(pixels_file), pixel_line)
        except RecordError as error:
            report.reject(error)
            continue

        relative = f"{NAME}/images/{FOLDERS[usage]}/{Path(name).stem}.png"
        report.images[relative] = png_bytes(image)
        splits[split_of[usage]].append(
            FEARecord(
                id=f"{NAME}_{Path(name).stem}",
                image=relative,
                emotion=emotion,
                aus=None,
                dataset=NAME,
                question=prompt,
                extra={"au_labelled": False, "votes": votes},
            )
        )

    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""FERPlus options."""
    add_common_arguments(parser, "fer2013new.csv, or the folder holding it.")
    parser.add_argument("--fer2013-csv", default=None, help="FER2013's fer2013.csv (default: next to fer2013new.csv).")


make_converter(NAME, "FERPlus majority-vote labels over FER2013 (8 classes).", add_arguments, convert)
