r"""Reports of an evaluation: JSON for machines, Markdown laid out like the paper's tables, PNG plots (Agg)."""

import io
import json
from pathlib import Path
from typing import Any

from ..data.files import atomic_write
from .benchmarks import BENCHMARKS, TABLES


THIS_RUN = "This run"
PROTOCOL_TITLES: dict[str, str] = {
    "reference": "reference protocol (Facial-R1's evaluation script)",
    "strict": "strict protocol (ours)",
}
METRIC_OF_TABLE: dict[str, tuple[tuple[str, str, float], ...]] = {  # table -> (paper key, label, scale)
    "au": (("au_f1", "AU F1 (%)", 100.0),),
    "emotion": (("accuracy", "Accuracy (%)", 100.0),),
    "reasoning": (("rouge_l", "ROUGE-L (%)", 100.0), ("judge_score", "Judge (1-10)", 1.0)),
}
TABLE_TITLES: dict[str, str] = {
    "au": "AU recognition: F1 (%), macro over AUs with positives",
    "emotion": "Emotion recognition: accuracy (%)",
    "reasoning": "Emotion reasoning on FEA-20K",
}


def headline(results: dict[str, Any], protocol: str) -> dict[str, float | None]:
    r"""A protocol's numbers under the paper's keys: au_f1, accuracy, rouge_l (fractions), judge_score (1-10)."""
    judge = results.get("judge") or {}
    if protocol == "reference":
        reference = results.get("reference_protocol") or {}
        au, emotion, reasoning = (reference.get(key) or {} for key in ("au", "emotion", "reasoning"))
        judge_score = judge.get("mean_failures_as_zero")
    else:
        au, emotion, reasoning = (results.get(key) or {} for key in ("au", "emotion", "reasoning"))
        judge_score = judge.get("mean")

    return {
        "au_f1": au.get("macro_f1"),
        "accuracy": emotion.get("accuracy"),
        "rouge_l": reasoning.get("rouge_l"),
        "judge_score": judge_score,
    }


def _number(value: float | None, scale: float = 100.0) -> str:
    if value is None:
        return "–"

    return f"{value * scale:.1f}" if scale != 1.0 else f"{value:.2f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = [f"| {' | '.join(headers)} |", f"|{'|'.join(['---'] * len(headers))}|"]
    return lines + [f"| {' | '.join(row)} |" for row in rows]


def _paper_value(benchmark: str, method: str, key: str, scale: float) -> str:
    r"""A published number as printed (stored already in percent, the judge on 1-10)."""
    value = BENCHMARKS[benchmark].paper.get(method, {}).get(key)
    if value is None:
        return "–"

    return f"{value:.2f}" if scale == 1.0 else f"{value:.1f}"


def paper_tables(results: dict[str, Any]) -> list[str]:
    r"""The paper's tables this benchmark belongs to: the paper's rows, this run's reference-protocol row beside them
    (the comparable one), then its strict-protocol row."""
    name, lines = results["benchmark"], []
    ours = {protocol: headline(results, protocol) for protocol in ("reference", "strict")}
    for table, columns in TABLES.items():
        if name not in columns:
            continue

        for key, label, scale in METRIC_OF_TABLE[table]:
            methods = sorted(
                {method for column in columns for method, values in BENCHMARKS[column].paper.items() if key in values}
            )
            rows = [[method, *(_paper_value(c, method, key, scale) for c in columns)] for method in methods]
            for protocol, figures in ours.items():
                row_name = f"{THIS_RUN}, {protocol} protocol"
                rows.append([row_name, *(_number(figures[key], scale) if c == name else "–" for c in columns)])
            lines += ["", f"### {TABLE_TITLES[table]}{'' if len(METRIC_OF_TABLE[table]) == 1 else f': {label}'}", ""]
            lines += _table(["Method", *(BENCHMARKS[c].title for c in columns)], rows)

    return lines


