r"""FEA records as LLaMA-Factory sharegpt rows with `emotion` and `aus` label columns, and the dataset registry."""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fea.prompts import FEAPrompts
from .files import RecordError, atomic_write, check_folder, json_lines, read_text


DATASET_INFO = "dataset_info.json"


@dataclass
class FEARecord:
    r"""One labelled face: image path (relative to the dataset folder), emotion, AUs, optional reasoning.

    `emotion` or `aus` None is "not labelled" (written as null); `aus=[]` is "labelled: no active AU". `completion`
    is a whole tagged target used as it is (FEA-20K's well-formed descriptions) instead of one made from `reasoning`.
    """

    id: str
    image: str
    emotion: str | None
    aus: list[int] | None
    reasoning: str | None = None
    dataset: str = "fea"
    question: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    completion: str | None = None

    def target(self) -> str:
        r"""The assistant turn: `completion`, else `<think>reasoning</think><answer>emotion</answer>` (think if any)."""
        if self.completion is not None:
            return self.completion

        think = f"<think>{self.reasoning}</think>" if self.reasoning else ""
        return f"{think}<answer>{self.emotion or ''}</answer>"

    def to_row(self, prompts: FEAPrompts | None = None) -> dict[str, Any]:
        r"""The sharegpt row LLaMA-Factory reads, with the label columns beside it."""
        question = self.question or (prompts or FEAPrompts()).question()
        return {
            "id": self.id,
            "messages": [
                {"role": "user", "content": f"<image>{question}"},
                {"role": "assistant", "content": self.target()},
            ],
            "images": [self.image],
            "emotion": self.emotion,
            "aus": None if self.aus is None else sorted(self.aus),
            "dataset": self.dataset,
            **self.extra,
        }


def typed_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r"""The rows in their order, but for each column the first row with a value in it (not null, `[]` or `{}`) on top.

    LLaMA-Factory's JSON reader (`datasets`) takes each column's type from the file's first 10 MB and fails on a value
    of a column that was absent, null or `[]` throughout them (`data validate` says so); converters write rows so.

    >>> [row["id"] for row in typed_first([{"id": 1, "aus": None}, {"id": 2, "aus": []}, {"id": 3, "aus": [4]}])]
    [1, 3, 2]
    """
    keys = dict.fromkeys(key for row in rows for key in row)
    firsts = (next((i for i, row in enumerate(rows) if row.get(key) not in (None, [], {})), None) for key in keys)
    leaders = set(firsts) - {None}
    return [rows[i] for i in sorted(leaders)] + [row for i, row in enumerate(rows) if i not in leaders]


def dataset_info_entry(file_name: str) -> dict[str, Any]:
    r"""The `dataset_info.json` entry of an FEA file (sharegpt with images)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }


def read_dataset_info(dataset_dir: "str | Path") -> dict[str, Any]:
    r"""The registry `dataset_dir/dataset_info.json` ({} when there is none); `RecordError` when it cannot be used."""
    dataset_dir = Path(dataset_dir)
    check_folder(dataset_dir, "give a folder as the dataset folder (--dataset-dir)")
    path = dataset_dir / DATASET_INFO
    if not path.exists():
        return {}

    try:
        info = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise RecordError(
            str(path), error.lineno, f"broken JSON ({error.msg}): repair it, or move it away to start a new registry."
        ) from None

    if not isinstance(info, dict):
        raise RecordError(
            str(path), None, f"expected a JSON object of dataset entries, got {type(info).__name__}: repair it."
        )

    return info


def registry_text(dataset_dir: "str | Path", entries: Mapping[str, dict[str, Any]]) -> str:
    r"""The text of `dataset_dir/dataset_info.json` with `entries` added or replaced (checked by `read_dataset_info`)."""
    info = read_dataset_info(dataset_dir)
    info.update(entries)
    return json.dumps(info, indent=2, ensure_ascii=False) + "\n"


def register_dataset(dataset_dir: "str | Path", name: str, file_name: str) -> Path:
    r"""Add or update a dataset's entry in `dataset_dir/dataset_info.json` atomically; return the file's path."""
    info_path = Path(dataset_dir) / DATASET_INFO
    atomic_write(info_path, registry_text(dataset_dir, {name: dataset_info_entry(file_name)}))
    return info_path


def dataset_file_rows(path: "str | Path") -> Iterator[tuple[int, Any]]:
    r"""(line or record number, row) of a dataset file: JSONL line by line, a `.json` array as LLaMA-Factory reads it.

    A broken JSONL line's row is its `RecordError`; a `.json` file that `datasets` cannot read raises `RecordError`.
    """
    path = Path(path)
    if path.suffix != ".json":
        yield from json_lines(path)
        return

    from datasets import load_dataset

    try:
        rows = load_dataset("json", data_files=str(path), split="train")
    except Exception as error:  # datasets wraps the JSON and schema errors in several types
        raise RecordError(
            str(path), None, f"LLaMA-Factory cannot read it ({type(error).__name__}: {error}): fix the JSON."
        ) from None

    yield from enumerate(rows, start=1)


def dataset_objects(path: "str | Path") -> list[tuple[int, dict[str, Any]]]:
    r"""(line or record number, object) for each row of a dataset file; `RecordError` at the first row that is not one."""
    objects = []
    for line, row in dataset_file_rows(path):
        if isinstance(row, RecordError):
            raise row

        if not isinstance(row, dict):
            raise RecordError(str(path), line, f"expected a JSON object, got {type(row).__name__}.")

        objects.append((line, row))

    return objects
