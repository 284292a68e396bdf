r"""`llamafactory-fea eval`: score predictions under both protocols and write the JSON, Markdown and PNG reports;
`--compare` merges the reports of several runs into one table and one figure."""

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .benchmarks import BENCHMARKS, benchmark_for


PROTOCOLS: tuple[str, ...] = ("strict", "reference")
AU_SETS: tuple[str, ...] = ("labels", "benchmark")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea eval` (cheap: imports nothing heavy)."""
    from ..data.converters.base import number_option

    parser.add_argument(
        "predictions",
        nargs="?",
        default=None,
        help="LLaMA-Factory's generated_predictions.jsonl (labels from its `label`, or from --dataset) or JSONL lines "
        "with their own labels.",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="strict",
        help="The headline protocol (summary line, judge inputs): strict (ours) or reference (Facial-R1's script, "
        "beside the paper's numbers). Both are always computed and reported (docs/reproduce.md).",
    )
    parser.add_argument(
        "--au-set",
        choices=AU_SETS,
        default=None,
        help="AUs scored: labels (those in the test labels, the reference's) or benchmark (its coded set: 8 for DISFA, "
        "12 for BP4D); None: benchmark for strict, labels for reference.",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="RUN_DIR",
        help="Merge the metrics.json under each run folder into one Markdown table and one PNG (no predictions).",
    )
    parser.add_argument("--dataset-dir", default="data_registry", help="Folder with dataset_info.json (the run's).")
    parser.add_argument("--dataset", default=None, help="The registered eval_dataset the predictions were made on.")
    parser.add_argument(
        "--max-samples",
        type=number_option(int, 1),
        default=None,
        help="The predict run's max_samples (joins the first N rows).",
    )
    parser.add_argument(
        "--benchmark",
        choices=sorted(BENCHMARKS),
        default=None,
        help="Which benchmark's label space, AU set and paper numbers to use (default: from --dataset, else generic).",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="Where metrics.json, report.md and the PNGs go; None: eval_<dataset or file name> beside the predictions.",
    )
    parser.add_argument(
        "--judge-url", default=None, help="OpenAI-compatible base URL (e.g. https://host/v1) to judge."
    )
    parser.add_argument("--judge-model", default=None, help="The judge model name (needed with --judge-url).")
    parser.add_argument(
        "--judge-key-env", default="OPENAI_API_KEY", help="Environment variable holding the judge's API key."
    )
    parser.add_argument(
        "--judge-timeout", type=number_option(float, 1), default=60.0, help="Seconds per judge request (>= 1)."
    )
    parser.add_argument(
        "--judge-workers", type=number_option(int, 1), default=8, help="Judge requests in flight at once (>= 1)."
    )
    parser.add_argument(
        "--judge-allow-http",
        action="store_true",
        help="Allow a plain http:// --judge-url on another machine (the key then crosses the network unencrypted).",
    )
    # hallucination (eval/hallucination.py): AU hallucination is always reported; these add the misleading questions
    parser.add_argument(
        "--misleading",
        default=None,
        metavar="PREDICTIONS",
        help="Predictions on the misleading set (`data misleading`): accuracy on plain vs misleading questions.",
    )
    parser.add_argument(
        "--misleading-dataset",
        default=None,
        help="The registered misleading set those predictions were made on (needed with --misleading).",
    )


def au_classes(benchmark: str, au_set: str | None, protocol: str) -> tuple[int, ...] | None:
    r"""The AUs a protocol scores: the benchmark's coded set, or None for the AUs that occur in the labels."""
    chosen = au_set or ("benchmark" if protocol == "strict" else "labels")
    return BENCHMARKS[benchmark].aus if chosen == "benchmark" else None


def judge_pairs(samples: Sequence[Any], protocol: str) -> tuple[list[Any], list[str], list[str]]:
    r"""The samples a protocol judges and its (reasoning, reference) texts.

    strict: the reasoning (`<think>`, else the completion without tags) against the reference reasoning; reference:
    the first `<think>` (else an empty text) against the whole reference answer, as Facial-R1's script sends them.
    """
    from . import metrics

    if protocol == "reference":
        judged = [sample for sample in samples if sample.target]
        return judged, [metrics.reference_judge_reasoning(s.completion) for s in judged], [s.target for s in judged]

    judged = [sample for sample in samples if sample.reference]
    return judged, [metrics.reasoning_text(s) for s in judged], [s.reference for s in judged]


def evaluate(
    samples: Sequence[Any],
    benchmark: str,
    judge_config: Any = None,
    protocol: str = "strict",
    au_set: str | None = None,
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    r"""Every metric of both protocols (docs/reproduce.md) as a JSON-ready dict, and the judge's result per sample.

    The top level holds the strict protocol's figures; `reference_protocol` the reference's. The judge is asked once,
    with the inputs of `protocol`, and its mean is given both ways (failures excluded; failures as 0).
    """
    from . import metrics
    from .hallucination import au_hallucination
    from .judge import judge
    from .report import headline

    spec = BENCHMARKS[benchmark]
    results: dict[str, Any] = {
        "benchmark": benchmark,
        "samples": len(samples),
        "protocol": protocol,
        "format_rate": metrics.format_rate(samples),
        "emotion": metrics.emotion_metrics(samples, spec.label_space),
        "au": metrics.au_metrics(samples, au_classes(benchmark, au_set, "strict")),
        "support": metrics.support_rate(samples),
        "reasoning": metrics.reasoning_metrics(samples),
        "judge": None,
        "rege": metrics.rege(samples) if benchmark == "faba" else None,
        "hallucination": au_hallucination(samples),
        "reference_protocol": {
            "emotion": metrics.reference_emotion_metrics(samples),
            "au": metrics.reference_au_metrics(samples, au_classes(benchmark, au_set, "reference")),
            "reasoning": metrics.reference_rouge(samples),
        },
    }
    judged: dict[int, dict[str, Any]] = {}
    if judge_config is not None:
        pairs, reasonings, references = judge_pairs(samples, protocol)
        if pairs:
            scored = judge(judge_config, reasonings, references)
            results["judge"] = {**scored, "inputs": protocol}
            judged = {sample.index: result for sample, result in zip(pairs, results["judge"].pop("results"))}

    results["headline"] = {name: headline(results, name) for name in PROTOCOLS}
    return results, judged


def sample_rows(samples: Sequence[Any], judged: dict[int, Any]) -> list[dict[str, Any]]:
    r"""One line per sample for samples.jsonl: labels, what the completion says, its faults and its judge score."""
    from .metrics import reference_emotion_word

    return [
        {
            "index": sample.index,
            "id": sample.id,
            "emotion": sample.emotion,
            "predicted_emotion": sample.parsed.emotion,
            "reference_answer_word": reference_emotion_word(sample.completion),
            "aus": None if sample.aus is None else sorted(sample.aus),
            "predicted_aus": sorted(sample.parsed.aus),
            "hallucinated_aus": None if sample.aus is None else sorted(sample.parsed.aus - sample.aus),
            "well_formed": sample.parsed.well_formed,
            "problems": list(sample.parsed.problems),
            "judge": judged.get(sample.index),
        }
        for sample in samples
    ]


def score_predictions(
    predictions: "str | Path",
    output_dir: "str | Path",
    dataset_dir: "str | Path" = "data_registry",
    dataset: str | None = None,
    max_samples: int | None = None,
    benchmark: str | None = None,
    judge_config: Any = None,
    protocol: str = "strict",
    au_set: str | None = None,
    misleading: "str | Path | None" = None,
    misleading_dataset: str | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    r"""Load and join the predictions, score them and write the reports; raises `RecordError` on bad input.

    With `misleading` (predictions on the registered misleading set `misleading_dataset`), the results and
    report.md also compare accuracy on the plain and the misleading questions (`hallucination.misleading_results`).
    """
    from ..data.files import atomic_write, write_jsonl
    from . import hallucination
    from .predictions import load_samples
    from .report import write_reports

    samples, join = load_samples(predictions, dataset_dir, dataset, max_samples)
    results, judged = evaluate(samples, benchmark or benchmark_for(dataset), judge_config, protocol, au_set)
    results["join"] = vars(join)
    if misleading is not None:
        results["misleading"] = hallucination.misleading_results(
            samples, misleading, dataset_dir, misleading_dataset, max_samples
        )

    paths = write_reports(results, output_dir)
    sections = hallucination.markdown(results)
    if sections:
        atomic_write(paths["markdown"], paths["markdown"].read_text(encoding="utf-8") + sections)

    paths["samples"] = Path(output_dir) / "samples.jsonl"
    write_jsonl(paths["samples"], sample_rows(samples, judged))
    return results, paths


def summary_line(results: dict[str, Any]) -> str:
    r"""One line of the headline figures, the chosen protocol first (the full tables are in report.md)."""
    names = {"accuracy": "emotion accuracy", "au_f1": "AU macro-F1", "rouge_l": "ROUGE-L", "judge_score": "judge"}
    chosen = results.get("protocol", "strict")
    parts = []
    for protocol in (chosen, *(name for name in PROTOCOLS if name != chosen)):
        figures = (results.get("headline") or {}).get(protocol) or {}
        shown = [f"{names[key]} {value:.3f}" for key, value in figures.items() if isinstance(value, (int, float))]
        if protocol == "strict" and isinstance(results.get("format_rate"), (int, float)):
            shown.append(f"format rate {results['format_rate']:.3f}")

        parts.append(f"{protocol}: {', '.join(shown) or 'no figure'}")

    return f"{results['benchmark']}: {results['samples']} samples; {'; '.join(parts)}"


def run_eval(args: argparse.Namespace) -> int:
    r"""`llamafactory-fea eval`: score, print one summary line and where the reports are. Exit 1 on bad input."""
    from ..data.files import RecordError, check_folder
    from .hallucination import summary as hallucination_summary
    from .judge import JudgeConfig, JudgeError

    if args.compare:
        return run_compare(args)

    if args.predictions is None:
        print("error: give the predictions file (generated_predictions.jsonl), or --compare RUN_DIR ...")
        return 1

    if args.output_dir is None:
        args.output_dir = str(Path(args.predictions).parent / f"eval_{args.dataset or Path(args.predictions).stem}")

    if bool(args.judge_url) != bool(args.judge_model):
        print("error: give --judge-url and --judge-model together.")
        return 1

    if bool(args.misleading) != bool(args.misleading_dataset):
        print("error: give --misleading and --misleading-dataset together (see `llamafactory-fea data misleading`).")
        return 1

    try:  # before any scoring: the judge may be slow and paid
        check_folder(args.output_dir, "give --output-dir a folder")
    except RecordError as error:
        print(f"error: {error}")
        return 1

    try:
        judge_config = (
            JudgeConfig(
                args.judge_url,
                args.judge_model,
                args.judge_key_env,
                args.judge_timeout,
                allow_http=args.judge_allow_http,
                workers=args.judge_workers,
            )
            if args.judge_url
            else None
        )
        results, paths = score_predictions(
            args.predictions,
            args.output_dir,
            args.dataset_dir,
            args.dataset,
            args.max_samples,
            args.benchmark,
            judge_config,
            args.protocol,
            args.au_set,
            args.misleading,
            args.misleading_dataset,
        )
    except (RecordError, JudgeError) as error:
        print(f"error: {error}")
        return 1

    print(summary_line(results))
    hallucination_line = hallucination_summary(results)
    if hallucination_line:
        print(hallucination_line)

    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    r"""`llamafactory-fea eval --compare RUN_DIR ...`: one Markdown table and one PNG of several runs, the paper beside."""
    from ..data.files import RecordError, check_folder
    from .compare import collect_runs, write_comparison

    if args.predictions is not None:
        print("error: --compare takes run folders only, not a predictions file.")
        return 1

    output_dir = args.output_dir or "compare"
    try:
        check_folder(output_dir, "give --output-dir a folder")
        runs = collect_runs(args.compare)
        paths = write_comparison(runs, output_dir)
    except RecordError as error:
        print(f"error: {error}")
        return 1

    print(f"{len(runs)} runs compared")
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return 0
