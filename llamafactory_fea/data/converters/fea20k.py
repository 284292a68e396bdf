r"""FEA-20K (the Facial-R1 release, annotations only) to registered LLaMA-Factory sharegpt rows.

The release is one JSON object a line (`id`, `dataset`, `image`, `question`, `AUs`, `labels`, `description`,
`meta_info`) in files per source dataset and per training stage. Give files or folders (every `*.jsonl` below them);
a file's split is `test` when a word of its name or of its folders below the given one is "test", else `train`
(`--train`/`--test` name it), and its stage is a `stage<N>` word there. Each (stage, split) is one dataset. Stage 1
is FEA-20K itself (the reference's README: the stage-1 train files together are its train set, the test files its
test set), so stage-1 files and files without a stage go to `fea20k_<split>` (file `fea20k/<split>.jsonl`); a later
stage N goes to `fea20k_stage<N>_<split>`. The stages are trained on separately (the reference's stage 1 SFT, stage
2 GRPO, stage 3 task-specific enhancement), so an id may repeat across stages; within a stage, across its splits
too, it is a duplicate.

Labels, by each record's source (`dataset`, any spelling: "RAF-DB", "raf_db", "CK+"):
- the emotion is the one word of `labels` (capitalised or adjective forms are fine), checked against the source's
  label space (`fea.emotions.LABEL_SPACES`: AffectNet, CK+, NHFI and FERPlus allow contempt; RAF-AU has no neutral;
  an unknown source has the basic seven); an empty `labels` list is "emotion not labelled" (null), as in the AU-only
  sources DISFA and BP4D;
- the AUs are `AUs`, each one of the AU catalogue; an empty list means "no active AU" from a source that codes AUs
  (DISFA, BP4D, FABA, RAF-AU; `--au-sources` names others) and "AUs not labelled" (null) from any other source, as
  in the emotion-only sources FER2013, AffectNet and RAF-DB. A non-empty list is a label from every source: the
  reference grades AUs wherever a record lists some (its `au_reward`, its synthesis check `if gold_aus`), and reads an
  empty list as nothing to check. It never tells "none active" from "not coded"; we do, by source, so that a DISFA
  frame with no active AU teaches that none is active.
- a record with neither label is rejected.

The target is `description`, as the reference's SFT uses it: a well-formed tagged completion
(`<think>...</think><answer>...</answer>`, one block each, nothing around) as it is; plain text as the reasoning,
wrapped as `<think>description</think><answer>emotion</answer>`; a description with any think/answer tag that is not
well formed is rejected (never wrapped again, so no tag is ever nested). No description is a label-only row
(`<answer>emotion</answer>`, the reference's GRPO rows). Every row is then checked as `data validate` checks it: the
answer must be the emotion label and the reasoning must name exactly the labelled AUs (a label that is null is not
checked).

The user turn keeps the record's own `question` by default (`--question framed`): inside the prompt set's question
when it frames one (`{question}`, the `reference` set), else the record's question first and the FEA requirements
after it; `--question fea` is the plain FEA question and `--question record` the record's question alone. The
emotion choices are the source's label space. Rows are written with `dataset` = the source's key (its label space
for the prompt set and synthesis), `source` = its spelling in the file, and `emotion`/`aus` null where not labelled,
in input order but for the first row with an emotion and the first with AUs, which go to the top (`records.typed_first`:
LLaMA-Factory's JSON reader takes a column's type from the file's first 10 MB and fails on a column null throughout
them).
"""

import argparse
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...fea.aus import UnknownAUError, parse_au
from ...fea.emotions import UnknownEmotionError, normalize_emotion, source_key, source_label_space
from ...fea.parsing import _tag_problems
from ...fea.prompts import FEAPrompts, load_prompt_set
from ..files import RecordError, json_lines, record_error
from ..records import FEARecord, read_dataset_info, typed_first
from ..validate import IMAGE_TOKEN, row_problems
from .base import DEFAULT_DATASET_DIR, ConversionReport, Converter, register_converter, write_outputs


