r"""`llamafactory-fea data register`: copy FEA datasets into the user's own `dataset_info.json`.

LLaMA-Factory 0.9.5 opens an image at `media_dir/<path>` when that file exists and at `<path>` (from the working
directory) otherwise; `media_dir` defaults to `dataset_dir`. FEA rows name their images relative to the FEA
registry, so an entry that only pointed at the FEA file would find its images under the user's `dataset_dir`, where
they are not. Each registered dataset is therefore written as a copy under `DIR/fea/` whose image paths are
absolute (`os.path.join(media_dir, absolute)` is the absolute path), so it mixes with the user's own data whatever
their `media_dir`; the images themselves are not copied.
"""

import argparse
from pathlib import Path
from typing import Any

from ..resources import data_registry_dir
from .files import RecordError, jsonl, write_files
from .records import DATASET_INFO, dataset_info_entry, dataset_objects, read_dataset_info, registry_text
from .validate import missing_file_fix


COPY_FOLDER = "fea"


def _absolute_images(row: dict[str, Any], media_dir: Path) -> dict[str, Any]:
    r"""The row with each relative image path made absolute under `media_dir`."""
    images = row.get("images")
    if not isinstance(images, list):
        return row

    return {
        **row,
        "images": [str((media_dir / image).resolve()) if isinstance(image, str) else image for image in images],
    }


def register_datasets(
    into: "str | Path", datasets: list[str] | None = None, source: "str | Path | None" = None, force: bool = False
) -> list[str]:
    r"""Copy FEA datasets of `source` (the plugin's registry) into `into/fea/` and register them in `into`.

    `datasets` defaults to every entry of `source` whose file exists. Refuses (`RecordError`, nothing written) an
    entry or file of the same name that is not this copy, unless `force`. Returns the names registered.
    """
    into, source = Path(into), Path(source or data_registry_dir())
    source_info, target_info = read_dataset_info(source), read_dataset_info(into)
    if not source_info:
        raise RecordError(str(source / DATASET_INFO), None, "no FEA dataset is registered there: give --from.")

    if datasets is None:
        datasets = [name for name, entry in source_info.items() if (source / entry.get("file_name", "")).is_file()]

    files: dict[Path, str] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name in datasets:
        entry = source_info.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            known = ", ".join(sorted(source_info))
            raise RecordError(
                str(source / DATASET_INFO), None, f"dataset {name!r} is not registered (known: {known})."
            )

        path = source / entry["file_name"]
        if not path.is_file():
            raise RecordError(str(path), None, f"file not found: {missing_file_fix(path, source)}")

        rows = [_absolute_images(row, source) for _, row in dataset_objects(path)]

        file_name = f"{COPY_FOLDER}/{name}.jsonl"
        entries[name] = {**entry, **dataset_info_entry(file_name)}
        files[into / file_name] = jsonl(rows)
        if not force and name in target_info and target_info[name] != entries[name]:
            raise RecordError(
                str(into / DATASET_INFO),
                None,
                f"already has a different entry {name!r}: remove or rename it, or pass --force to replace it.",
            )

        if not force and name not in target_info and (into / file_name).exists():
            raise RecordError(
                str(into / file_name), None, "exists and is not registered: move it away or pass --force."
            )

    if entries:
        files[into / DATASET_INFO] = registry_text(into, entries)
        write_files(files)

    return list(entries)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea data register`."""
    parser.add_argument("--into", required=True, help="Your dataset folder (its dataset_info.json gains the entries).")
    parser.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="FEA dataset to register; repeat (default: every one present).",
    )
    parser.add_argument(
        "--from",
        dest="source",
        default=None,
        help="The FEA registry to copy from (default: the plugin's data_registry).",
    )
    parser.add_argument("--force", action="store_true", help="Replace a different entry or file of the same name.")


def run(args: argparse.Namespace) -> int:
    r"""Register the datasets; print what was written, or the one reason nothing was."""
    try:
        names = register_datasets(args.into, args.dataset, args.source, args.force)
    except (RecordError, OSError) as error:
        print(f"error: {error}")
        return 1

    print(
        f"Registered {', '.join(names)} in {Path(args.into) / DATASET_INFO} (rows under {Path(args.into) / COPY_FOLDER}/, "
        f"images by absolute path): list them beside your own, e.g. `dataset: my_data,{names[0]}`."
        if names
        else "Nothing to register: no FEA dataset file is present (see `llamafactory-fea data validate`)."
    )
    return 0 if names else 1
