r"""The embedded demo: every Facial-R1 stage, in sequence, on the demo data and a tiny offline model."""

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.files import jsonl, write_files
from ..data.records import DATASET_INFO, dataset_info_entry, dataset_objects, registry_text
from ..data.register import COPY_FOLDER, register_datasets
from ..fea.prompts import FEAPrompts, label_space_of
from ..progress import run_job
from ..resources import data_registry_dir, examples_dir
from .data import TEST_DATASET, TRAIN_DATASET
from .figures import CURVES, DemoFigures
from .sampling import write_format_rates


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
IMAGE = "<image>"
CPU_OVERRIDES = {
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
    steps_per_epoch: int = 0  # of an SFT stage whose checkpoints are sampled (0: none)


SFT_EPOCHS = 60
CHECKPOINT_EPOCHS = 10  # a checkpoint every 10 epochs, each sampled for the share of well-formed answers
SFT_BATCH = 4
HINTED_DATASET = "fea_demo_hinted"


def prepare_data(output_dir: Path) -> Path:
    r"""The demo's own registry: the demo sets (absolute image paths) and the train faces under the synthesis prompt.

    A random-weight model never saw the synthesis prompt (the question plus the labels as hints); stage 1 trains on
    it too, so that stage 3 meets a prompt the model knows.
    """
    registry = output_dir / "data"
    register_datasets(registry, [TRAIN_DATASET, TEST_DATASET], force=True)
    prompts = FEAPrompts()
    rows = []
    for _, row in dataset_objects(registry / COPY_FOLDER / f"{TRAIN_DATASET}.jsonl"):
        space = label_space_of(row.get("dataset"), row["emotion"])
        guided = prompts.guided(row["emotion"], sorted(row["aus"]), space)  # as the synthesis stage words it
        user, *rest = row["messages"]
        rows.append({**row, "id": f"{row['id']}_hinted", "messages": [{**user, "content": IMAGE + guided}, *rest]})

    file_name = f"{COPY_FOLDER}/{HINTED_DATASET}.jsonl"
    info = registry_text(registry, {HINTED_DATASET: dataset_info_entry(file_name)})
    write_files({registry / file_name: jsonl(rows), registry / DATASET_INFO: info})
    return registry


def demo_stages(model: Path, output_dir: Path, registry: Path, sft_epochs: int = SFT_EPOCHS) -> list[DemoStage]:
    r"""Full SFT (a tiny model learns little under LoRA), a few full GRPO steps, synthesis on the train faces."""
    sft, grpo = output_dir / "sft", output_dir / "grpo"
    rows = len(dataset_objects(registry / COPY_FOLDER / f"{TRAIN_DATASET}.jsonl"))
    steps_per_epoch = -(-2 * rows // SFT_BATCH)  # the train faces twice: plain and hinted
    return [
        DemoStage(
            "stage 1: SFT",
            "fea_sft.yaml",
            {
                "model_name_or_path": str(model),
                "dataset_dir": str(registry),
                "dataset": f"{TRAIN_DATASET},{HINTED_DATASET}",
                "finetuning_type": "full",
                "num_train_epochs": str(sft_epochs),
                "learning_rate": "3e-3",
                "warmup_ratio": "0.05",
                "per_device_train_batch_size": str(SFT_BATCH),
                "gradient_accumulation_steps": "1",
                "logging_steps": "10",
                "save_steps": str(CHECKPOINT_EPOCHS * steps_per_epoch),
                "save_only_model": "true",
                "seed": "42",
                "output_dir": str(sft),
            },
            steps_per_epoch=steps_per_epoch,
        ),
        DemoStage(
            "stage 2: GRPO",
            "fea_grpo.yaml",
            {
                "model_name_or_path": str(sft),
                "adapter_name_or_path": "null",
                "create_new_adapter": "false",
                "finetuning_type": "full",
                "dataset_dir": str(registry),
                "dataset": TRAIN_DATASET,
                "max_steps": "6",
                "learning_rate": "1e-5",
                "beta": "0",
                "per_device_train_batch_size": "8",
                "gradient_accumulation_steps": "1",
                "num_generations": "4",
                "max_completion_length": "160",
                "seed": "42",
                "output_dir": str(grpo),
            },
        ),
        DemoStage(
            "stage 3: synthesis",
            "fea_synth.yaml",
            {
                "model_name_or_path": str(grpo),
                "adapter_name_or_path": "null",
                "finetuning_type": "full",
                "dataset_dir": str(registry),
                "dataset": TRAIN_DATASET,
                "output_dir": str(output_dir / "synth"),
                "synth_dataset_dir": str(output_dir / "synth"),
                "synth_max_retries": "0",
                "max_new_tokens": "192",
            },
        ),
    ]


def _run_stage(stage: DemoStage, log_path: Path) -> None:
    r"""Run one stage through `llamafactory-cli train` with its log in a file; exit with its last lines on failure."""
    overrides = {**CPU_OVERRIDES, **stage.overrides}
    # `llamafactory-cli` as this very Python runs it: its script need not sit beside the interpreter
    command = [sys.executable, "-m", "llamafactory.cli", "train", str(EXAMPLES / stage.yaml)]
    command += [f"{key}={value}" for key, value in overrides.items()]
    shown = f"llamafactory-cli train {command[4]} (+{len(overrides)} overrides)"
    print(f"[demo] {stage.name}: {shown}, log in {log_path}", flush=True)
    env = {**os.environ, **OFFLINE_ENV}
    returncode = run_job(command, log_path, log_path.parent, f"[demo] {stage.name}", cwd=log_path.parent, env=env)
    if returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise SystemExit(f"[demo] {stage.name} failed (exit {returncode}); last lines of {log_path}:\n{tail}")


def run_demo(output_dir: "str | Path" = "outputs/demo", sft_epochs: int = SFT_EPOCHS) -> int:
    r"""Build the tiny model, run the three stages, print what each learned and draw the curves, from their logs."""
    from .tiny_model import make_tiny_model

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    model = output_dir / "tiny_qwen2_vl"
    if not (model / "config.json").exists():
        make_tiny_model(model, arch="qwen2_vl")

    registry = prepare_data(output_dir)
    print(f"[demo] tiny offline Qwen2-VL at {model}; demo data registered in {registry}", flush=True)
    timings, total = [], time.perf_counter()
    stages = demo_stages(model, output_dir, registry, sft_epochs)
    for stage in stages:
        stage_dir = Path(stage.overrides["output_dir"])
        stage_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        _run_stage(stage, stage_dir / "run.log")
        if stage.steps_per_epoch:
            test_file = registry / COPY_FOLDER / f"{TEST_DATASET}.jsonl"
            print(f"[demo] {stage.name}: sampling each checkpoint on the {TEST_DATASET} faces", flush=True)
            write_format_rates(stage_dir, test_file, stage.steps_per_epoch)

        timings.append(f"  {stage.name:<20} {time.perf_counter() - start:6.1f} s  -> {stage_dir}")

    sft, grpo, synth = (Path(stage.overrides["output_dir"]) for stage in stages)
    figures = DemoFigures.read(sft, grpo, synth)
    curves = figures.write_png(output_dir / CURVES)
    print(f"\n[demo] done in {time.perf_counter() - total:.1f} s; outputs:", *timings, sep="\n", flush=True)
    print("[demo] what the runs' own logs say:", *(f"  {line}" for line in figures.summary()), sep="\n")
    print(
        "[demo] the tiny random model cannot read faces: it learns the answer format and the reasoning shown for each "
        "training face, so its GRPO rewards follow the faces drawn at each step rather than rise, and synthesis on the "
        "training faces keeps what it memorised. Real models: examples/README.md.",
        f"[demo] curves of every stage: {curves}",
        sep="\n",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(*sys.argv[1:]))
