r"""AffectNet: `Manually_Annotated_file_lists/{training,validation}.csv` (or the `*_set/annotations/*_exp.npy` release)."""

import argparse
from pathlib import Path

from ..files import RecordError
from ..records import FEARecord
from .base import (
    BenchmarkReport,
    add_common_arguments,
    check_image,
    csv_records,
    image_reference,
    make_converter,
    question,
    require,
)


NAME = "affectnet"
LABELS: dict[int, str] = {
    0: "neutral",
    1: "happiness",
    2: "sadness",
    3: "surprise",
    4: "fear",
    5: "disgust",
    6: "anger",
    7: "contempt",
}
NOT_EMOTIONS: dict[int, str] = {8: "none", 9: "uncertain", 10: "non-face"}
CSV_FILES: dict[str, str] = {"train": "training.csv", "test": "validation.csv"}  # the test set is not public
NPY_FOLDERS: dict[str, str] = {"train": "train_set", "test": "val_set"}


def _label(value: str, source: str, where: "int | str", report: BenchmarkReport, classes: int) -> str | None:
    r"""The emotion of an expression code, None (counted) for codes the benchmark leaves out."""
    if not value.strip().lstrip("-").isdigit():
        raise RecordError(source, where, f"expression {value!r} is not an integer 0-10.")

    code = int(value)
    if code in NOT_EMOTIONS:
        report.exclude(f"expression {code} ({NOT_EMOTIONS[code]}) is not an emotion")
        return None

    if code not in LABELS:
        raise RecordError(source, where, f"unknown expression code {code}: AffectNet uses 0-10.")

    if code == 7 and classes == 7:
        report.exclude("contempt left out (--classes 7)")
        return None

    return LABELS[code]


def _record(image: Path, emotion: str, key: str, dataset_dir: Path, prompt: str) -> FEARecord:
    r"""One AffectNet record."""
    return FEARecord(
        id=f"{NAME}_{key}",
        image=image_reference(image, dataset_dir),
        emotion=emotion,
        aus=None,
        dataset=NAME,
        question=prompt,
        extra={"au_labelled": False},
    )


def _read_csv(args: argparse.Namespace, root: Path, report: BenchmarkReport, split: str) -> list[FEARecord]:
    r"""Read one file list of the original release; images are under `--images-dir`."""
    list_file = require(root / "Manually_Annotated_file_lists" / CSV_FILES[split], f"AffectNet {split} list", NAME)
    images_dir = Path(args.images_dir) if args.images_dir else root / "Manually_Annotated_Images"
    dataset_dir, prompt, records = Path(args.dataset_dir), question(NAME), []
    columns = ("subDirectory_filePath", "expression")
    for where, row in csv_records(list_file, columns, "is this an AffectNet list?"):
        report.read += 1
        try:
            if isinstance(row, RecordError):
                raise row

            relative = row.get("subDirectory_filePath", "").strip()
            if not relative:
                raise RecordError(str(list_file), where, "empty subDirectory_filePath.")

            emotion = _label(row.get("expression", ""), str(list_file), where, report, args.classes)
            if emotion is None:
                continue

            image = images_dir / relative
            check_image(image, str(list_file), where, args.verify_images)
        except RecordError as error:
            report.reject(error)
            continue

        records.append(_record(image, emotion, Path(relative).with_suffix("").as_posix(), dataset_dir, prompt))

    return records


def _read_npy(args: argparse.Namespace, root: Path, report: BenchmarkReport, split: str) -> list[FEARecord]:
    r"""Read one folder of the numpy release: `images/<n>.jpg` with `annotations/<n>_exp.npy`."""
    import numpy as np

    folder = require(root / NPY_FOLDERS[split], f"AffectNet {NPY_FOLDERS[split]} folder", NAME, folder=True)
    dataset_dir, prompt, records = Path(args.dataset_dir), question(NAME), []
    for annotation in sorted((folder / "annotations").glob("*_exp.npy")):
        report.read += 1
        key = annotation.name.removesuffix("_exp.npy")
        try:
            try:
                value = str(np.load(annotation, allow_pickle=False)).strip()
            except Exception as error:
                raise RecordError(str(annotation), None, f"unreadable annotation: {error}") from None

            emotion = _label(value, str(annotation), None, report, args.classes)
            if emotion is None:
                continue

            image = folder / "images" / f"{key}.jpg"
            check_image(image, str(annotation), None, args.verify_images)
        except RecordError as error:
            report.reject(error)
            continue

        records.append(_record(image, emotion, f"{NPY_FOLDERS[split]}/{key}", dataset_dir, prompt))

    return records


def convert(args: argparse.Namespace, report: BenchmarkReport) -> dict[str, list[FEARecord]]:
    r"""Read both splits of whichever release layout the folder holds."""
    root = Path(args.source_dir)
    read = _read_npy if (root / NPY_FOLDERS["train"]).is_dir() else _read_csv
    return {split: read(args, root, report, split) for split in ("train", "test")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""AffectNet options."""
    add_common_arguments(parser, "The AffectNet folder (Manually_Annotated_file_lists/ or train_set/ + val_set/).")
    parser.add_argument(
        "--images-dir", default=None, help="Folder of the listed images (default: <source>/Manually_Annotated_Images)."
    )
    parser.add_argument(
        "--classes",
        type=int,
        choices=(7, 8),
        default=8,
        help="8 keeps contempt (the paper's setting); 7 leaves it out.",
    )


make_converter(NAME, "AffectNet expression labels (8 or 7 classes; validation set as test).", add_arguments, convert)
