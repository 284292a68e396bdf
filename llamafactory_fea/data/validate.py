r"""Validate registered FEA datasets row by row; converters run the same checks on every row they write."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..fea.aus import AU_CATALOGUE, format_au
from ..fea.emotions import EMOTIONS
from ..fea.labels import response_labels
from ..fea.parsing import ParsedCompletion, _answer_problems, _reasoning_problems, _tag_problems, parse_completion
from .files import RecordError, record_error
from .records import DATASET_INFO, dataset_file_rows, read_dataset_info


IMAGE_TOKEN = "<image>"


def image_problem(path: Path) -> str | None:
    r"""Why an image file cannot be used (missing, not an image, corrupt or truncated), else None."""
    if not path.is_file():
        return f"image {path} does not exist: fix the image path or add the file."

    try:
        with Image.open(path) as image:
            image.verify()

        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises several types for unreadable files
        return f"image {path} cannot be read ({type(error).__name__}: {error}): replace it with a valid image file."

    return None


def _message_problems(messages: Any, images: Any) -> list[str]:
    r"""Schema faults of the `messages` and `images` columns of a sharegpt row with one image."""
    if not isinstance(messages, list) or len(messages) < 2 or not all(isinstance(m, dict) for m in messages):
        return ["'messages' must be a list of at least two {role, content} objects: a user turn, then the assistant."]

    roles = [message.get("role") for message in messages]
    if roles != ["user", "assistant"] * (len(roles) // 2) or len(roles) % 2:
        return [f"'messages' roles must alternate user, assistant and end with the assistant; got {roles}."]

    if not all(isinstance(message.get("content"), str) for message in messages):
        return ["every message needs a string 'content'."]

    if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], str) or not images[0]:
        return ["'images' must be a list with one image path."]

    tokens = sum(message["content"].count(IMAGE_TOKEN) for message in messages)
    if tokens != 1:
        return [f"the user turn must hold exactly one {IMAGE_TOKEN} token for the one image; found {tokens}."]

    return []


def _label_problems(emotion: Any, aus: Any) -> list[str]:
    r"""Faults of the `emotion` and `aus` label columns; null is "not labelled", `aus: []` is "no active AU"."""
    problems = []
    if emotion is not None and emotion not in EMOTIONS:
        problems.append(f"'emotion' must be a normalised emotion ({', '.join(EMOTIONS)}) or null; got {emotion!r}.")

    if aus is None:
        return problems

    if not isinstance(aus, list) or not all(isinstance(au, int) and not isinstance(au, bool) for au in aus):
        return [
            *problems,
            f"'aus' must be a list of AU numbers (ints), e.g. [1, 4], [] for no active AU, or null when not "
            f"labelled; got {aus!r}.",
        ]

    unknown = [format_au(au) for au in aus if au not in AU_CATALOGUE]
    if unknown:
        problems.append(f"{', '.join(unknown)} not in the AU catalogue: use catalogue AUs only.")

    if aus != sorted(set(aus)):
        problems.append(f"'aus' must be sorted without repeats; got {aus}, expected {sorted(set(aus))}.")

    return problems


def _completion_problems(parsed: ParsedCompletion, emotion: str | None, aus: list[int] | None) -> list[str]:
    r"""The parser's faults of a target that count for these labels.

    Without an emotion label (AU-only data) the answer is not graded, so it may be empty or any word; with `aus: []`
    (no active AU) a reasoning may name no AU.
    """
    problems = _tag_problems(parsed.text)
    rightly_none = aus == [] and not parsed.aus  # labelled "no active AU" and none named
    if not rightly_none or parsed.reasoning == "":
        problems += _reasoning_problems(parsed.reasoning, parsed.aus)

    if emotion is not None:
        problems += _answer_problems(parsed.answer)

    return problems


def _target_problems(target: str, emotion: str | None, aus: list[int] | None) -> list[str]:
    r"""Faults of the assistant target: it must parse cleanly and agree with each label the row has.

    A label-only row (benchmark data without reasoning) has no `<think>` block: its target is `<answer>emotion</answer>`
    (`<answer></answer>` without an emotion label). With reasoning, the answer must be the emotion label and the
    reasoning must name exactly the labelled AUs; a label the row does not have (null) is not checked.
    """
    if "<think>" not in target:
        expected = f"<answer>{emotion or ''}</answer>"
        return [] if target == expected else [f"a label-only target must be {expected!r}; got {target!r}."]

    parsed = parse_completion(target)
    problems = [f"assistant target: {problem}" for problem in _completion_problems(parsed, emotion, aus)]
    if emotion is not None and parsed.emotion is not None and parsed.emotion != emotion:
        problems.append(f"the target answers {parsed.emotion!r} but the label is {emotion!r}: make them agree.")

    if aus is not None and parsed.aus and parsed.aus != set(aus):
        named, labelled = sorted(parsed.aus), sorted(aus)
        problems.append(
            f"the reasoning names {', '.join(map(format_au, named))} but the labels are "
            f"{', '.join(map(format_au, labelled)) or 'none'}: the reasoning must name exactly the labelled AUs."
        )

    return problems


NO_LABEL = (
    "no label: 'emotion' and 'aus' are both null and the reference answer names no emotion in <answer> and no AU in "
    "<think>. Give 'emotion' (e.g. \"anger\") and/or 'aus' (e.g. [1, 4], or [] for no active AU), or remove the row."
)


def row_problems(row: Any, media_dir: "str | Path") -> list[str]:
    r"""Every fault of one FEA row: schema, image, labels and assistant target (duplicate ids are `RowChecker`'s).

    A row may carry one label only (`emotion` or `aus` null: not labelled); a row with neither takes its labels from
    its reference answer (`fea.labels.response_labels`) and is refused when that gives none.
    """
    if not isinstance(row, dict):
        return [f"a row must be a JSON object; got {type(row).__name__}."]

    if not isinstance(row.get("id"), str) or not row["id"]:
        return ["'id' must be a non-empty string."]

    problems = _message_problems(row.get("messages"), row.get("images"))
    if problems:
        return problems

    problem = image_problem(Path(media_dir) / row["images"][0])
    problems = [problem] if problem else []
    emotion, aus = row.get("emotion"), row.get("aus")
    problems += _label_problems(emotion, aus)
    if problems:
        return problems

    target = row["messages"][-1]["content"]
    if emotion is None and aus is None:
        emotion, aus = response_labels(target)
        if emotion is None and aus is None:
            return [NO_LABEL]

    return _target_problems(target, emotion, aus)


@dataclass
class RowChecker:
    r"""Checks rows one by one (`row_problems`) and remembers every id to catch duplicates across files."""

    media_dir: Path
    seen: dict[str, str] = field(default_factory=dict)

    def check(self, row: Any, source: str, line: int) -> list[RecordError]:
        r"""The row's faults as errors located at `source:line:id`; its id is remembered."""
        record_id = row.get("id") if isinstance(row, dict) else None
        reasons = row_problems(row, self.media_dir)
        if isinstance(record_id, str) and record_id in self.seen:
            reasons.append(
                f"duplicate id {record_id!r} (first at {self.seen[record_id]}): give each record its own id."
            )
        elif isinstance(record_id, str):
            self.seen[record_id] = f"{source}:{line}"

        return [record_error(source, line, record_id, reason) for reason in reasons]


@dataclass
class FileReport:
    r"""The validation result of one dataset file: rows read, rows valid, and each fault with its location."""

    dataset: str
    path: str
    rows: int = 0
    valid: int = 0
    problems: list[RecordError] = field(default_factory=list)

    def summary(self) -> str:
        r"""One line of counts, then every fault."""
        lines = [f"{self.dataset} ({self.path}): {self.rows} rows, {self.valid} valid, {len(self.problems)} problems."]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def missing_file_fix(path: Path, dataset_dir: "str | Path") -> str:
    r"""What makes a registered file that is missing: the `data convert` command when a converter writes it.

    Converters write `<name>/<split>.jsonl` and live in `converters/<name>.py` (read from the folder: the converters
    import this module).
    """
    source = path.parent.name
    if (
        path.suffix == ".jsonl"
        and source != "base"
        and (Path(__file__).parent / "converters" / f"{source}.py").is_file()
    ):
        return (
            f"run `llamafactory-fea data convert {source} ... --dataset-dir {dataset_dir}` on your copy of the data "
            f"(options: `llamafactory-fea data convert {source} --help`), or fix 'file_name'."
        )

    return "convert the dataset or fix 'file_name'."


JSON_BLOCK = 10 << 20  # `datasets`' JSON reader: the bytes whose rows type the columns (its `chunksize`)


def first_block_lines(path: Path, block: int = JSON_BLOCK) -> int:
    r"""How many lines of a JSONL file `datasets` reads as its first block (the block, then on to the line's end)."""
    with open(path, "rb") as f:
        head = f.read(block)
        head += f.readline() if head else b""  # as `datasets` does, even when the block ends a line

    return head.count(b"\n") + (not head.endswith(b"\n") and bool(head))


def untyped_column_problems(rows: list[tuple[int, Any]], block_lines: int) -> list[tuple[int, Any, str]]:
    r"""(line, id, reason) where a column gets its first value after `datasets`' first block.

    LLaMA-Factory reads a JSONL file with `datasets`, which types each column from the rows of the file's first
    block (10 MB) and fails ("Couldn't cast ...") on a later value of a column that was absent, null or `[]` in every
    one of them: partially labelled data (`emotion`/`aus` null) sorted by source does this.
    """
    typed, problems = set(), []
    for line, row in rows:
        if not isinstance(row, dict):
            continue

        valued = {key for key, value in row.items() if value is not None and value != [] and value != {}}
        if line <= block_lines:
            typed |= valued
            continue

        for key in sorted(valued - typed):
            typed.add(key)  # said once
            problems.append(
                (
                    line,
                    row.get("id"),
                    f"column {key!r} has its first value here, after the {block_lines} rows of the file's first 10 "
                    "MB, where it is absent, null or [] in every row: LLaMA-Factory's JSON reader (datasets) types "
                    "each column from those rows and fails on this one. Move a row with a value in it to the top "
                    "(`data convert` writes its rows so).",
                )
            )

    return problems


def validate_file(dataset: str, path: Path, checker: RowChecker, dataset_dir: "str | Path" = ".") -> FileReport:
    r"""Validate every line of a JSONL or JSON-array dataset file (read as LLaMA-Factory reads it)."""
    report = FileReport(dataset, str(path))
    if not path.is_file():
        report.problems.append(RecordError(str(path), None, f"file not found: {missing_file_fix(path, dataset_dir)}"))
        return report

    try:
        rows = list(dataset_file_rows(path))
    except RecordError as error:
        report.problems.append(error)
        return report

    untyped: dict[int, list[RecordError]] = {}
    if path.suffix != ".json":  # a JSON array is read whole
        for line, record_id, reason in untyped_column_problems(rows, first_block_lines(path, JSON_BLOCK)):
            untyped.setdefault(line, []).append(record_error(str(path), line, record_id, reason))

    for line, row in rows:
        report.rows += 1
        errors = [row] if isinstance(row, RecordError) else checker.check(row, str(path), line)
        errors += untyped.get(line, [])

        report.problems += errors
        report.valid += not errors

    return report


def validate_datasets(
    dataset_dir: "str | Path", datasets: list[str], media_dir: "str | Path | None" = None
) -> list[FileReport]:
    r"""Validate registered datasets of `dataset_dir/dataset_info.json`; ids must be unique across all of them.

    Raises `RecordError` when the registry cannot be read.
    """
    dataset_dir = Path(dataset_dir)
    info_path = dataset_dir / DATASET_INFO
    info = read_dataset_info(dataset_dir)
    checker = RowChecker(Path(media_dir) if media_dir is not None else dataset_dir)
    reports = []
    for dataset in datasets:
        if not isinstance(info.get(dataset), dict) or not isinstance(info[dataset].get("file_name"), str):
            report = FileReport(dataset, str(info_path))
            known = ", ".join(sorted(info)) or "none"
            report.problems.append(
                RecordError(str(info_path), None, f"dataset {dataset!r} is not registered (known: {known}).")
            )
            reports.append(report)
            continue

        reports.append(validate_file(dataset, dataset_dir / info[dataset]["file_name"], checker, dataset_dir))

    return reports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea data validate`."""
    parser.add_argument("--dataset-dir", default="data_registry", help="Folder with dataset_info.json.")
    parser.add_argument(
        "--dataset", action="append", required=True, help="Registered dataset name; repeat for several."
    )
    parser.add_argument("--media-dir", default=None, help="Folder image paths are relative to; None: the dataset dir.")


def run(args: argparse.Namespace) -> int:
    r"""Print each file's counts and every fault; return 1 if any fault was found (or the registry is unusable), else 0."""
    try:
        reports = validate_datasets(args.dataset_dir, args.dataset, args.media_dir)
    except RecordError as error:
        print(f"error: {error}")
        return 1

    for report in reports:
        print(report.summary())

    return 1 if any(report.problems for report in reports) else 0