NAME = "fea20k"
SPLITS = ("train", "test")
AU_SOURCES: tuple[str, ...] = ("disfa", "bp4d", "faba", "raf_au")  # an empty AU list is a label: no active AU
QUESTION_MODES = ("framed", "fea", "record")
TAGS = re.compile(r"</?\s*(?:think|answer)\s*>", re.IGNORECASE)  # any spelling of a tag marks a tagged description
STAGE = re.compile(r"stage[\s_-]*(\d+)", re.IGNORECASE)
# field: (accepted types, required)
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": ((str, int), True),
    "image": ((str,), True),
    "AUs": ((list,), True),
    "labels": ((list,), True),
    "description": ((str,), False),
    "question": ((str,), False),
    "dataset": ((str,), False),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea data convert fea20k`."""
    parser.description = (
        "Convert FEA-20K annotation files (JSON lines, per source dataset and per stage, as published) into "
        "registered sharegpt datasets: fea20k_<split> (file fea20k/<split>.jsonl) for stage-1 files (FEA-20K "
        "itself) and files without a stage, fea20k_stage<N>_<split> for files whose name or folder says stage<N> "
        "(N >= 2). A file is the test split when its name or folder says test, else "
        "train. Each record's label space comes from its source (`dataset`); an empty `labels` list is 'emotion not "
        "labelled', an empty `AUs` list 'no active AU' from a source that codes AUs (DISFA, BP4D, FABA, RAF-AU) and "
        "'AUs not labelled' otherwise. Every rejected record is printed with its file, line, id and fix, and each "
        "source's counts. Exit status: 0 when every record was converted; 1 when any record was rejected (then "
        "nothing is written and previous outputs stay as they were) unless --allow-rejects is given, which writes "
        "the good records and exits 0; 1 when nothing could be written. All files are written together or none; "
        "past 20 rejections the full list goes to <dataset-dir>/fea20k/rejected.txt."
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="FEA-20K annotation files (JSONL) or folders of them (*.jsonl)."
    )
    parser.add_argument(
        "--train", action="append", default=[], help="An annotation file of the train split (repeat for several)."
    )
    parser.add_argument(
        "--test", action="append", default=[], help="An annotation file of the test split (repeat for several)."
    )
    parser.add_argument(
        "--image-dir",
        action="append",
        default=[],
        metavar="[SOURCE=]DIR",
        help="Folder the records' relative image paths start from (default: their file's folder). SOURCE=DIR sets "
        "it for one source dataset (`dataset`, e.g. RAF-DB=/data/RAF-DB) or one file (its name without .jsonl); "
        "repeat for several.",
    )
    parser.add_argument(
        "--dataset-dir", default=DEFAULT_DATASET_DIR, help="Folder with dataset_info.json to write into."
    )
    parser.add_argument(
        "--question",
        choices=QUESTION_MODES,
        default="framed",
        help="The user turn: `framed` (default) keeps the record's own question inside the FEA prompt (in the "
        "prompt set's {question}, else before the FEA requirements); `fea` is the plain FEA question; `record` the "
        "record's question alone. Records without a question get the FEA question.",
    )
    parser.add_argument(
        "--keep-question",
        dest="question",
        action="store_const",
        const="record",
        help="Deprecated: the same as --question record.",
    )
    parser.add_argument(
        "--prompts", default=None, help="Prompt set of the question: concise (default), reference, or a JSON file."
    )
    parser.add_argument(
        "--au-sources",
        default=",".join(AU_SOURCES),
        help="Comma list of source datasets whose empty AU list means 'no active AU'; an empty AU list of any other "
        "source means 'AUs not labelled'.",
    )
    parser.add_argument(
        "--allow-rejects", action="store_true", help="Write the good records even if some are rejected (exit 0)."
    )


@dataclass
class SourceCounts:
    r"""What happened to one source's records: read, converted (good; written when the run writes), rejected by reason."""

    read: int = 0
    converted: int = 0
    emotions: int = 0  # converted rows with an emotion label
    aus: int = 0  # converted rows with AU labels (an empty list counts)
    rejected: Counter = field(default_factory=Counter)


@dataclass
class FEA20KReport(ConversionReport):
    r"""The conversion report plus, per source dataset, the records read, written and rejected (by reason)."""

    sources: dict[str, SourceCounts] = field(default_factory=dict)

    def count(self, source: str) -> SourceCounts:
        r"""The counts of a source (created on first use)."""
        return self.sources.setdefault(source, SourceCounts())

    def summary(self) -> str:
        r"""The base summary with one line per source after the totals."""
        first, *rest = super().summary().split("\n")
        lines = [first]
        for source, counts in sorted(self.sources.items()):
            written = counts.converted if self.written else 0
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items()))
            lines.append(
                f"  {source}: read {counts.read}, good {counts.converted} ({counts.emotions} with an emotion, "
                f"{counts.aus} with AUs), written {written}, rejected {sum(counts.rejected.values())}"
                + (f" ({reasons})" if reasons else "")
            )

        return "\n".join(lines + rest)


class Rejection(RecordError):
    r"""A rejected record with the kind of fault that the per-source report counts."""

    def __init__(self, kind: str, error: RecordError) -> None:
        super().__init__(error.source, error.where, error.reason)
        self.kind = kind


@dataclass(frozen=True)
class InputFile:
    r"""One annotation file and the dataset its rows go to."""

    path: Path
    split: str
    stage: str | None  # None: stage 1 (or none named)

    @property
    def output(self) -> str:
        r"""The output's key: `<split>` or `stage<N>_<split>` (file `fea20k/<key>.jsonl`, dataset `fea20k_<key>`)."""
        return f"{self.stage}_{self.split}" if self.stage else self.split


def _words(path: Path) -> list[str]:
    r"""The lower-case words of a path's parts (without the .jsonl suffix)."""
    text = " ".join([*path.parent.parts, path.stem])
    return re.findall(r"[a-z]+|\d+", text.lower())


def _input_file(path: Path, root: Path | None, split: str | None) -> InputFile:
    r"""An input file with its split (given, else `test` when the name says so) and its stage (`stage<N>`)."""
    named = path.relative_to(root) if root is not None else Path(path.name)
    if split is None:
        split = "test" if "test" in _words(named) else "train"

    stage = STAGE.search(named.as_posix())
    number = int(stage.group(1)) if stage else 1
    return InputFile(path, split, f"stage{number}" if number != 1 else None)  # stage 1 is FEA-20K itself


def input_files(args: argparse.Namespace, report: ConversionReport) -> list[InputFile]:
    r"""The files to convert (each once, in the order given; a folder's `*.jsonl` sorted); unusable inputs go to `report`."""
    given = [(Path(p), None) for p in args.inputs] + [(Path(p), s) for s in SPLITS for p in getattr(args, s)]
    files, seen = [], set()
    for path, split in given:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
            if not found:
                reason = "no *.jsonl file in this folder: give the folder of the annotation files."
                report.reject_input(RecordError(str(path), None, reason))

            candidates = [_input_file(p, path, split) for p in found]
        elif path.is_file():
            candidates = [_input_file(path, None, split)]
        else:
            report.reject_input(RecordError(str(path), None, "file not found: fix the path."))
            continue

        for candidate in candidates:
            if candidate.path.resolve() not in seen:
                seen.add(candidate.path.resolve())
                files.append(candidate)

    return files


def _field_problems(record: dict[str, Any]) -> list[str]:
    r"""Missing required fields and fields of the wrong type."""
    problems = []
    for name, (types, required) in FIELDS.items():
        value = record.get(name)
        if value is None:
            if required:
                problems.append(
                    f"missing field {name!r}: every record needs {', '.join(n for n, f in FIELDS.items() if f[1])} "
                    "(an empty list where a label is absent)."
                )
        elif not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in types)
            problems.append(f"field {name!r} must be {expected}, got {type(value).__name__}.")

    if not problems and not all(isinstance(item, (str, int)) for item in record["AUs"]):
        problems.append('\'AUs\' must be a list of AU names, e.g. ["AU1", "AU4"].')

    if not problems and not all(isinstance(item, str) for item in record["labels"]):
        problems.append("'labels' must be a list of emotion words, e.g. [\"Sadness\"].")

    return problems


@dataclass
class _Context:
    r"""What converting needs: folders, the question, the sources that code AUs, the ids seen per stage."""

    dataset_dir: Path
    image_dirs: dict[str, Path]
    default_image_dir: Path | None
    prompts: FEAPrompts
    question_mode: str
    au_sources: frozenset[str]
    seen: dict[str | None, dict[str, str]] = field(default_factory=dict)

    def image_dir(self, file: Path, source: str) -> Path:
        r"""Where a record's relative image path starts: its file's folder, its source's, the default, or the file's."""
        for key in (file.stem.lower(), source_key(source), source.lower()):
            if key in self.image_dirs:
                return self.image_dirs[key]

        return self.default_image_dir or file.parent


def _au_sources(value: str) -> frozenset[str]:
    r"""The `--au-sources` names as source keys (an unknown name by its lower-case spelling)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    return frozenset(source_key(name) or name.lower() for name in names)


def _image_dirs(values: list[str]) -> tuple[dict[str, Path], Path | None]:
    r"""The `--image-dir` values: per source or file (`NAME=DIR`, keyed by source key and lower-case name), default."""
    named, default = {}, None
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep:
            default = Path(value)
            continue

        named[name.strip().lower()] = Path(folder)
        if source_key(name):
            named[source_key(name)] = Path(folder)

    return named, default


def _labels(record: dict[str, Any], source: str, context: _Context) -> tuple[str | None, list[int] | None]:
    r"""The record's emotion and AUs by its source's rule (None: not labelled); raises `Rejection`-ready ValueErrors."""
    words = {word.strip() for word in record["labels"] if word.strip()}
    space = source_label_space(source)
    try:
        emotions = {normalize_emotion(word, space) for word in words}
    except UnknownEmotionError as error:
        raise _Fault("unknown emotion", f"source {source or '(none)'}: {error}") from None

    if len(emotions) > 1:
        raise _Fault("several emotions", f"'labels' must name exactly one emotion, got {record['labels']}.")

    try:
        aus = sorted({parse_au(au) for au in record["AUs"]})
    except UnknownAUError as error:
        raise _Fault("AU outside the catalogue", str(error)) from None

    if not aus and (source_key(source) or source.lower()) not in context.au_sources:
        aus = None  # an emotion-only source: its empty AU list codes nothing

    emotion = emotions.pop() if emotions else None
    if emotion is None and aus is None:
        raise _Fault(
            "no label",
            f"no label: 'labels' is empty and source {source or 'unnamed'} does not code AUs, so its empty 'AUs' is "
            "not a label. Give the emotion, or the AUs, or (for a source that codes AUs) --au-sources.",
        )

    return emotion, aus


class _Fault(ValueError):
    r"""A fault of one record, with its kind."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def _exact_tag(match: re.Match) -> str:
    r"""A tag as the parser reads it: lower case, no spaces."""
    return re.sub(r"\s+", "", match.group(0)).lower()


def _target(description: str | None) -> tuple[str | None, str | None]:
    r"""(completion, reasoning) of a description: tagged and well formed, plain, or (None, None) when there is none."""
    text = (description or "").strip()
    if not text:
        return None, None

    if not TAGS.search(text):
        return None, text

    faults = _tag_problems(text) or ([] if TAGS.sub(_exact_tag, text) == text else ["Write the tags in lower case."])
    if faults:
        raise _Fault(
            "malformed tagged description",
            f"'description' has think/answer tags but is not one <think>...</think><answer>...</answer> completion "
            f"({' '.join(faults)}): repair it, or remove the tags to have it wrapped.",
        )

    return text, None


def _question(record: dict[str, Any], space: tuple[str, ...], context: _Context) -> str:
    r"""The user turn's text (without the image token) by `--question`; the FEA question when the record has none."""
    own = (record.get("question") or "").replace(IMAGE_TOKEN, "").strip()
    fea = context.prompts.question(space)
    if not own or context.question_mode == "fea":
        return fea

    if context.question_mode == "record":
        return own

    if "{question}" in context.prompts.question_template:
        return context.prompts.question(space, own)

    return f"{own}\n\n{fea}"


def _image_path(image: str, image_dir: Path, dataset_dir: Path) -> str:
    r"""The image path for the row: relative to the dataset folder when the image lies under it, else absolute."""
    path, root = Path(os.path.abspath(image_dir / image)), Path(os.path.abspath(dataset_dir))
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _convert_record(record: Any, file: InputFile, line: int, context: _Context) -> dict[str, Any]:
    r"""One input record to an output row, or a `Rejection` naming the file, line, id and fix."""
    where = str(file.path)
    if isinstance(record, RecordError):  # a broken JSON line
        raise Rejection("broken JSON", record)

    if not isinstance(record, dict):
        error = record_error(where, line, None, f"a record must be a JSON object, got {type(record).__name__}.")
        raise Rejection("not a record", error)

    problems = _field_problems(record)
    if problems:
        raise Rejection("bad fields", record_error(where, line, record.get("id"), " ".join(problems)))

    source, record_id = record.get("dataset") or "", str(record["id"])
    try:
        emotion, aus = _labels(record, source, context)
        completion, reasoning = _target(record.get("description"))
    except _Fault as fault:
        raise Rejection(fault.kind, record_error(where, line, record["id"], str(fault))) from None

    first = context.seen.setdefault(file.stage, {}).get(record_id)
    if first is not None:
        reason = f"duplicate id {record_id!r} (first at {first}): give each record its own id."
        raise Rejection("duplicate id", record_error(where, line, record["id"], reason))

    space = source_label_space(source)
    row = FEARecord(
        id=record_id,
        image=_image_path(record["image"], context.image_dir(file.path, source), context.dataset_dir),
        emotion=emotion,
        aus=aus,
        reasoning=reasoning,
        dataset=source_key(source) or (source.lower() if source else NAME),
        question=_question(record, space, context),
        extra={"source": source},
        completion=completion,
    ).to_row()
    problems = row_problems(row, context.dataset_dir)
    if problems:
        kind = "missing or unreadable image" if problems[0].startswith("image ") else "target fails validation"
        raise Rejection(kind, record_error(where, line, record["id"], " ".join(problems)))

    context.seen[file.stage][record_id] = f"{where}:{line}"
    return row


def _records(file: InputFile, report: FEA20KReport) -> Iterator[tuple[int, Any]]:
    r"""(line, record) of a file; a file that cannot be read counts as one rejected input."""
    try:
        yield from json_lines(file.path)
    except RecordError as error:
        report.reject_input(error)


def run(args: argparse.Namespace) -> ConversionReport:
    r"""Convert the given files; write them (atomically) and register them only under the exit-code policy."""
    read_dataset_info(args.dataset_dir)  # a registry that cannot be updated stops the run before any input is read
    report = FEA20KReport(source=NAME)
    if not (args.inputs or args.train or args.test):
        report.notes.append("Nothing to convert: give annotation files or folders (or --train/--test files).")
        return report

    try:
        prompts = load_prompt_set(args.prompts) if args.prompts else FEAPrompts()
    except (OSError, ValueError) as error:
        report.notes.append(f"Nothing converted: cannot use --prompts {args.prompts}: {error}")
        return report

    image_dirs, default_image_dir = _image_dirs(args.image_dir)
    dataset_dir = Path(args.dataset_dir)
    context = _Context(
        dataset_dir, image_dirs, default_image_dir, prompts, args.question, _au_sources(args.au_sources)
    )
    outputs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for file in input_files(args, report):
        groups = outputs.setdefault(file.output, {})
        for line, record in _records(file, report):
            source = (record.get("dataset") if isinstance(record, dict) else None) or file.path.stem
            source = source if isinstance(source, str) else file.path.stem
            counts = report.count(source)
            counts.read += 1
            report.read += 1
            try:
                row = _convert_record(record, file, line, context)
            except Rejection as error:
                counts.rejected[error.kind] += 1
                report.reject(error)
                continue

            counts.converted += 1
            counts.emotions += row["emotion"] is not None
            counts.aus += row["aus"] is not None
            groups.setdefault(source, []).append(row)

    rows = {
        output: typed_first([row for rows in groups.values() for row in rows]) for output, groups in outputs.items()
    }
    return write_outputs(NAME, dataset_dir, rows, report, args.allow_rejects)


register_converter(
    Converter(
        name=NAME, help="FEA-20K annotations (Facial-R1) with your images.", add_arguments=add_arguments, run=run
    )
)
