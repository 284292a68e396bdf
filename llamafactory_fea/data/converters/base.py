r"""The converter registry and what every converter shares: its report, record and image checks, splits, outputs."""

import argparse
import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...fea.aus import UnknownAUError, parse_au
from ...fea.emotions import LABEL_SPACES
from ...fea.prompts import FEAPrompts
from ...registry import Registry
from ..records import FEARecord, RecordError, atomic_write, register_dataset, write_jsonl
from ..validate import image_problem


if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@dataclass
class ConversionReport:
    r"""What a conversion did: records read, written per split, and each rejected record with its reason."""

    source: str
    read: int = 0
    written: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why nothing (or a split) was written

    def reject(self, error: Exception) -> None:
        r"""Record a rejected input with its reason (the error names file, line and fix)."""
        self.rejected.append(str(error))

    def reasons(self) -> Counter:
        r"""Rejections counted by reason (the text after the location)."""
        return Counter(message.split(": ", 1)[-1].split(":")[0] for message in self.rejected)

    def summary(self) -> str:
        r"""A few lines for people: counts, every rejected record, the registered datasets, then the notes."""
        written = ", ".join(f"{split} {count}" for split, count in self.written.items()) or "none"
        lines = [f"{self.source}: read {self.read}, written {written}, rejected {len(self.rejected)}."]
        lines += [f"  rejected {message}" for message in self.rejected]
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


def save_png_atomic(image: "PILImage", path: Path) -> None:
    r"""Save a PNG atomically (`atomic_write` of the encoded bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())


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

    As for FEA-20K, a rejected record stops the writing (previous outputs stay) unless `allow_rejects` is given.
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

    rows = {split: [record.to_row() for record in records] for split, records in splits.items()}
    return write_outputs(source, dataset_dir, rows, report, allow_rejects)


def write_outputs(
    source: str,
    dataset_dir: Path,
    outputs: dict[str, list[dict[str, Any]]],
    report: ConversionReport,
    allow_rejects: bool = False,
) -> ConversionReport:
    r"""Unless a record was rejected (and not `allow_rejects`), write `<source>/<split>.jsonl` and register `<source>_<split>`.

    Each file is written atomically; a split without rows keeps its previous output. Why nothing was written goes to
    the report's notes.
    """
    if report.rejected and not allow_rejects:
        report.notes.append("Nothing written: fix the records above, or pass --allow-rejects to write the good ones.")
        return report

    if not any(outputs.values()):
        report.notes.append("Nothing written: no record could be converted.")
        return report

    for split, rows in outputs.items():
        if not rows:
            report.notes.append(
                f"{split}: no record could be converted, its previous output (if any) is left as it was."
            )
            continue

        name, file_name = f"{source}_{split}", f"{source}/{split}.jsonl"
        report.written[split] = write_jsonl(dataset_dir / file_name, rows)
        register_dataset(dataset_dir, name, file_name)
        report.registered.append(name)

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
    r"""Register a benchmark converter whose `convert` reads records; this wrapper writes, registers and reports."""

    def run(args: argparse.Namespace) -> ConversionReport:
        report = BenchmarkReport(source=name)
        try:
            splits = convert(args, report)
        except (RecordError, FileNotFoundError, NotADirectoryError) as error:
            report.notes.append(f"failed: {error}")
            return report

        return write_splits(name, Path(args.dataset_dir), splits, report, args.allow_rejects)

    return register_converter(Converter(name=name, help=help, add_arguments=add_arguments, run=run))


def require(path: Path, what: str, source: str) -> Path:
    r"""Return `path` if it exists, else raise `RecordError` saying which file of the layout is missing."""
    if not path.exists():
        raise RecordError(source, None, f"{what} not found at {path}; see docs/benchmarks.md for the layout.")

    return path
