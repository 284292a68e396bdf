r"""The converter registry and what every converter shares: its report, record and image checks, splits, outputs."""

import argparse
import csv
import hashlib
import io
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...fea.aus import UnknownAUError, parse_au
from ...fea.emotions import LABEL_SPACES
from ...fea.prompts import FEAPrompts
from ...registry import Registry
from ..files import RecordError, atomic_write, jsonl, text_lines, write_files
from ..records import DATASET_INFO, FEARecord, dataset_info_entry, read_dataset_info, registry_text, typed_first
from ..validate import image_problem


if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


SHOWN_REJECTIONS = 20  # the summary prints this many rejections; the full list goes to REJECTED_FILE
REJECTED_FILE = "rejected.txt"


@dataclass
class ConversionReport:
    r"""What a conversion did: records read, written per split, and each rejected record with its reason.

    Every record read is counted once: written, rejected, or (`BenchmarkReport`) excluded by a documented rule. A
    piece of input that holds no readable record (a broken line, an unusable file) counts as one record read and
    rejected.
    """

    source: str
    read: int = 0
    written: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why nothing (or a split) was written
    rejected_file: Path | None = None  # the full list of rejections, when the summary shows only the first ones

    def reject(self, error: Exception) -> None:
        r"""Record a rejected input with its reason (the error names file, line and fix)."""
        self.rejected.append(str(error))

    def reject_input(self, error: Exception) -> None:
        r"""Count a piece of input that holds no readable record (a broken line, an unusable file) as read and rejected."""
        self.read += 1
        self.reject(error)

    def reasons(self) -> Counter:
        r"""Rejections counted by reason (the text after the location)."""
        return Counter(message.split(": ", 1)[-1].split(":")[0] for message in self.rejected)

    def summary(self) -> str:
        r"""A few lines for people: counts, the first rejected records, the registered datasets, then the notes."""
        written = ", ".join(f"{split} {count}" for split, count in self.written.items()) or "none"
        lines = [f"{self.source}: read {self.read}, written {written}, rejected {len(self.rejected)}."]
        lines += [f"  rejected {message}" for message in self.rejected[:SHOWN_REJECTIONS]]
        hidden = len(self.rejected) - SHOWN_REJECTIONS
        if hidden > 0:
            listed = f": every one is listed in {self.rejected_file}" if self.rejected_file else "."
            lines.append(f"  ... and {hidden} more rejected{listed}")

        if self.registered:
            lines.append(f"  registered datasets: {', '.join(self.registered)}")

        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class Converter:
    r"""A source dataset converter: its command-line options and the function that runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], ConversionReport]


CONVERTERS: Registry[Converter] = Registry("converter")


def register_converter(converter: Converter) -> Converter:
    r"""Register a converter under its name; duplicates are refused."""
    return CONVERTERS.register(converter.name, converter)


DEFAULT_DATASET_DIR = "data_registry"


@dataclass
class BenchmarkReport(ConversionReport):
    r"""A conversion report that also counts records left out by a documented rule and AUs removed from labels."""

    excluded: Counter = field(default_factory=Counter)
    dropped_aus: Counter = field(default_factory=Counter)
    images: dict[str, bytes] = field(default_factory=dict, repr=False)  # encoded images to write with the splits

    def exclude(self, reason: str) -> None:
        r"""Count a record left out by the dataset's documented rule (not an error), e.g. AffectNet's 'non-face'."""
        self.excluded[reason] += 1

    def summary(self) -> str:
        r"""The base summary plus the excluded counts and the AUs removed from labels."""
        lines = [super().summary()]
        lines += [f"  excluded {count} by rule: {reason}" for reason, count in sorted(self.excluded.items())]
        lines += [
            f"  removed AU{au} from {count} label sets: not in the AU catalogue"
            for au, count in sorted(self.dropped_aus.items())
        ]
        return "\n".join(lines)


def check_image(path: Path, source: str, where: "int | str | None", verify: bool = True) -> None:
    r"""Raise `RecordError` if the image is missing or (with `verify`) cannot be decoded (`validate.image_problem`)."""
    if not path.is_file():
        raise RecordError(source, where, f"image {path} does not exist: check the layout in docs/benchmarks.md.")

    problem = image_problem(path) if verify else None
    if problem:
        raise RecordError(source, where, problem)


def image_reference(path: Path, dataset_dir: Path) -> str:
    r"""The image path written in a row: relative to the dataset folder when inside it, else absolute."""
    path, dataset_dir = path.resolve(), dataset_dir.resolve()
    try:
        return path.relative_to(dataset_dir).as_posix()
    except ValueError:
        return path.as_posix()


def png_bytes(image: "PILImage") -> bytes:
    r"""The image encoded as PNG (converters that make images keep them in `BenchmarkReport.images`)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def csv_lines(path: "str | Path") -> Iterator[tuple[int, "list[str] | RecordError"]]:
    r"""Yield (line number, fields) for each non-blank line of a UTF-8 CSV file with one record per line.

    Every benchmark's lists keep a record on one line, so a line that is not UTF-8 is that record's `RecordError`.
    """
    for line, text in text_lines(path):
        if isinstance(text, RecordError):
            yield line, text
        elif text.strip():
            yield line, next(csv.reader([text]))


