r"""DISFA: per-subject AU intensity files `ActionUnit_Labels/SN001/SN001_au1.txt` (`frame,intensity`) + extracted frames."""

import argparse
from pathlib import Path

from ..records import FEARecord, RecordError
from .base import (
    BenchmarkReport,
    add_common_arguments,
    au_list_option,
    check_image,
    image_reference,
    make_converter,
    question,
    require,
)


NAME = "disfa"
DISFA_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)  # the 12 AUs DISFA codes
BENCHMARK_AUS: tuple[int, ...] = (1, 2, 4, 6, 9, 12, 25, 26)  # the 8 AUs AU-detection papers report
# the subject-independent 3-fold protocol of AU-detection work (JAA-Net, ME-GraphAU): fold k tests on PARTS[3 - k]
PARTS: tuple[tuple[str, ...], ...] = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)


def test_subjects(args: argparse.Namespace) -> set[str]:
    r"""The held-out subjects: `--test-subjects`, else the fold's part."""
    if args.test_subjects:
        return {subject.strip() for subject in args.test_subjects.split(",") if subject.strip()}

    return set(PARTS[3 - args.fold])


def read_intensities(path: Path) -> dict[int, int]:
    r"""Frame number -> intensity 0-5 from one `SN001_auN.txt`, raising `RecordError` on a malformed line."""
    intensities = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue

        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2 or not all(field.isdigit() for field in fields) or not 0 <= int(fields[1]) <= 5:
            raise RecordError(str(path), number, f"expected 'frame,intensity 0-5', got {line!r}.")

        intensities[int(fields[0])] = int(fields[1])

    return intensities


def parse_aus(value: str) -> tuple[int, ...]:
    r"""`--aus`: 'benchmark' (8 AUs), 'all' (DISFA's 12) or a comma list of DISFA AUs."""
    if value == "benchmark":
        return BENCHMARK_AUS

    if value == "all":
        return DISFA_AUS

    return au_list_option(value, DISFA_AUS, f"DISFA codes only {', '.join(map(str, DISFA_AUS))}.")


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""One record per labelled frame (every `--stride`-th); an AU is active at intensity >= `--au-threshold`."""
    root = Path(args.source_dir)
    labels_dir = require(root / "ActionUnit_Labels", "ActionUnit_Labels/", NAME)
    frames_dir = require(Path(args.frames_dir), "the extracted frame folder (--frames-dir)", NAME)
    dataset_dir, prompt, held_out = Path(args.dataset_dir), question(NAME), test_subjects(args)
    splits: dict[str, list[FEARecord]] = {"train": [], "test": []}
    for subject_dir in sorted(path for path in labels_dir.iterdir() if path.is_dir()):
        subject = subject_dir.name
        try:
            intensities = {au: read_intensities(subject_dir / f"{subject}_au{au}.txt") for au in args.aus}
        except FileNotFoundError as error:
            report.reject(RecordError(str(subject_dir), None, f"missing AU file {Path(error.filename).name}."))
            continue
        except RecordError as error:
            report.reject(error)
            continue

        frames = sorted(set().union(*(set(values) for values in intensities.values())))
        for frame in frames[:: args.stride]:
            report.read += 1
            where = f"{subject} frame {frame}"
            try:
                missing = [au for au in args.aus if frame not in intensities[au]]
                if missing:
                    raise RecordError(str(subject_dir), where, f"no intensity for AU{missing[0]} at this frame.")

                image = frames_dir / args.frame_pattern.format(subject=subject, frame=frame, frame0=frame - 1)
                check_image(image, str(subject_dir), where, args.verify_images)
            except RecordError as error:
                report.reject(error)
                continue

            active = sorted(au for au in args.aus if intensities[au][frame] >= args.au_threshold)
            splits["test" if subject in held_out else "train"].append(
                FEARecord(
                    id=f"{NAME}_{subject}_{frame:05d}",
                    image=image_reference(image, dataset_dir),
                    emotion=None,
                    aus=active,
                    dataset=NAME,
                    question=prompt,
                    extra={"au_labelled": True, "au_intensity": {str(au): intensities[au][frame] for au in args.aus}},
                )
            )

    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""DISFA options."""
    add_common_arguments(parser, "The DISFA folder holding ActionUnit_Labels/.")
    parser.add_argument("--frames-dir", required=True, help="Folder of frames you extracted from the videos.")
    parser.add_argument(
        "--frame-pattern",
        default="{subject}/{frame}.png",
        help="Frame path under --frames-dir; fields {subject}, {frame} (1-based, as in the labels), {frame0} (0-based).",
    )
    parser.add_argument("--au-threshold", type=int, default=2, help="An AU is active at intensity >= this (0-5).")
    parser.add_argument("--aus", type=parse_aus, default=BENCHMARK_AUS, help="'benchmark' (8 AUs), 'all' or 1,2,4.")
    parser.add_argument("--fold", type=int, choices=(1, 2, 3), default=1, help="3-fold subject split: test part.")
    parser.add_argument("--test-subjects", default=None, help="Comma list of held-out subjects (overrides --fold).")
    parser.add_argument("--stride", type=int, default=1, help="Keep every n-th labelled frame.")


make_converter(NAME, "DISFA AU intensities (active at >= 2) on extracted frames.", add_arguments, convert)
