r"""Benchmark `stage: empo` against stock `stage: dpo` on the same response pairs, same model and settings.

    python bench/bench_empo.py                           # tiny random Qwen2-VL built offline, CPU or GPU
    python bench/bench_empo.py --model /path/to/Qwen2.5-VL-3B-Instruct --steps 20 --batch-size 4

The pairs are `llamafactory-fea data pairs --kinds response` of the demo set; stock dpo reads `<name>_response`
and so does empo (equal weights), so both train on identical batches. Each side runs in its own process through
LLaMA-Factory's `run_exp` (what `llamafactory-cli train` calls), LoRA on all linear layers, with a step timer in
its callbacks; the sides alternate (dpo, empo, empo, dpo, ...). Reported: seconds per optimizer step (median of the
wall time between step ends, after the warm-up steps), peak memory (max RSS on CPU, torch.cuda.max_memory_allocated
on GPU) and the ratio empo / dpo (median over repeats of each repeat's ratio).
"""

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]


def step_timer():
    r"""A TrainerCallback recording the wall time at each step end."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()

            self.ends.append(time.perf_counter())

    return StepTimer()


def worker(config: dict[str, Any], result_path: str) -> None:
    r"""Train one side and write its step times and peak memory."""
    import torch
    from llamafactory.train.tuner import run_exp

    timer = step_timer()
    start = time.perf_counter()
    run_exp(args=config, callbacks=[timer])
    if torch.cuda.is_available():
        memory = torch.cuda.max_memory_allocated() / 2**30
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    steps = [later - earlier for earlier, later in zip([start, *timer.ends], timer.ends)]
    Path(result_path).write_text(json.dumps({"steps": steps, "peak_gib": memory}), encoding="utf-8")


def make_data(folder: Path) -> Path:
    r"""The demo set and its response pairs (`bench_pairs_response`) in a scratch dataset folder."""
    from llamafactory_fea.cli import main

    shutil.copytree(ROOT / "data_registry" / "demo", folder / "demo")
    shutil.copy(ROOT / "data_registry" / "dataset_info.json", folder / "dataset_info.json")
    argv = ["data", "pairs", "--dataset", "fea_demo", "--name", "bench_pairs", "--dataset-dir", str(folder)]
    if main([*argv, "--kinds", "response", "--pairs-per-row", "3"]) != 0:
        raise SystemExit("could not make the pairs")

    return folder


def run_side(stage: str, args: argparse.Namespace, model: str, data: Path, scratch: Path, repeat: int) -> dict:
    config = {
        "stage": stage,
        "model_name_or_path": model,
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 16,
        "pref_beta": 0.1,
        "dataset": "bench_pairs_response",
        "dataset_dir": str(data),
        "template": "qwen2_vl",
        "cutoff_len": 2048,
        "image_max_pixels": args.image_max_pixels,
        "output_dir": str(scratch / f"{stage}_{repeat}"),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": args.steps,
        "learning_rate": 1e-5,
        "logging_steps": 1,
        "save_strategy": "no",
        "disable_shuffling": True,
        "bf16": args.bf16,
        "report_to": "none",
        "seed": 42,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
    }
    result = scratch / f"{stage}_{repeat}.json"
    code = f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.bench_empo import worker; "
    code += f"worker(json.loads({json.dumps(json.dumps(config))}), {str(result)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=not args.verbose)
    measured = json.loads(result.read_text(encoding="utf-8"))
    steps = measured["steps"][args.warmup :]
    return {"seconds_per_step": statistics.median(steps), "peak_gib": measured["peak_gib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Model folder (default: a tiny random Qwen2-VL, offline).")
    parser.add_argument("--steps", type=int, default=8, help="Optimizer steps per run.")
    parser.add_argument("--warmup", type=int, default=2, help="Steps left out of the median.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per side, alternating.")
    parser.add_argument("--batch-size", type=int, default=2, help="Pairs per step.")
    parser.add_argument("--image-max-pixels", type=int, default=12544, help="LLaMA-Factory's image_max_pixels.")
    parser.add_argument("--bf16", action="store_true", help="Train in bf16 (GPU).")
    parser.add_argument("--verbose", action="store_true", help="Show the training output.")
    args = parser.parse_args()
    if args.steps <= args.warmup:
        raise SystemExit("--steps must exceed --warmup")

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model = args.model
        if model is None:
            from llamafactory_fea.demo.tiny_model import make_tiny_model

            model = str(make_tiny_model(scratch / "tiny", arch="qwen2_vl"))

        data = make_data(scratch / "data")
        results: dict[str, list[dict]] = {"dpo": [], "empo": []}
        for repeat in range(args.repeats):
            order = ("dpo", "empo") if repeat % 2 == 0 else ("empo", "dpo")
            for stage in order:
                results[stage].append(run_side(stage, args, model, data, scratch, repeat))

    ratios = [e["seconds_per_step"] / d["seconds_per_step"] for d, e in zip(results["dpo"], results["empo"])]
    summary = {
        stage: {
            "seconds_per_step": statistics.median(r["seconds_per_step"] for r in runs),
            "peak_gib": max(r["peak_gib"] for r in runs),
        }
        for stage, runs in results.items()
    }
    summary["empo/dpo seconds per step"] = statistics.median(ratios)
    summary["empo/dpo per repeat"] = ratios
    summary["empo/dpo peak memory"] = summary["empo"]["peak_gib"] / summary["dpo"]["peak_gib"]
    summary["settings"] = {key: value for key, value in vars(args).items() if key != "verbose"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