def csv_records(
    path: "str | Path", columns: Iterable[str], hint: str
) -> Iterator[tuple[int, "dict[str, str] | RecordError"]]:
    r"""Yield (line number, row by header name) for each record of a CSV file whose header holds `columns`.

    Header names are stripped (Kaggle writes ' Usage'); a missing column or an unreadable header raises `RecordError`.
    """
    lines = csv_lines(path)
    number, header = next(lines, (1, []))
    if isinstance(header, RecordError):
        raise header

    header = [name.strip() for name in header]
    missing = set(columns) - set(header)
    if missing:
        raise RecordError(str(path), number, f"missing columns {sorted(missing)}; {hint}")

    for line, fields in lines:
        yield line, fields if isinstance(fields, RecordError) else dict(zip(header, fields))


def parse_au_labels(
    tokens: Iterable[str], source: str, where: "int | str", report: BenchmarkReport, strict: bool = False
) -> list[int]:
    r"""Parse AU tokens ("4", "AU4", "L12", "R2"); AUs outside the catalogue are removed and counted (or rejected)."""
    aus = set()
    for token in tokens:
        text = token.strip().upper()
        if not text:
            continue

        if text[0] in "LR" and text[1:].isdigit():  # RAF-AU codes one-sided AUs as L12 / R12
            text = text[1:]

        try:
            aus.add(parse_au(text))
        except UnknownAUError as error:
            number = text.removeprefix("AU")
            if not number.isdigit():
                raise RecordError(source, where, f"{token!r} is not an AU code: write it as 4, AU4 or L4.") from None

            if strict:
                raise RecordError(source, where, str(error)) from None

            report.dropped_aus[int(number)] += 1

    return sorted(aus)


def au_list_option(value: str, allowed: Iterable[int], hint: str) -> tuple[int, ...]:
    r"""An `--aus` comma list ("1,2,AU4") as sorted AU numbers, each one of `allowed`, else an argparse error."""
    try:
        aus = tuple(sorted({parse_au(au) for au in value.split(",") if au.strip()}))
    except UnknownAUError as error:
        raise argparse.ArgumentTypeError(f"{error} {hint}") from error

    if not aus or set(aus) - set(allowed):
        raise argparse.ArgumentTypeError(hint)

    return aus


def number_option(kind: type = int, low: float = 0, high: float | None = None) -> Callable[[str], float]:
    r"""An argparse type for a whole number (`int`) or a finite number (`float`) from `low` to `high`."""
    words = "a whole number" if kind is int else "a number"
    span = f">= {low}" if high is None else f"from {low} to {high}"

    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            number = math.nan

        if not (math.isfinite(number) and low <= number and (high is None or number <= high)):
            raise argparse.ArgumentTypeError(f"{value} is not {words} {span}.")

        return number

    return parse


def pattern_option(**fields: Any) -> Callable[[str], str]:
    r"""An argparse type for a path pattern that must format with these fields, e.g. `{subject}/{frame:04d}.png`."""
    names = ", ".join(f"{{{name}}}" for name in fields)

    def parse(value: str) -> str:
        try:
            value.format(**fields)
        except KeyError as error:
            raise argparse.ArgumentTypeError(f"unknown field {{{error.args[0]}}}: the fields are {names}.") from None
        except (AttributeError, IndexError, ValueError) as error:
            raise argparse.ArgumentTypeError(f"{value!r} is not a valid pattern ({error}): use {names}.") from None

        return value

    return parse


