r"""`llamafactory-fea eval`: score predictions against their labels and write the JSON, Markdown and PNG reports."""

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .benchmarks import BENCHMARKS, benchmark_for


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    r"""The options of `llamafactory-fea eval` (cheap: imports nothing heavy)."""
    from ..data.converters.base import number_option

    parser.add_argument(
        "predictions",
        help="LLaMA-Factory's generated_predictions.jsonl (with --dataset) or JSONL lines with their own labels.",
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
        "--judge-allow-http",
        action="store_true",
        help="Allow a plain http:// --judge-url on another machine (the key then crosses the network unencrypted).",
    )


def evaluate(
    samples: Sequence[Any], benchmark: str, judge_config: Any = None
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    r"""Every metric of the samples for a benchmark (docs/benchmarks.md) as a JSON-ready dict, and judge results."""
    from . import metrics
    from .judge import judge
    from .predictions import progress

    spec = BENCHMARKS[benchmark]
    results: dict[str, Any] = {
        "benchmark": benchmark,
        "samples": len(samples),
        "format_rate": metrics.format_rate(samples),
        "emotion": metrics.emotion_metrics(samples, spec.label_space),
        "au": metrics.au_metrics(samples, spec.aus),
        "support": metrics.support_rate(samples),
        "reasoning": metrics.reasoning_metrics(samples),
        "judge": None,
        "rege": metrics.rege(samples) if benchmark == "faba" else None,
    }
    judged: dict[int, dict[str, Any]] = {}
    if judge_config is not None:
        referenced = [sample for sample in samples if sample.reference]
        reasonings = progress([metrics.reasoning_text(s) for s in referenced], len(referenced), "judging")
        results["judge"] = judge(judge_config, reasonings, [s.reference for s in referenced])
        judged = {sample.index: scored for sample, scored in zip(referenced, results["judge"].pop("results"))}

    return results, judged


def sample_rows(samples: Sequence[Any], judged: dict[int, Any]) -> list[dict[str, Any]]:
    r"""One line per sample for samples.jsonl: labels, what the completion says, its faults and its judge score."""
    return [
        {
            "index": sample.index,
            "id": sample.id,
            "emotion": sample.emotion,
            "predicted_emotion": sample.parsed.emotion,
            "aus": sorted(sample.aus),
            "predicted_aus": sorted(sample.parsed.aus),
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
) -> tuple[dict[str, Any], dict[str, Path]]:
    r"""Load and join the predictions, score them and write the reports; raises `RecordError` on bad input."""
    from ..data.files import write_jsonl
    from .predictions import load_samples
    from .report import write_reports

    samples, join = load_samples(predictions, dataset_dir, dataset, max_samples)
    results, judged = evaluate(samples, benchmark or benchmark_for(dataset), judge_config)
    results["join"] = vars(join)
    paths = write_reports(results, output_dir)
    paths["samples"] = Path(output_dir) / "samples.jsonl"
    write_jsonl(paths["samples"], sample_rows(samples, judged))
    return results, paths


def summary_line(results: dict[str, Any]) -> str:
    r"""One line of the headline figures (the full tables are in report.md)."""
    emotion, au = results.get("emotion") or {}, results.get("au") or {}
    figures = [
        ("emotion accuracy", emotion.get("accuracy")),
        ("emotion macro-F1", emotion.get("macro_f1")),
        ("AU macro-F1", au.get("macro_f1")),
        ("format rate", results.get("format_rate")),
    ]
    shown = ", ".join(f"{name} {value:.3f}" for name, value in figures if isinstance(value, (int, float)))
    return f"{results['benchmark']}: {results['samples']} samples; {shown}"


def run_eval(args: argparse.Namespace) -> int:
    r"""`llamafactory-fea eval`: score, print one summary line and where the reports are. Exit 1 on bad input."""
    from ..data.files import RecordError, check_folder
    from .judge import JudgeConfig, JudgeError

    if args.output_dir is None:
        args.output_dir = str(Path(args.predictions).parent / f"eval_{args.dataset or Path(args.predictions).stem}")

    if bool(args.judge_url) != bool(args.judge_model):
        print("error: give --judge-url and --judge-model together.")
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
        )
    except (RecordError, JudgeError) as error:
        print(f"error: {error}")
        return 1

    print(summary_line(results))
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return 0