def _overview(results: dict[str, Any]) -> list[list[str]]:
    r"""Every metric of the strict protocol (ours) as (metric, value) rows."""
    au, emotion = results.get("au") or {}, results.get("emotion") or {}
    reasoning, judge, support = results.get("reasoning") or {}, results.get("judge") or {}, results["support"]
    rows = [["Format rate (%)", _number(results["format_rate"])]]
    if emotion:
        rows += [
            [f"Emotion accuracy (%), {emotion['samples']} labelled", _number(emotion["accuracy"])],
            ["Emotion macro-F1 (%)", _number(emotion["macro_f1"])],
            ["Emotion UAR (%)", _number(emotion["uar"])],
        ]
    if au:
        rows += [
            [f"AU F1, macro over AUs with positives (%), {au['samples']} labelled", _number(au["macro_f1"])],
            ["AU F1, micro (%)", _number(au["micro_f1"])],
            ["AUs claimed but not labelled (%)", _number(au["claimed_not_labelled_rate"])],
        ]
    rows.append(["Answers supported by their reasoning's AUs (%)", _number(support["rate"])])
    if reasoning:
        rows.append(
            [f"ROUGE-L of the reasoning, stemmed (%), {reasoning['samples']} rows", _number(reasoning["rouge_l"])]
        )
    if judge:
        rows.append(
            [
                f"Judge score 1-10, failures excluded ({judge['scored']}/{judge['pairs']} scored, {judge['failed']} failed)",
                _number(judge["mean"], 1.0),
            ]
        )
    for task, values in (results.get("rege") or {}).items():
        rows.append([f"REGE {task} = S_re {values['s_re']:.1f} + S_ge {values['s_ge']:.1f}", f"{values['rege']:.1f}"])

    return rows


def _reference_overview(results: dict[str, Any]) -> list[list[str]]:
    r"""Every metric of the reference protocol as (metric, value) rows."""
    reference, judge = results.get("reference_protocol") or {}, results.get("judge") or {}
    emotion, au, reasoning = (reference.get(key) or {} for key in ("emotion", "au", "reasoning"))
    rows = []
    if emotion:
        rows.append(
            [f"Emotion accuracy (%), first answer word, {emotion['samples']} labelled", _number(emotion["accuracy"])]
        )
    if au:
        rows += [
            [
                f"AU F1, macro over {len(au['classes'])} AUs (%), {au['samples']} labelled",
                _number(au["macro_f1"]),
            ],
            ["AU F1, micro (%)", _number(au["micro_f1"])],
        ]
    if reasoning:
        rows.append(
            [
                f"ROUGE-L of the whole completion, stemmed (%), {reasoning['samples']} rows",
                _number(reasoning["rouge_l"]),
            ]
        )
    if judge:
        rows.append(
            [f"Judge score 1-10, failures as 0 ({judge['pairs']} pairs)", _number(judge["mean_failures_as_zero"], 1.0)]
        )

    return rows


def markdown(results: dict[str, Any]) -> str:
    r"""The Markdown report: paper tables with this run beside them, every metric, per-AU and per-class tables."""
    benchmark, join = BENCHMARKS[results["benchmark"]], results["join"]
    source = (
        f"joined by order with `{join['dataset']}` ({join['dataset_file']})"
        if join.get("dataset")
        else "labels in the file"
    )
    if not join.get("dataset") and join.get("labels_from") == "label":
        source = "labels read from each line's `label` (the reference answer)"

    chosen = results.get("protocol", "strict")
    lines = [
        f"# FEA evaluation: {benchmark.title} (`{benchmark.name}`)",
        "",
        f"{results['samples']} predictions from `{join['predictions']}`, {source}. Both protocols are computed "
        f"(docs/reproduce.md); the headline one is the {PROTOCOL_TITLES[chosen]}.",
    ]
    if results.get("judge"):
        lines.append(f"The judge was asked with the {results['judge'].get('inputs', chosen)} protocol's texts.")

    if join.get("truncated_labels"):
        lines.append(f"{join['truncated_labels']} decoded labels were cut by cutoff_len (prefix-matched).")

    tables = paper_tables(results)
    if tables:
        lines += ["", "## Beside the paper", *tables]

    reference = _reference_overview(results)
    if reference:
        lines += ["", f"## Metrics, {PROTOCOL_TITLES['reference']}", "", *_table(["Metric", "Value"], reference)]

    lines += ["", f"## Metrics, {PROTOCOL_TITLES['strict']}", "", *_table(["Metric", "Value"], _overview(results))]
    au = results.get("au")
    if au and au["per_au"]:
        rows = [
            [
                name,
                _number(v["f1"]),
                _number(v["precision"]),
                _number(v["recall"]),
                str(v["positives"]),
                str(v["predicted"]),
            ]
            for name, v in au["per_au"].items()
        ]
        lines += [
            "",
            "## Per-AU F1 (strict protocol)",
            "",
            *_table(["AU", "F1 (%)", "Precision (%)", "Recall (%)", "Positives", "Predicted"], rows),
        ]

    emotion = results.get("emotion")
    if emotion:
        rows = [
            [name, _number(v["precision"]), _number(v["recall"]), _number(v["f1"]), str(v["support"])]
            for name, v in emotion["per_class"].items()
        ]
        lines += [
            "",
            "## Per-emotion scores",
            "",
            *_table(["Emotion", "Precision (%)", "Recall (%)", "F1 (%)", "Support"], rows),
        ]
        confusion = emotion["confusion"]
        rows = [[row, *map(str, counts)] for row, counts in zip(confusion["rows"], confusion["matrix"])]
        lines += [
            "",
            "## Confusion matrix (rows: label, columns: answer)",
            "",
            *_table(["", *confusion["columns"]], rows),
        ]

    return "\n".join(lines) + "\n"


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=200, bbox_inches="tight")
    return buffer.getvalue()