def hash_split(key: str, test_fraction: float, seed: int = 0) -> str:
    r"""A deterministic split for datasets without an official one: 'test' for about `test_fraction` of keys."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def question(source: str) -> str:
    r"""The FEA question with the label space of the source dataset."""
    return FEAPrompts().question(LABEL_SPACES.get(source, LABEL_SPACES["fea20k"]))


def write_splits(
    source: str,
    dataset_dir: Path,
    splits: dict[str, list[FEARecord]],
    report: BenchmarkReport,
    allow_rejects: bool = False,
) -> BenchmarkReport:
    r"""Refuse duplicate ids; unless a record was rejected, write `<source>/<split>.jsonl` and register `<source>_<split>`.

    As for FEA-20K, a rejected record stops the writing (previous outputs stay) unless `allow_rejects` is given. The
    images a converter made (`report.images`) are written with the splits, those of written rows only.
    """
    seen: dict[str, str] = {}
    for split, records in splits.items():
        kept = []
        for record in records:
            if record.id in seen:
                report.reject(RecordError(source, record.id, f"duplicate id (first in split {seen[record.id]})."))
                continue

            seen[record.id] = split
            kept.append(record)

        records[:] = kept

    rows = {split: typed_first([record.to_row() for record in records]) for split, records in splits.items()}
    used = {image for split_rows in rows.values() for row in split_rows for image in row["images"]}
    images = {dataset_dir / path: data for path, data in report.images.items() if path in used}
    return write_outputs(source, dataset_dir, rows, report, allow_rejects, images)


def write_rejection_list(folder: Path, report: ConversionReport) -> None:
    r"""Write every rejection to `folder/rejected.txt` when the summary cannot show them all; else remove an old list."""
    path = folder / REJECTED_FILE
    if len(report.rejected) > SHOWN_REJECTIONS:
        atomic_write(path, "".join(f"{message}\n" for message in report.rejected))
        report.rejected_file = path
    elif path.is_file():  # left by an earlier run: it would describe other inputs
        path.unlink()


def write_outputs(
    source: str,
    dataset_dir: Path,
    outputs: dict[str, list[dict[str, Any]]],
    report: ConversionReport,
    allow_rejects: bool = False,
    files: dict[Path, bytes] | None = None,
) -> ConversionReport:
    r"""Unless a record was rejected (and not `allow_rejects`), write `<source>/<split>.jsonl` and register `<source>_<split>`.

    All or nothing (`records.write_files`): `files` (images), then the split files, then `dataset_info.json`. A split
    without rows keeps its previous output. Why nothing was written goes to the report's notes; a long rejection list
    to `<dataset_dir>/<source>/rejected.txt`.
    """
    write_rejection_list(dataset_dir / source, report)
    if report.rejected and not allow_rejects:
        report.notes.append("Nothing written: fix the records above, or pass --allow-rejects to write the good ones.")
        return report

    if not any(outputs.values()):
        report.notes.append("Nothing written: no record could be converted.")
        return report

    staged, entries = dict(files or {}), {}
    for split, rows in outputs.items():
        if not rows:
            report.notes.append(
                f"{split}: no record could be converted, its previous output (if any) is left as it was."
            )
            continue

        file_name = f"{source}/{split}.jsonl"
        staged[dataset_dir / file_name] = jsonl(rows)
        entries[f"{source}_{split}"] = dataset_info_entry(file_name)

    staged[dataset_dir / DATASET_INFO] = registry_text(dataset_dir, entries)
    write_files(staged)
    report.written = {split: len(rows) for split, rows in outputs.items() if rows}
    report.registered = list(entries)
    return report


def add_common_arguments(parser: argparse.ArgumentParser, source_help: str) -> None:
    r"""The arguments every benchmark converter takes: the source folder, the dataset folder, the image check."""
    parser.add_argument("source_dir", help=source_help)
    parser.add_argument(
        "--dataset-dir",
        default=DEFAULT_DATASET_DIR,
        help="LLaMA-Factory dataset folder: JSONL files go to <dir>/<source>/, entries to <dir>/dataset_info.json.",
    )
    parser.add_argument(
        "--no-verify-images",
        dest="verify_images",
        action="store_false",
        help="Only check that each image exists instead of decoding it (faster on large sets).",
    )
    parser.add_argument(
        "--allow-rejects", action="store_true", help="Write the good records even if some are rejected (exit 0)."
    )


def make_converter(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    convert: Callable[[argparse.Namespace, BenchmarkReport], dict[str, list[FEARecord]]],
) -> Converter:
    r"""Register a benchmark converter whose `convert` reads records; this wrapper writes, registers and reports.

    An input that stops the whole conversion (missing layout, unusable registry) raises `RecordError`.
    """

    def run(args: argparse.Namespace) -> ConversionReport:
        read_dataset_info(args.dataset_dir)  # a registry that cannot be updated stops the run before any input is read
        report = BenchmarkReport(source=name)
        splits = convert(args, report)
        return write_splits(name, Path(args.dataset_dir), splits, report, args.allow_rejects)

    return register_converter(Converter(name=name, help=help, add_arguments=add_arguments, run=run))


def require(path: Path, what: str, source: str, folder: bool = False) -> Path:
    r"""Return `path` if it is a file (or with `folder` a folder), else raise `RecordError` saying what is wrong."""
    if not path.exists():
        raise RecordError(source, None, f"{what} not found at {path}; see docs/benchmarks.md for the layout.")

    if path.is_dir() != folder:
        kind, other = ("a folder", "a file") if folder else ("a file", "a folder")
        raise RecordError(source, None, f"{what} at {path} is {other}, not {kind}; see docs/benchmarks.md.")

    return path
