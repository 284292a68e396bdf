r"""Predictions to score: LLaMA-Factory's `generated_predictions.jsonl` joined with its dataset, or labelled JSONL."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.files import RecordError
from ..data.records import DATASET_INFO, dataset_objects, read_dataset_info
from ..fea.aus import UnknownAUError
from ..fea.emotions import UnknownEmotionError
from ..fea.labels import label_aus, label_columns, label_emotion, think_text
from ..fea.parsing import ParsedCompletion, parse_completion


COMPLETION_FIELDS: tuple[str, ...] = ("predict", "completion", "response", "output")
EMOTION_COLUMNS: tuple[str, ...] = ("emotion", "labels")  # `label` is LLaMA-Factory's decoded target
REFERENCE_FIELDS: tuple[str, ...] = ("reference", "reasoning", "description")


@dataclass(frozen=True)
class EvalSample:
    r"""One scored example: the model's completion (parsed) beside the labels and the reference reasoning."""

    index: int
    id: str
    completion: str
    parsed: ParsedCompletion
    emotion: str | None
    aus: frozenset[int]
    au_labelled: bool
    reference: str | None = None
    references: dict[str, str] = field(default_factory=dict)  # task references, e.g. FABA's reference_au


@dataclass
class JoinInfo:
    r"""How predictions met their labels: the source, the dataset joined by order, and truncated labels."""

    predictions: str
    dataset: str | None = None
    dataset_file: str | None = None
    rows: int = 0
    truncated_labels: int = 0


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


def gold_labels(row: dict[str, Any], source: str, where: "int | str") -> tuple[str | None, frozenset[int], bool]:
    r"""The normalised emotion, the AU set and whether the row has AU labels (`emotion`/`labels`, `aus`/`AUs`)."""
    emotion, aus = label_columns(row, EMOTION_COLUMNS)
    if aus is not None and not isinstance(aus, list):
        raise RecordError(source, where, f"'aus' must be a list, got {type(aus).__name__}.")

    try:
        emotion = label_emotion(emotion, strict=True)
        au_set = label_aus(aus, strict=True) or frozenset()
    except (UnknownEmotionError, UnknownAUError) as error:
        raise RecordError(source, where, str(error)) from None

    return emotion, au_set, bool(row.get("au_labelled", bool(au_set)))


def _sample(index: int, record_id: str, completion: str, gold: dict[str, Any], source: str, where: "int | str"):
    r"""Build one sample from a completion and a labelled row (a dataset row or a labelled prediction line)."""
    emotion, aus, au_labelled = gold_labels(gold, source, where)
    references = {key: gold[key] for key in ("reference_au", "reference_emotion") if isinstance(gold.get(key), str)}
    return EvalSample(
        index=index,
        id=record_id,
        completion=completion,
        parsed=parse_completion(completion),
        emotion=emotion,
        aus=aus,
        au_labelled=au_labelled,
        reference=gold.get("_reference"),
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

        gold = {**row, "_reference": think_text(assistant_turn(row))}
        samples.append(_sample(index, str(row.get("id", index)), prediction["predict"], gold, str(path), index + 1))

    return samples, info


def labelled_predictions(predictions: "str | Path") -> tuple[list[EvalSample], JoinInfo]:
    r"""Read JSONL lines that carry their own labels: a completion field plus `emotion`/`aus` (or `labels`/`AUs`)."""
    samples = []
    rows = read_jsonl(predictions)
    for index, (line, row) in enumerate(progress(rows, len(rows), f"reading {Path(predictions).name}")):
        completion = next((row[key] for key in COMPLETION_FIELDS if isinstance(row.get(key), str)), None)
        if completion is None:
            raise RecordError(str(predictions), line, f"no completion: give one of {', '.join(COMPLETION_FIELDS)}.")

        if not {"emotion", "aus", "labels", "AUs"} & set(row):
            raise RecordError(
                str(predictions),
                line,
                "no labels (emotion/aus): for LLaMA-Factory's generated_predictions.jsonl give --dataset-dir and "
                "--dataset to join with the registered dataset.",
            )

        reference = next((row[key] for key in REFERENCE_FIELDS if isinstance(row.get(key), str)), None)
        gold = {**row, "_reference": reference or think_text(row.get("label"))}
        samples.append(_sample(index, str(row.get("id", index)), completion, gold, str(predictions), line))

    return samples, JoinInfo(str(predictions), rows=len(samples))


def load_samples(
    predictions: "str | Path",
    dataset_dir: "str | Path | None" = None,
    dataset: str | None = None,
    max_samples: int | None = None,
) -> tuple[list[EvalSample], JoinInfo]:
    r"""Joined samples when a dataset is given, else the file's own labels; an empty file is an error."""
    if dataset:
        samples, info = join_predictions(predictions, dataset_dir or "data_registry", dataset, max_samples)
    else:
        samples, info = labelled_predictions(predictions)

    if not samples:
        raise RecordError(str(predictions), None, "no predictions to score.")

    return samples, info
