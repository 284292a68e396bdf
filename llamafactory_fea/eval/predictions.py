r"""Predictions to score: LLaMA-Factory's `generated_predictions.jsonl` (labels from its `label`, or joined with the
dataset), or any JSONL with its own labels. A row may lack an emotion or the AUs: None is "not labelled"."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.files import RecordError
from ..data.records import DATASET_INFO, dataset_objects, read_dataset_info
from ..fea.aus import UnknownAUError
from ..fea.emotions import UnknownEmotionError
from ..fea.labels import TAG_PATTERN, extract_labels, label_aus, label_columns, label_emotion, think_text
from ..fea.parsing import ParsedCompletion, parse_completion


COMPLETION_FIELDS: tuple[str, ...] = ("predict", "completion", "response", "output")
LABEL_COLUMNS: tuple[str, ...] = ("emotion", "labels", "aus", "AUs", "au_labelled")  # `label` is the decoded target
REFERENCE_FIELDS: tuple[str, ...] = ("reference", "reasoning", "description")


@dataclass(frozen=True)
class EvalSample:
    r"""One scored example: the model's completion (parsed) beside the labels and the reference reasoning."""

    index: int
    id: str
    completion: str
    parsed: ParsedCompletion
    emotion: str | None  # None: not labelled
    aus: frozenset[int] | None  # None: not labelled; empty: labelled, no active AU
    target: str | None = None  # the whole reference answer (tagged description): the reference protocol's text
    reference: str | None = None  # the reference reasoning (the target's <think>, or a plain reference text)
    references: dict[str, str] = field(default_factory=dict)  # task references, e.g. FABA's reference_au

    @property
    def au_labelled(self) -> bool:
        r"""Whether the sample has AU labels (an empty set is a label: no active AU)."""
        return self.aus is not None


@dataclass
class JoinInfo:
    r"""How predictions met their labels: the source, the dataset joined by order, and truncated labels."""

    predictions: str
    dataset: str | None = None
    dataset_file: str | None = None
    rows: int = 0
    truncated_labels: int = 0
    labels_from: str = "columns"  # "columns" (dataset or file) or "label" (LLaMA-Factory's decoded reference answer)


def progress(items: Iterable[Any], total: int, description: str) -> Iterable[Any]:
    r"""`items` with a progress bar on stderr when it is a terminal (none in logs and pipes)."""
    from tqdm import tqdm

    return tqdm(items, total=total, desc=description, unit="sample", disable=None, leave=False)


def read_jsonl(path: "str | Path") -> list[tuple[int, dict[str, Any]]]:
    r"""(line number, object) for each row of a JSONL (or `.json` array) file; `RecordError` on a broken row."""
    if not Path(path).exists():
        raise RecordError(str(path), None, "file not found.")

    return dataset_objects(path)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def gold_labels(
    row: dict[str, Any], response: str | None, source: str, where: "int | str"
) -> tuple[str | None, frozenset[int] | None]:
    r"""The normalised emotion and AU set of a row (None: not labelled), by `fea.labels.extract_labels`.

    The label columns (`emotion`/`labels`, `aus`/`AUs`) win when the row has any; else the labels come from the
    reference `response`. A row's `au_labelled: false` (converters of emotion-only sources) means its AUs are not
    labelled. Label values are checked strictly: an unknown emotion or AU is a `RecordError`, not a silent skip.
    """
    emotion, aus = label_columns(row)
    if aus is not None and not isinstance(aus, list):
        raise RecordError(source, where, f"'aus' must be a list, got {type(aus).__name__}.")

    try:
        label_emotion(emotion, strict=True)
        label_aus(aus, strict=True)
        labels = extract_labels(row, response)
        emotion = label_emotion(labels["emotion"], strict=True)
    except (UnknownEmotionError, UnknownAUError) as error:
        raise RecordError(source, where, str(error)) from None

    au_set = None if labels["aus"] is None else frozenset(labels["aus"])
    if row.get("au_labelled") is False:
        au_set = None
    elif row.get("au_labelled") is True and au_set is None:
        au_set = frozenset()

    return emotion, au_set


def reference_reasoning(target: str | None) -> str | None:
    r"""The reasoning to compare with: the `<think>` of a tagged target, a plain text as it is, None for neither.

    >>> (
    ...     reference_reasoning("<think>Brows down (AU4).</think><answer>anger</answer>"),
    ...     reference_reasoning("<answer>x</answer>"),
    ... )
    ('Brows down (AU4).', None)
    """
    if not target or not target.strip():
        return None

    if TAG_PATTERN.search(target):
        return think_text(target) or None

    return target.strip()


def _sample(
    index: int,
    record_id: str,
    completion: str,
    gold: dict[str, Any],
    response: str | None,
    target: str | None,
    source: str,
    where: "int | str",
) -> EvalSample:
    r"""Build one sample from a completion, a row's label columns and its reference answer (`target`)."""
    emotion, aus = gold_labels(gold, response, source, where)
    references = {key: gold[key] for key in ("reference_au", "reference_emotion") if isinstance(gold.get(key), str)}
    return EvalSample(
        index=index,
        id=record_id,
        completion=completion,
        parsed=parse_completion(completion),
        emotion=emotion,
        aus=aus,
        target=target if target and target.strip() else None,
        reference=reference_reasoning(target),
        references=references,
    )


def dataset_rows(dataset_dir: "str | Path", dataset: str) -> tuple[Path, list[tuple[int, dict[str, Any]]]]:
    r"""The rows of a dataset registered in `dataset_dir/dataset_info.json` (a local JSONL or JSON-array file)."""
    info_path = Path(dataset_dir) / DATASET_INFO
    info = read_dataset_info(dataset_dir)
    if not info_path.is_file():
        raise RecordError(str(info_path), None, "no dataset_info.json: give the --dataset-dir of the predict run.")

    if not isinstance(info.get(dataset), dict) or not isinstance(info[dataset].get("file_name"), str):
        raise RecordError(str(info_path), None, f"dataset {dataset!r} is not registered (known: {', '.join(info)}).")

    path = Path(dataset_dir) / info[dataset]["file_name"]
    return path, read_jsonl(path)


