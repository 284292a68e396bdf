r"""`llamafactory-fea eval --compare`: the metrics.json of several runs as one Markdown table and one PNG, the paper beside.

Rows are the datasets (benchmarks) and their metrics, each under both protocols; columns are the runs, then the paper's
methods. The paper's numbers stand on the reference protocol's rows only: that is the protocol they were made with.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.files import RecordError, write_files
from .benchmarks import BENCHMARKS, TABLES
from .report import _number, _paper_value, _png, _pyplot, _table, headline


METRICS: dict[str, tuple[str, float]] = {  # paper key -> (label, scale of the stored value)
    "au_f1": ("AU F1 (%)", 100.0),
    "accuracy": ("Accuracy (%)", 100.0),
    "rouge_l": ("ROUGE-L (%)", 100.0),
    "judge_score": ("Judge (1-10)", 1.0),
}
PROTOCOL_ORDER: tuple[str, ...] = ("reference", "strict")


@dataclass
class Run:
    r"""One run to compare: its name (the folder's) and its evaluations, one per benchmark."""

    name: str
    folder: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # benchmark -> metrics.json


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(str(path), None, f"not a readable metrics.json ({error}): run llamafactory-fea eval again.")

    if not isinstance(data, dict) or data.get("benchmark") not in BENCHMARKS:
        raise RecordError(str(path), None, "not a metrics.json of llamafactory-fea eval (no known 'benchmark').")

    return data


def collect_runs(folders: list[str]) -> list[Run]:
    r"""Every metrics.json under each run folder (eval's --output-dir, or a folder above several); `RecordError` when a
    folder holds none, or two for one benchmark."""
    runs: list[Run] = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise RecordError(folder, None, "not a folder: give run folders that hold eval's metrics.json.")

        run = Run(path.resolve().name or folder, path)
        found: dict[str, Path] = {}
        for file in sorted(path.rglob("metrics.json")):
            data = _read_metrics(file)
            if data["benchmark"] in found:
                raise RecordError(
                    folder,
                    None,
                    f"{found[data['benchmark']]} and {file} both score {data['benchmark']}: give the eval folder of "
                    "one of them.",
                )

            found[data["benchmark"]], run.results[data["benchmark"]] = file, data

        if not found:
            raise RecordError(
                folder, None, "no metrics.json under it: run llamafactory-fea eval with --output-dir there."
            )

        runs.append(run)

    names = [run.name for run in runs]
    for run in runs:  # two folders of one name are told apart by their paths
        if names.count(run.name) > 1:
            run.name = str(run.folder)

    return runs


def _benchmarks(runs: list[Run]) -> list[str]:
    r"""The benchmarks of any run, in the paper's order (its AU, emotion and reasoning tables), then the others."""
    present = {name for run in runs for name in run.results}
    ordered = list(dict.fromkeys(name for columns in TABLES.values() for name in columns))
    return [name for name in ordered if name in present] + sorted(present - set(ordered))


def _methods(benchmarks: list[str]) -> list[str]:
    r"""The paper's methods with a number for any of these benchmarks."""
    return sorted({method for name in benchmarks for method in BENCHMARKS[name].paper})


def comparison_rows(runs: list[Run]) -> tuple[list[str], list[list[str]], list[tuple[str, str, list[float | None]]]]:
    r"""The table's header and rows, and the reference protocol's values to draw: (benchmark, metric, values)."""
    benchmarks = _benchmarks(runs)
    methods = _methods(benchmarks)
    header = ["Dataset", "Metric", "Protocol", *(run.name for run in runs), *methods]
    rows, drawn = [], []
    for name in benchmarks:
        figures = {
            run.name: {protocol: headline(run.results[name], protocol) for protocol in PROTOCOL_ORDER}
            for run in runs
            if name in run.results
        }
        for key, (label, scale) in METRICS.items():
            paper = [BENCHMARKS[name].paper.get(method, {}).get(key) for method in methods]
            values = {
                protocol: [figures.get(run.name, {}).get(protocol, {}).get(key) for run in runs]
                for protocol in PROTOCOL_ORDER
            }
            if all(value is None for value in paper + values["reference"] + values["strict"]):
                continue

            for protocol in PROTOCOL_ORDER:
                cells = [_number(value, scale) for value in values[protocol]]
                published = [
                    _paper_value(name, method, key, scale) if protocol == "reference" else "–" for method in methods
                ]
                rows.append([BENCHMARKS[name].title, label, protocol, *cells, *published])

            drawn.append(
                (
                    BENCHMARKS[name].title,
                    label,
                    [None if v is None else v * scale for v in values["reference"]] + paper,
                )
            )

    return header, rows, drawn


def comparison_markdown(runs: list[Run]) -> str:
    r"""The comparison as Markdown: one table, then where each run's numbers come from."""
    header, rows, _ = comparison_rows(runs)
    lines = [
        "# FEA evaluation: runs compared",
        "",
        "Percentages except the judge (1-10). Each metric is given under both protocols (docs/reproduce.md); the "
        "paper's numbers stand beside the reference protocol's, the one they were made with.",
        "",
        *_table(header, rows),
        "",
        "Runs:",
        "",
    ]
    for run in runs:
        lines.append(f"- {run.name}: `{run.folder}` ({', '.join(sorted(run.results))})")

    return "\n".join(lines) + "\n"


def comparison_png(runs: list[Run]) -> bytes:
    r"""Grouped bars, one group per dataset and metric (reference protocol), a bar per run and per paper method; the
    judge is drawn x10 to share the percent axis."""
    import numpy as np

    header, _, drawn = comparison_rows(runs)
    series = header[3:]
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(2.0 + 1.1 * max(len(drawn), 1) * max(len(series), 1) ** 0.5, 3.6))
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(drawn))
    for i, name in enumerate(series):
        values = [(group[2][i] or 0.0) * (10.0 if group[1].startswith("Judge") else 1.0) for group in drawn]
        paper = i >= len(runs)
        bars = axes.bar(positions + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        if paper:
            for bar in bars:
                bar.set_hatch("//")
                bar.set_alpha(0.6)

    labels = [f"{title}\n{label.replace('Judge (1-10)', 'Judge x10')}" for title, label, _ in drawn]
    axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 105)
    axes.set_ylabel("%")
    axes.set_title("Runs compared (reference protocol), the paper hatched")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def write_comparison(runs: list[Run], output_dir: "str | Path") -> dict[str, Path]:
    r"""Write compare.md and compare.png together, atomically."""
    paths = {"markdown": Path(output_dir) / "compare.md", "png": Path(output_dir) / "compare.png"}
    write_files({paths["markdown"]: comparison_markdown(runs), paths["png"]: comparison_png(runs)})
    return paths
