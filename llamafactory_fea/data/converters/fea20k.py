r"""FEA-20K (the Facial-R1 release, annotations only) to registered LLaMA-Factory sharegpt rows.

The reference reasoning (`description`) becomes the `<think>` text. The user turn is the plugin's FEA question
(the same one SFT, GRPO and evaluation use) unless `--keep-question` keeps each record's own `question`.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...fea.aus import parse_au
from ...fea.emotions import LABEL_SPACES, normalize_emotion
from ...fea.prompts import FEAPrompts
from ..files import RecordError, json_lines, record_error
from ..records import FEARecord, read_dataset_info
from ..validate import IMAGE_TOKEN, RowChecker
from .base import DEFAULT_DATASET_DIR, ConversionReport, Converter, register_converter, write_outputs


NAME = "fea20k"
SPLITS = ("train", "test")
LABEL_SPACE = LABEL_SPACES[NAME]
# field: (accepted types, required)
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str, int), True),
    "image": ((str,), True),
    "AUs": ((list,), True),
    "labels": ((list,), True),
    "description": ((str,), True),
    "question": ((str,), False),
    "dataset": ((str,), False),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea data convert fea20k`."""
    parser.description = (
        "Convert FEA-20K annotation files (JSON lines) into registered sharegpt datasets fea20k_train and "
        "fea20k_test (files fea20k/train.jsonl, fea20k/test.jsonl). Every rejected record is printed with its "
        "file, line, id and fix. Exit status: 0 when every record was converted; 1 when any record was rejected "
        "(then nothing is written and previous outputs stay as they were) unless --allow-rejects is given, which "
        "writes the good records and exits 0; 1 when nothing could be written. All files are written together or "
        "none; past 20 rejections the full list goes to <dataset-dir>/fea20k/rejected.txt."
    )
    parser.add_argument("--train", default=None, help="FEA-20K train annotations (JSONL).")
    parser.add_argument("--test", default=None, help="FEA-20K test annotations (JSONL).")
    parser.add_argument(
        "--image-dir",
        default=None,
        help="Folder the records' relative image paths start from (default: their file's).",
    )
    parser.add_argument(
        "--dataset-dir", default=DEFAULT_DATASET_DIR, help="Folder with dataset_info.json to write into."
    )
    parser.add_argument("--keep-question", action="store_true", help="Use each record's question, not the FEA one.")
    parser.add_argument("--prompts", default=None, help="JSON file of FEAPrompts templates for the question.")
    parser.add_argument(
        "--allow-rejects", action="store_true", help="Write the good records even if some are rejected (exit 0)."
    )


def _field_problems(record: dict[str, Any]) -> list[str]:
    r"""Missing required fields and fields of the wrong type."""
    problems = []
    for name, (types, required) in FIELDS.items():
        value = record.get(name)
        if value is None:
            if required:
                problems.append(
                    f"missing field {name!r}: every record needs {', '.join(n for n, f in FIELDS.items() if f[1])}."
                )
        elif not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in types)
            problems.append(f"field {name!r} must be {expected}, got {type(value).__name__}.")

    if not problems and not all(isinstance(item, (str, int)) for item in record["AUs"]):
        problems.append('\'AUs\' must be a list of AU names, e.g. ["AU1", "AU4"].')

    if not problems and not all(isinstance(item, str) for item in record["labels"]):
        problems.append("'labels' must be a list of emotion words, e.g. [\"Sadness\"].")

    return problems


def _labels(record: dict[str, Any]) -> tuple[str, list[int]]:
    r"""The record's normalised emotion and sorted AU numbers; raises ValueError with the fix."""
    emotions = {normalize_emotion(label, LABEL_SPACE) for label in record["labels"]}
    if len(emotions) != 1:
        raise ValueError(f"'labels' must name exactly one emotion, got {record['labels']}.")

    if not record["description"].strip():
        raise ValueError("'description' (the reasoning) is empty: write the reasoning text.")

    return emotions.pop(), sorted({parse_au(au) for au in record["AUs"]})