def assistant_turn(row: dict[str, Any]) -> str:
    r"""The last assistant turn of a sharegpt row (the reference target LLaMA-Factory decodes as `label`)."""
    messages = row.get("messages") or []
    turns = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    return turns[-1] if turns else ""


def join_predictions(
    predictions: "str | Path", dataset_dir: "str | Path", dataset: str, max_samples: int | None = None
) -> tuple[list[EvalSample], JoinInfo]:
    r"""Join LLaMA-Factory's predictions (`prompt`, `predict`, `label` per line, in dataset order) with the dataset.

    The join is by position and is checked: the counts must agree (after `max_samples`) and each line's decoded
    `label` must be the row's assistant turn (or a prefix of it, when `cutoff_len` cut it), else `RecordError`.
    """
    path, rows = dataset_rows(dataset_dir, dataset)
    predicted = read_jsonl(predictions)
    if max_samples is not None:
        rows = rows[:max_samples]

    if len(predicted) != len(rows):
        raise RecordError(
            str(predictions),
            None,
            f"{len(predicted)} predictions but {dataset} ({path}) has {len(rows)} rows"
            f"{' after --max-samples' if max_samples is not None else ''}: LLaMA-Factory writes one line per example "
            "in dataset order; pass --max-samples N if the predict run used max_samples, and the same dataset.",
        )

    info = JoinInfo(str(predictions), dataset, str(path), len(rows))
    samples = []
    joined = progress(zip(predicted, rows), len(rows), f"reading {dataset}")
    for index, ((line, prediction), (_, row)) in enumerate(joined):
        if not isinstance(prediction.get("predict"), str) or not isinstance(prediction.get("label"), str):
            raise RecordError(str(predictions), line, "expected LLaMA-Factory's 'predict' and 'label' strings.")

        label, target = _normalise(prediction["label"]), _normalise(assistant_turn(row))
        if label != target:
            if not label or not target.startswith(label):
                raise RecordError(
                    str(predictions),
                    line,
                    f"its label {label[:80]!r} is not the assistant turn of row {index + 1} of {dataset} "
                    f"({target[:80]!r}): the predictions come from another dataset or order.",
                )

            info.truncated_labels += 1

        target = row["description"] if isinstance(row.get("description"), str) else assistant_turn(row)
        samples.append(
            _sample(
                index,
                str(row.get("id", index)),
                prediction["predict"],
                row,
                assistant_turn(row),
                target,
                str(path),
                index + 1,
            )
        )

    return samples, info


def labelled_predictions(predictions: "str | Path") -> tuple[list[EvalSample], JoinInfo]:
    r"""Read prediction lines on their own: a completion plus the line's label columns, else its `label`.

    LLaMA-Factory's `generated_predictions.jsonl` (`prompt`, `predict`, `label`) has no label columns: the labels are
    read from `label`, the decoded reference answer (its `<answer>` and the AUs its `<think>` names), as the GRPO
    stage reads plain sharegpt data. A line with `emotion`/`aus` (or `labels`/`AUs`) columns uses those.
    """
    samples, from_label = [], 0
    rows = read_jsonl(predictions)
    for index, (line, row) in enumerate(progress(rows, len(rows), f"reading {Path(predictions).name}")):
        completion = next((row[key] for key in COMPLETION_FIELDS if isinstance(row.get(key), str)), None)
        if completion is None:
            raise RecordError(str(predictions), line, f"no completion: give one of {', '.join(COMPLETION_FIELDS)}.")

        label = row.get("label") if isinstance(row.get("label"), str) else None
        columns = {key: row[key] for key in (*LABEL_COLUMNS, "reference_au", "reference_emotion") if key in row}
        reference = next((row[key] for key in REFERENCE_FIELDS if isinstance(row.get(key), str)), None)
        has_columns = any(row.get(key) is not None for key in ("emotion", "labels", "aus", "AUs"))
        from_label += label is not None and not has_columns
        sample = _sample(
            index, str(row.get("id", index)), completion, columns, label, reference or label, str(predictions), line
        )
        samples.append(sample)

    return samples, JoinInfo(str(predictions), rows=len(samples), labels_from="label" if from_label else "columns")


def load_samples(
    predictions: "str | Path",
    dataset_dir: "str | Path | None" = None,
    dataset: str | None = None,
    max_samples: int | None = None,
) -> tuple[list[EvalSample], JoinInfo]:
    r"""Joined samples when a dataset is given, else the file's own labels; an empty file, or one where no metric can
    be computed (no emotion label, no AU label, no reference text on any line), is an error."""
    if dataset:
        samples, info = join_predictions(predictions, dataset_dir or "data_registry", dataset, max_samples)
    else:
        samples, info = labelled_predictions(predictions)

    if not samples:
        raise RecordError(str(predictions), None, "no predictions to score.")

    if not any(sample.emotion is not None or sample.au_labelled or sample.target for sample in samples):
        where = f"the rows of {dataset}" if dataset else "its lines"
        raise RecordError(
            str(predictions),
            None,
            f"no metric can be computed: none of {where} has an emotion label, AU labels or a reference answer. Give "
            "LLaMA-Factory's generated_predictions.jsonl (its `label` is the reference answer), lines with "
            "`emotion`/`aus` columns, or --dataset-dir and --dataset for labels that are not in the answer.",
        )

    return samples, info