def _pyplot() -> Any:
    r"""Matplotlib's pyplot on the Agg backend (no display needed), with type sizes readable at paper size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 10})
    return plt


def confusion_view(confusion: dict[str, Any]) -> tuple[list[str], list[str], list[list[int]]]:
    r"""The rows, columns and counts to draw: the classes the labels use, and any other answer that was given."""
    matrix = confusion["matrix"]
    rows = [i for i, counts in enumerate(matrix) if sum(counts)]  # no empty row for a class the data lacks
    row_names = [confusion["rows"][i] for i in rows]
    columns = [
        j for j, name in enumerate(confusion["columns"]) if name in row_names or any(matrix[i][j] for i in rows)
    ]
    counts = [[matrix[i][j] for j in columns] for i in rows]
    return row_names, [confusion["columns"][j] for j in columns], counts


def confusion_png(emotion: dict[str, Any], title: str) -> bytes:
    r"""The confusion matrix as a PNG: row-normalised percentages with counts, over the classes the labels use."""
    import numpy as np

    plt = _pyplot()
    row_names, columns, counts = confusion_view(emotion["confusion"])
    matrix = np.array(counts, dtype=int)
    shares = 100.0 * matrix / matrix.sum(axis=1, keepdims=True)
    figure, axes = plt.subplots(figsize=(1.8 + 0.62 * len(columns), 1.2 + 0.5 * len(row_names)))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=100)
    colour_bar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colour_bar.set_label("% of the true class")
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(row_names)), row_names)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if shares[i, j] > 55 else "black"
            axes.text(j, i, f"{shares[i, j]:.0f}%\n({count})", ha="center", va="center", color=colour, fontsize=7)

    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    axes.set_title(f"{title}: accuracy {emotion['accuracy'] * 100:.1f}% (n={int(matrix.sum())})")
    data = _png(figure)
    plt.close(figure)
    return data


def au_f1_png(au: dict[str, Any], title: str) -> bytes:
    r"""Per-AU F1 bars with their values (hatched where the AU has no positive label), the macro-F1 as a line."""
    plt = _pyplot()
    names = list(au["per_au"])
    values = [au["per_au"][name]["f1"] * 100 for name in names]
    figure, axes = plt.subplots(figsize=(1.5 + 0.45 * len(names), 3.2))
    bars = axes.bar(names, values, color="tab:blue")
    for bar, name in zip(bars, names):
        if not au["per_au"][name]["positives"]:
            bar.set_hatch("//")
            bar.set_alpha(0.4)

    axes.bar_label(bars, labels=[f"{value:.0f}" for value in values], padding=2, fontsize=7)
    if au["macro_f1"] is not None:
        axes.axhline(
            au["macro_f1"] * 100, color="tab:red", linestyle="--", label=f"macro F1 {au['macro_f1'] * 100:.1f}"
        )
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the axes, clear of bars

    axes.set_ylim(0, 108)
    axes.set_ylabel("F1 (%)")
    axes.set_title(f"{title}: per-AU F1")
    axes.tick_params(axis="x", rotation=45)
    data = _png(figure)
    plt.close(figure)
    return data


def write_reports(results: dict[str, Any], output_dir: "str | Path") -> dict[str, Path]:
    r"""Write metrics.json, report.md and the plots that apply (confusion_matrix.png, au_f1.png), each atomically."""
    output_dir, title = Path(output_dir), BENCHMARKS[results["benchmark"]].title
    paths = {"json": output_dir / "metrics.json", "markdown": output_dir / "report.md"}
    atomic_write(paths["json"], json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write(paths["markdown"], markdown(results))
    if results.get("emotion"):
        paths["confusion"] = output_dir / "confusion_matrix.png"
        atomic_write(paths["confusion"], confusion_png(results["emotion"], title))

    if results.get("au") and results["au"]["per_au"]:
        paths["au_f1"] = output_dir / "au_f1.png"
        atomic_write(paths["au_f1"], au_f1_png(results["au"], title))

    return paths
