r"""The embedded demo: every Facial-R1 stage, in sequence, on the demo data and a tiny offline model."""

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.files import json_lines
from ..progress import run_job
from ..resources import data_registry_dir, examples_dir


EXAMPLES = examples_dir()
DATA_REGISTRY = data_registry_dir()
OFFLINE_ENV = {
    "CUDA_VISIBLE_DEVICES": "",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_DISABLED": "true",
    "TOKENIZERS_PARALLELISM": "false",
}
CPU_OVERRIDES = {
    "dataset_dir": str(DATA_REGISTRY),
    "deepspeed": "null",
    "bf16": "false",
    "trust_remote_code": "false",
    "report_to": "none",
    "preprocessing_num_workers": "1",
    "dataloader_num_workers": "0",
    "logging_steps": "1",
    "save_steps": "100000",
}


@dataclass(frozen=True)
class DemoStage:
    r"""One stage of the demo: the example YAML it runs and the overrides that shrink it to CPU size."""

    name: str
    yaml: str
    overrides: dict[str, str]


def demo_stages(model: Path, output_dir: Path) -> list[DemoStage]:
    r"""The demo's stages: full SFT (so the tiny model visibly learns), LoRA GRPO on it, synthesis with both."""
    sft, grpo = output_dir / "sft", output_dir / "grpo"
    return [
        DemoStage(
            "stage 1: SFT",
            "fea_sft.yaml",
            {
                "model_name_or_path": str(model),
                "dataset": "fea_demo",
                "finetuning_type": "full",
                "num_train_epochs": "30",
                "learning_rate": "3e-3",
                "warmup_ratio": "0.05",
                "per_device_train_batch_size": "4",
                "gradient_accumulation_steps": "1",
                "logging_steps": "10",
                "output_dir": str(sft),
            },
        ),
        DemoStage(
            "stage 2: GRPO",
            "fea_grpo.yaml",
            {
                "model_name_or_path": str(sft),
                "adapter_name_or_path": "null",
                "create_new_adapter": "false",
                "dataset": "fea_demo",
                "max_steps": "4",
                "per_device_train_batch_size": "4",
                "gradient_accumulation_steps": "1",
                "num_generations": "4",
                "max_completion_length": "96",
                "output_dir": str(grpo),
            },
        ),
        DemoStage(
            "stage 3: synthesis",
            "fea_synth.yaml",
            {
                "model_name_or_path": str(sft),
                "adapter_name_or_path": str(grpo),
                "dataset": "fea_demo_test",
                "output_dir": str(output_dir / "synth"),
                "synth_dataset_dir": str(output_dir / "synth"),
                "synth_max_retries": "1",
                "max_new_tokens": "96",
            },
        ),
    ]


def _run_stage(stage: DemoStage, log_path: Path) -> float:
    r"""Run one stage through `llamafactory-cli train` with its log in a file; return its wall time."""
    overrides = {**CPU_OVERRIDES, **stage.overrides}
    command = [str(Path(sys.executable).parent / "llamafactory-cli"), "train", str(EXAMPLES / stage.yaml)]
    command += [f"{key}={value}" for key, value in overrides.items()]
    print(f"[demo] {stage.name}: {' '.join(command[:3])} (+{len(overrides)} overrides), log in {log_path}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, **OFFLINE_ENV}
    returncode = run_job(command, log_path, log_path.parent, f"[demo] {stage.name}", cwd=log_path.parent, env=env)
    if returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise SystemExit(f"[demo] {stage.name} failed (exit {returncode}); last lines of {log_path}:\n{tail}")

    return time.perf_counter() - start


def _figures(output_dir: Path) -> str:
    r"""What a stage did: loss (first -> last) and mean rewards from `trainer_log.jsonl`, or synthesis counts."""
    synth_report = output_dir / "synth_report.json"
    if synth_report.exists():
        passes = json.loads(synth_report.read_text(encoding="utf-8"))["passes"]
        return "; ".join(f"generated {p['generated']}, kept {p['kept']} ({p['acceptance_rate']:.0%})" for p in passes)

    log_file = output_dir / "trainer_log.jsonl"
    logs = (
        [log for _, log in json_lines(log_file) if isinstance(log, dict) and "loss" in log]
        if log_file.exists()
        else []
    )
    if not logs:
        return ""

    figures = [f"loss {logs[0]['loss']:.4g} -> {logs[-1]['loss']:.4g}"]
    figures += [f"{key} {value:.3g}" for key, value in logs[-1].items() if key.endswith("/mean")]
    return ", ".join(figures)


def run_demo(output_dir: "str | Path" = "outputs/demo") -> int:
    r"""Build the tiny model, run every stage whose example exists, print what was trained and where it went."""
    from .tiny_model import make_tiny_model

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    model = output_dir / "tiny_qwen2_vl"
    if not (model / "config.json").exists():
        make_tiny_model(model, arch="qwen2_vl")

    print(f"[demo] tiny offline Qwen2-VL at {model}; demo data in {DATA_REGISTRY}", flush=True)
    summary, total = [], time.perf_counter()
    for stage in demo_stages(model, output_dir):
        if not (EXAMPLES / stage.yaml).exists():
            summary.append(f"  {stage.name:<20} skipped: examples/{stage.yaml} does not exist yet")
            continue

        stage_dir = Path(stage.overrides["output_dir"])
        stage_dir.mkdir(parents=True, exist_ok=True)
        seconds = _run_stage(stage, stage_dir / "run.log")
        summary.append(f"  {stage.name:<20} {seconds:6.1f} s  -> {stage_dir}  {_figures(stage_dir)}")

    print(f"\n[demo] done in {time.perf_counter() - total:.1f} s on the demo data with the tiny model:", flush=True)
    print("\n".join(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(*sys.argv[1:]))
