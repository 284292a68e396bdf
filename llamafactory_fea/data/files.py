r"""Every input file is read here and every output written here: the package's one reader and one writer.

Reading: UTF-8, a byte-order mark skipped, a line that is not UTF-8 located (file:line) instead of a traceback; a bad
record is a `RecordError` naming the file, the line or record, and the fix. Writing: all files of one job together or
none (each staged under a temporary name, then renamed), each file keeping its mode or taking the umask's.
"""

import codecs
import json
import os
import secrets
import stat
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO


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


def _open_input(path: Path) -> BinaryIO:
    r"""Open an input file for reading bytes, raising `RecordError` if it is missing, a folder or unreadable."""
    if path.is_dir():
        raise RecordError(str(path), None, "is a folder, not a file: give the file's path.")

    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise RecordError(str(path), None, "file not found: fix the path.") from None
    except OSError as error:
        raise RecordError(str(path), None, f"cannot be read ({error.strerror}): check its permissions.") from None


def _not_utf8(path: Path, line: int, data: bytes, error: UnicodeDecodeError, start: int = 0) -> RecordError:
    r"""The error of a line that is not UTF-8, naming the first bad byte and its column."""
    byte, column = data[error.start], error.start - start + 1
    return RecordError(str(path), line, f"not UTF-8 (byte {byte:#04x} at column {column}): save the file as UTF-8.")


def read_text(path: "str | Path") -> str:
    r"""The text of a UTF-8 file (a byte-order mark skipped); `RecordError` naming the file (and line) otherwise."""
    path = Path(path)
    with _open_input(path) as f:
        data = f.read().removeprefix(codecs.BOM_UTF8)

    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, start = data.count(b"\n", 0, error.start) + 1, data.rfind(b"\n", 0, error.start) + 1
        raise _not_utf8(path, line, data, error, start) from None


def text_lines(path: "str | Path") -> Iterator[tuple[int, "str | RecordError"]]:
    r"""Yield (line number, text without its line end) for each line of a UTF-8 file, a byte-order mark skipped.

    A line that is not UTF-8 comes as its `RecordError`; a file that cannot be opened raises one.
    """
    path = Path(path)
    with _open_input(path) as f:
        for line, data in enumerate(f, start=1):
            data = data.removeprefix(codecs.BOM_UTF8) if line == 1 else data
            data = data.rstrip(b"\r\n")
            try:
                yield line, data.decode("utf-8")
            except UnicodeDecodeError as error:
                yield line, _not_utf8(path, line, data, error)


def json_lines(path: "str | Path") -> Iterator[tuple[int, Any]]:
    r"""Yield (line number, value) for each non-blank line of a JSONL file; a broken line's value is its `RecordError`.

    The one JSONL reader of the package: callers decide whether a broken line (bad JSON, not UTF-8) stops them, is
    reported or is skipped. A file that cannot be opened raises `RecordError`.
    """
    for line, text in text_lines(path):
        if isinstance(text, RecordError):
            yield line, text
            continue

        if not text.strip():
            continue

        try:
            yield line, json.loads(text)
        except json.JSONDecodeError as error:
            yield line, record_error(str(path), line, None, f"broken JSON ({error}): fix the line.")


def read_yaml(path: "str | Path", overrides: list[str] | None = None) -> dict[str, Any]:
    r"""A YAML mapping with `key=value` overrides (OmegaConf dotted keys, as `llamafactory-cli train`).

    A missing file, broken YAML or a document that is not a mapping is a `RecordError` naming the file.
    """
    from omegaconf import OmegaConf
    from yaml import YAMLError

    path = Path(path)
    if not path.is_file():
        raise RecordError(str(path), None, "file not found: fix the path.")

    try:
        config = OmegaConf.load(path)
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RecordError(
            str(path), line, f"broken YAML ({getattr(error, 'problem', None) or error}): fix it."
        ) from None

    if not isinstance(OmegaConf.to_container(config), dict):
        raise RecordError(str(path), None, "expected a mapping of keys to values (key: value lines).")

    try:
        return OmegaConf.to_container(OmegaConf.merge(config, OmegaConf.from_cli(overrides or [])))
    except Exception as error:  # OmegaConf's several parse and merge errors
        raise RecordError(str(path), None, f"cannot apply the overrides {overrides} ({error}).") from None


def check_folder(path: "str | Path", fix: str = "move the file away or write elsewhere") -> None:
    r"""Raise `RecordError` if `path`, or the nearest existing folder above it, is a file (nothing could go under it)."""
    for folder in (Path(path), *Path(path).parents):
        if folder.exists():
            if not folder.is_dir():
                raise RecordError(str(folder), None, f"is a file, not a folder: {fix}.")

            return


def _remove_stale_temporaries(paths: Iterable[Path]) -> None:
    r"""Remove the temporaries `.<name>.<random>.tmp` of these files that a killed run left beside them."""
    names: dict[Path, set[str]] = defaultdict(set)
    for path in paths:
        names[path.parent].add(path.name)

    for folder, wanted in names.items():
        if not folder.is_dir():
            continue

        for entry in os.scandir(folder):
            name = entry.name
            if name.startswith(".") and name.endswith(".tmp") and name[1:-4].rpartition(".")[0] in wanted:
                Path(entry.path).unlink(missing_ok=True)


def _stage(path: Path, data: str | bytes) -> Path:
    r"""Write `data` to a new temporary file beside `path`, flushed to disk, with the mode `path` has or will get."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)  # a replaced file keeps its mode
    except FileNotFoundError:
        mode = None  # a new file gets the umask's, as open() gives it

    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
            break
        except FileExistsError:
            continue

    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # the umask may have taken bits away

            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

    return temporary


def write_files(files: Mapping["str | Path", str | bytes]) -> None:
    r"""Write several files all or nothing: each to a temporary name beside it, then all renamed, in the given order.

    Temporaries of these files left by a killed run are removed first, and none is left after a failure. A replaced
    file keeps its mode; a new one gets the umask's. `RecordError` if a target is a folder or lies under a file.
    """
    paths = {Path(path): data for path, data in files.items()}
    for folder in {path.parent for path in paths}:
        check_folder(folder)

    for path in paths:
        if path.is_dir():
            raise RecordError(str(path), None, "is a folder, not a file: move it away or write elsewhere.")

    _remove_stale_temporaries(paths)
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in paths.items():
            staged.append((_stage(path, data), path))

        for temporary, path in staged:
            os.replace(temporary, path)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)

        raise


def atomic_write(path: "str | Path", data: str | bytes) -> None:
    r"""Write a text or binary file atomically (`write_files` of one file)."""
    write_files({path: data})


def jsonl(rows: Iterable[dict[str, Any]]) -> str:
    r"""Rows as the text of a JSONL file."""
    return "".join(f"{json.dumps(row, ensure_ascii=False)}\n" for row in rows)


def write_jsonl(path: "str | Path", rows: Iterable[dict[str, Any]]) -> int:
    r"""Write rows as JSON lines atomically; return how many were written."""
    rows = list(rows)
    atomic_write(path, jsonl(rows))
    return len(rows)
