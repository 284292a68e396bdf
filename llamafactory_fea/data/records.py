r"""FEA records as LLaMA-Factory sharegpt rows with `emotion` and `aus` label columns; atomic writes; registration."""

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fea.prompts import FEAPrompts


DATASET_INFO = "dataset_info.json"


class RecordError(ValueError):
    r"""A bad input record; the message names the file, the line or record, and the fix."""

    def __init__(self, source: str, where: "int | str | None", reason: str) -> None:
        self.source, self.where, self.reason = source, where, reason
        location = f"{source}:{where}" if where is not None else source
        super().__init__(f"{location}: {reason}")


def record_error(source: str, line: int | None, record_id: Any, reason: str) -> RecordError:
    r"""A `RecordError` located as `file:line:id` (the id is left out when the record has none)."""
    named = isinstance(record_id, (str, int)) and not isinstance(record_id, bool) and record_id != ""
    where = f"{line}:{record_id}" if named else line
    return RecordError(source, where, reason)


def json_lines(path: "str | Path") -> Iterator[tuple[int, Any]]:
    r"""Yield (line number, value) for each non-blank line of a JSONL file; a broken line's value is its `RecordError`.

    The one JSONL reader of the package: callers decide whether a broken line stops them, is reported or is skipped.
    """
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue

            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as error:
                yield line, record_error(str(path), line, None, f"broken JSON ({error}): fix the line.")


@dataclass
class FEARecord:
    r"""One labelled face: image path (relative to the dataset folder), emotion, AUs, optional reasoning."""

    id: str
    image: str
    emotion: str | None
    aus: list[int]
    reasoning: str | None = None
    dataset: str = "fea"
    question: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def target(self) -> str:
        r"""The assistant turn: `<think>reasoning</think><answer>emotion</answer>` (without think if no reasoning)."""
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
            "aus": sorted(self.aus),
            "dataset": self.dataset,
            **self.extra,
        }


def dataset_info_entry(file_name: str) -> dict[str, Any]:
    r"""The `dataset_info.json` entry of an FEA file (sharegpt with images)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }


def atomic_write(path: "str | Path", data: str | bytes) -> None:
    r"""Write a text or binary file atomically (temporary file in the same folder, flushed to disk, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: "str | Path", rows: Iterable[dict[str, Any]]) -> int:
    r"""Write rows as JSON lines atomically; return how many were written."""
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    atomic_write(path, "".join(f"{line}\n" for line in lines))
    return len(lines)


def register_dataset(dataset_dir: "str | Path", name: str, file_name: str) -> Path:
    r"""Add or update a dataset's entry in `dataset_dir/dataset_info.json` atomically; return the file's path."""
    info_path = Path(dataset_dir) / DATASET_INFO
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[name] = dataset_info_entry(file_name)
    atomic_write(info_path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info_path
