r"""DISFA: per-subject AU intensity files `ActionUnit_Labels/SN001/SN001_au1.txt` (`frame,intensity`) + extracted frames."""

import argparse
from pathlib import Path

from ..files import RecordError, text_lines
from ..records import FEARecord
from .base import (
    BenchmarkReport,
    add_common_arguments,
    au_list_option,
    check_image,
    image_reference,
    make_converter,
    number_option,
    pattern_option,
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


def read_intensities(path: Path, report: BenchmarkReport) -> tuple[dict[int, int], dict[int, RecordError]]:
    r"""Frame number -> intensity 0-5 from one `SN001_auN.txt`, and frame -> the error of a malformed line for it.

    A malformed line that names no frame is rejected here; a missing file raises `RecordError`.
    """
    intensities: dict[int, int] = {}
    errors: dict[int, RecordError] = {}
    for number, line in text_lines(path):
        if isinstance(line, RecordError):
            report.reject_input(line)
            continue

        if not line.strip():
            continue

        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2 or not all(field.isdigit() for field in fields) or not 0 <= int(fields[1]) <= 5:
            error = RecordError(str(path), number, f"expected 'frame,intensity 0-5', got {line!r}.")
            if fields[0].isdigit():  # the frame is known: it is rejected with this line's error
                errors.setdefault(int(fields[0]), error)
            else:
                report.reject_input(error)

            continue

        intensities[int(fields[0])] = int(fields[1])

    return intensities, errors


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
    labels_dir = require(root / "ActionUnit_Labels", "ActionUnit_Labels/", NAME, folder=True)
    frames_dir = require(Path(args.frames_dir), "the extracted frame folder (--frames-dir)", NAME, folder=True)
    dataset_dir, prompt, held_out = Path(args.dataset_dir), question(NAME), test_subjects(args)
    splits: dict[str, list[FEARecord]] = {"train": [], "test": []}
    for subject_dir in sorted(path for path in labels_dir.iterdir() if path.is_dir()):
        subject = subject_dir.name
        paths = {au: subject_dir / f"{subject}_au{au}.txt" for au in args.aus}
        missing = [path.name for path in paths.values() if not path.is_file()]
        if missing:  # no frame of the subject can be labelled: the subject counts as one rejected input
            reason = f"missing AU file {missing[0]}: every AU of --aus needs its file."
            report.reject_input(RecordError(str(subject_dir), None, reason))
            continue

        files = {au: read_intensities(path, report) for au, path in paths.items()}
        intensities = {au: values for au, (values, _) in files.items()}
        errors = {au: line_errors for au, (_, line_errors) in files.items()}
        frames = sorted(set().union(*(set(values) | set(errors[au]) for au, values in intensities.items())))
        for frame in frames[:: args.stride]:
            report.read += 1
            where = f"{subject} frame {frame}"
            try:
                broken = [errors[au][frame] for au in args.aus if frame in errors[au]]
                if broken:
                    raise broken[0]

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
        type=pattern_option(subject="SN001", frame=1, frame0=0),
        default="{subject}/{frame}.png",
        help="Frame path under --frames-dir; fields {subject}, {frame} (1-based, as in the labels), {frame0} (0-based).",
    )
    parser.add_argument(
        "--au-threshold", type=number_option(int, 1, 5), default=2, help="An AU is active at intensity >= this (1-5)."
    )
    parser.add_argument("--aus", type=parse_aus, default=BENCHMARK_AUS, help="'benchmark' (8 AUs), 'all' or 1,2,4.")
    parser.add_argument("--fold", type=int, choices=(1, 2, 3), default=1, help="3-fold subject split: test part.")
    parser.add_argument("--test-subjects", default=None, help="Comma list of held-out subjects (overrides --fold).")
    parser.add_argument("--stride", type=number_option(int, 1), default=1, help="Keep every n-th labelled frame.")


make_converter(NAME, "DISFA AU intensities (active at >= 2) on extracted frames.", add_arguments, convert)
