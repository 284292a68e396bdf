r"""BP4D: AU occurrence CSVs `AUCoding/AU_OCC/<subject>_<task>.csv` (frame, then 0/1/9 per AU) + the 2D frames."""

import argparse
from itertools import islice
from pathlib import Path

from ..files import RecordError
from ..records import FEARecord
from .base import (
    BenchmarkReport,
    add_common_arguments,
    au_list_option,
    check_image,
    csv_lines,
    image_reference,
    make_converter,
    number_option,
    pattern_option,
    question,
    require,
)


NAME = "bp4d"
BENCHMARK_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)  # the 12 AUs AU-detection papers report
UNKNOWN = 9
# the subject-independent 3-fold protocol of AU-detection work (JAA-Net, ME-GraphAU): fold k tests on PARTS[3 - k]
PARTS: tuple[tuple[str, ...], ...] = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016", "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020", "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017", "M015", "F014"),
)


def parse_aus(value: str) -> tuple[int, ...] | None:
    r"""`--aus`: 'benchmark' (12 AUs), 'all' (every catalogue AU the file codes) or a comma list."""
    if value == "benchmark":
        return BENCHMARK_AUS

    if value == "all":
        return None

    from ...fea.aus import AU_CATALOGUE

    return au_list_option(value, AU_CATALOGUE, "give catalogue AUs, e.g. 1,2,4 (see llamafactory_fea/fea/aus.py).")


def _columns(header: list[str], path: Path, wanted: tuple[int, ...] | None) -> dict[int, int]:
    r"""AU number -> column index for the AUs to keep, raising `RecordError` if a wanted AU is not coded."""
    from ...fea.aus import AU_CATALOGUE

    coded = {}
    for index, name in enumerate(header[1:], start=1):
        number = name.strip().upper().removeprefix("AU")
        if number.isdigit():
            coded[int(number)] = index

    if wanted is None:
        return {au: index for au, index in coded.items() if au in AU_CATALOGUE}

    missing = [au for au in wanted if au not in coded]
    if missing:
        raise RecordError(str(path), 1, f"no column for AU{missing[0]}; this file codes {sorted(coded)}.")

    return {au: coded[au] for au in wanted}


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""One record per coded frame (every `--stride`-th); a frame with an unknown (9) AU is excluded or read as 0."""
    root = Path(args.source_dir)
    occ_dir = require(root / "AUCoding" / "AU_OCC", "AUCoding/AU_OCC/", NAME, folder=True)
    frames_dir = Path(args.frames_dir) if args.frames_dir else root / "BP4D-training"
    frames_dir = require(frames_dir, "the frames", NAME, folder=True)
    held_out = {s.strip() for s in args.test_subjects.split(",")} if args.test_subjects else set(PARTS[3 - args.fold])
    dataset_dir, prompt = Path(args.dataset_dir), question(NAME)
    splits: dict[str, list[FEARecord]] = {"train": [], "test": []}
    for path in sorted(occ_dir.glob("*.csv")):
        subject, _, task = path.stem.partition("_")
        lines = csv_lines(path)
        try:
            _, header = next(lines, (None, None))
            if isinstance(header, RecordError):
                raise header

            if not task or header is None:
                raise RecordError(str(path), None, "expected a non-empty <subject>_<task>.csv.")

            columns = _columns(header, path, args.aus)
        except RecordError as error:  # no row of the file can be read: the file counts as one rejected input
            report.reject_input(error)
            continue

        for number, values in islice(lines, 0, None, args.stride):
            report.read += 1
            try:
                if isinstance(values, RecordError):
                    raise values

                values = [field.strip() for field in values]
                if not values[0].isdigit() or len(values) < len(header):
                    raise RecordError(str(path), number, f"expected a frame number and {len(header) - 1} codes.")

                codes = {au: values[index] for au, index in columns.items()}
                bad = [au for au, code in codes.items() if code not in ("0", "1", str(UNKNOWN))]
                if bad:
                    raise RecordError(str(path), number, f"AU{bad[0]} code {codes[bad[0]]!r} is not 0, 1 or 9.")

                if str(UNKNOWN) in codes.values() and args.unknown == "exclude":
                    report.exclude("an AU coded 9 (unknown) in the frame")
                    continue

                frame = int(values[0])
                image = frames_dir / args.frame_pattern.format(subject=subject, task=task, frame=frame)
                check_image(image, str(path), number, args.verify_images)
            except RecordError as error:
                report.reject(error)
                continue

            splits["test" if subject in held_out else "train"].append(
                FEARecord(
                    id=f"{NAME}_{subject}_{task}_{frame:05d}",
                    image=image_reference(image, dataset_dir),
                    emotion=None,
                    aus=sorted(au for au, code in codes.items() if code == "1"),
                    dataset=NAME,
                    question=prompt,
                    extra={"au_labelled": True},
                )
            )

    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""BP4D options."""
    add_common_arguments(parser, "The BP4D folder holding AUCoding/AU_OCC/ (and BP4D-training/).")
    parser.add_argument("--frames-dir", default=None, help="Frame folder (default: <source>/BP4D-training).")
    parser.add_argument(
        "--frame-pattern",
        type=pattern_option(subject="F001", task="T1", frame=1),
        default="{subject}/{task}/{frame}.jpg",
        help="Frame path under --frames-dir; fields {subject}, {task}, {frame} (e.g. {frame:04d}).",
    )
    parser.add_argument("--aus", type=parse_aus, default=BENCHMARK_AUS, help="'benchmark' (12 AUs), 'all' or 1,2,4.")
    parser.add_argument(
        "--unknown", choices=("exclude", "absent"), default="exclude", help="Frames with a 9 code: exclude or read 0."
    )
    parser.add_argument("--fold", type=int, choices=(1, 2, 3), default=1, help="3-fold subject split: test part.")
    parser.add_argument("--test-subjects", default=None, help="Comma list of held-out subjects (overrides --fold).")
    parser.add_argument("--stride", type=number_option(int, 1), default=1, help="Keep every n-th coded frame.")


make_converter(NAME, "BP4D AU occurrence (12 benchmark AUs) on the 2D frames.", add_arguments, convert)