def _image_path(image: str, image_dir: Path, dataset_dir: Path) -> str:
    r"""The image path for the row: relative to the dataset folder when the image lies under it, else absolute."""
    path, root = Path(os.path.abspath(image_dir / image)), Path(os.path.abspath(dataset_dir))
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


@dataclass
class _Context:
    r"""What converting one file needs: the row checker, folders and the question."""

    checker: RowChecker
    image_dir: Path
    dataset_dir: Path
    question: str
    keep_question: bool


def _question(record: dict[str, Any], context: _Context) -> str:
    r"""The user turn's text: the FEA question, or the record's own (without its image token) if kept."""
    own = (record.get("question") or "").replace(IMAGE_TOKEN, "").strip()
    return own if context.keep_question and own else context.question


def _to_record(record: dict[str, Any], context: _Context) -> FEARecord:
    r"""Build the output record of one input record; raises ValueError (with the fix) on a bad label."""
    emotion, aus = _labels(record)
    return FEARecord(
        id=str(record["id"]),
        image=_image_path(record["image"], context.image_dir, context.dataset_dir),
        emotion=emotion,
        aus=aus,
        reasoning=record["description"].strip(),
        dataset=NAME,
        question=_question(record, context),
        extra={"source": record.get("dataset") or ""},
    )


def _convert_record(record: Any, source: str, line: int, context: _Context) -> dict[str, Any]:
    r"""One input record to an output row, or a `RecordError` naming the file, line, id and fix."""
    if isinstance(record, RecordError):  # a broken JSON line
        raise record

    if not isinstance(record, dict):
        raise record_error(source, line, None, f"a record must be a JSON object, got {type(record).__name__}.")

    problems = _field_problems(record)
    if problems:
        raise record_error(source, line, record.get("id"), " ".join(problems))

    try:
        row = _to_record(record, context).to_row()
    except ValueError as error:  # UnknownEmotionError, UnknownAUError and label faults
        raise record_error(source, line, record["id"], str(error)) from None

    errors = context.checker.check(row, source, line)
    if errors:
        raise record_error(source, line, record["id"], " ".join(error.reason for error in errors))

    return row


def _convert_file(path: Path, context: _Context, report: ConversionReport) -> list[dict[str, Any]]:
    r"""Convert one annotation file; rejected records go to the report."""
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "file not found"
        report.reject_input(RecordError(str(path), None, f"{problem}: fix the --train/--test path."))
        return []

    rows = []
    for line, record in json_lines(path):
        report.read += 1
        try:
            rows.append(_convert_record(record, str(path), line, context))
        except RecordError as error:
            report.reject(error)

    return rows


def run(args: argparse.Namespace) -> ConversionReport:
    r"""Convert the given splits; write them (atomically) and register them only under the exit-code policy."""
    read_dataset_info(args.dataset_dir)  # a registry that cannot be updated stops the run before any input is read
    report = ConversionReport(source=NAME)
    inputs = {split: getattr(args, split) for split in SPLITS if getattr(args, split)}
    if not inputs:
        report.notes.append("Nothing to convert: give --train and/or --test.")
        return report

    try:
        prompts = FEAPrompts.from_file(args.prompts) if args.prompts else FEAPrompts()
    except (OSError, ValueError) as error:
        report.notes.append(f"Nothing converted: cannot use --prompts {args.prompts}: {error}")
        return report

    dataset_dir, checker, outputs = Path(args.dataset_dir), RowChecker(Path(args.dataset_dir)), {}
    for split, path in inputs.items():
        image_dir = Path(args.image_dir) if args.image_dir else Path(path).parent
        context = _Context(checker, image_dir, dataset_dir, prompts.question(LABEL_SPACE), args.keep_question)
        outputs[split] = _convert_file(Path(path), context, report)

    return write_outputs(NAME, dataset_dir, outputs, report, args.allow_rejects)


register_converter(
    Converter(
        name=NAME, help="FEA-20K annotations (Facial-R1) with your images.", add_arguments=add_arguments, run=run
    )
)
