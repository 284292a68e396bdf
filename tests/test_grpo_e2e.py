r"""The `grpo` stage end to end: `llamafactory-cli train examples/fea_grpo.yaml` on the tiny model and the demo data."""

import json
import math
import os
from pathlib import Path

import pytest

from .conftest import BIN, DATA_REGISTRY, EXAMPLES, python_path, run_cli


RECORD_ENV = "FEA_GRPO_TEST_RECORD"
RECORDER = "tests.test_grpo_e2e.record_labels"
DEMO = [json.loads(line) for line in (DATA_REGISTRY / "demo" / "fea_demo.jsonl").read_text().splitlines()]
VISION_IDS = {3, 4, 5, 6}  # <|vision_start|>, <|vision_end|>, <|image_pad|>, <|video_pad|> of the tiny tokenizer
CPU_OVERRIDES = [
    f"dataset_dir={DATA_REGISTRY}",
    "dataset=fea_demo",
    "adapter_name_or_path=null",
    "bf16=false",
    "max_steps=2",
    "save_steps=1",
    "logging_steps=1",
    "per_device_train_batch_size=2",
    "gradient_accumulation_steps=1",
    "num_generations=2",
    "max_completion_length=16",
    "preprocessing_num_workers=1",
    "dataloader_num_workers=0",
    "report_to=none",
    f"reward_funcs=fea_format,fea_emotion,fea_au_f1,{RECORDER}",
]


def record_labels(completions, emotion=None, aus=None, images=None, completion_ids=None, **kwargs) -> list[float]:
    r"""A reward that writes down the label columns and images it was given; pays by length so advantages vary."""
    path = f"{os.environ[RECORD_ENV]}.{os.getenv('RANK', '0')}"
    with open(path, "a", encoding="utf-8") as f:
        for i, completion in enumerate(completions):
            row = {
                "emotion": emotion[i],
                "aus": None if aus[i] is None else list(aus[i]),
                "images": [list(image.size) for image in images[i]] if images else [],
                "completion_ids": list(completion_ids[i]),
                "completion_is_text": isinstance(completion, str),
            }
            f.write(json.dumps(row) + "\n")

    return [float(len(completion) % 3) for completion in completions]


def run_grpo(tiny_model: Path, output_dir: Path, record: Path, *overrides: str, **env: str):
    r"""`llamafactory-cli train examples/fea_grpo.yaml` with CPU overrides; returns the completed process."""
    args = [f"model_name_or_path={tiny_model}", f"output_dir={output_dir}", *CPU_OVERRIDES, *overrides]
    env = {"PYTHONPATH": python_path(), RECORD_ENV: str(record), "OMP_NUM_THREADS": "1", **env}
    return run_cli(["llamafactory-cli", "train", str(EXAMPLES / "fea_grpo.yaml"), *args], **env)


def read_records(record: Path) -> list[dict]:
    files = sorted(record.parent.glob(f"{record.name}.*"))
    return [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines()]


def step_logs(output_dir: Path) -> list[dict]:
    lines = (output_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [log for log in map(json.loads, lines) if "loss" in log]


def assert_rewards_saw_the_labels(records: list[dict]):
    labels = {(row["emotion"], tuple(row["aus"])) for row in DEMO}
    assert records, "the recording reward was never called"
    for row in records:
        assert (row["emotion"], tuple(row["aus"])) in labels
        assert len(row["images"]) == 1
        assert row["completion_is_text"]
        assert not VISION_IDS & set(row["completion_ids"]), "a rollout emitted a vision token"


def assert_grpo_metrics_logged(logs: list[dict], kl: bool = True):
    for log in logs:
        keys = {"current_steps", "reward", "completions/mean_length", "fea/format_rate", "fea/emotion_accuracy"}
        keys |= {f"rewards/{name}/mean" for name in ("fea_format", "fea_emotion", "fea_au_f1", "record_labels")}
        assert keys <= set(log), keys - set(log)
        assert 0.0 <= log["fea/format_rate"] <= 1.0
        assert 0.0 <= log["fea/au_f1"] <= 1.0
        assert "fea/clipped_ratio" in log
        assert ("kl" in log) == kl


@pytest.mark.e2e
def test_lora_grpo_trains_on_the_labels_saves_and_resumes(tiny_model: Path, tmp_path: Path):
    output_dir, record = tmp_path / "grpo", tmp_path / "record.jsonl"
    result = run_grpo(tiny_model, output_dir, record)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_rewards_saw_the_labels(read_records(record))
    logs = step_logs(output_dir)
    assert [log["current_steps"] for log in logs] == [1, 2]
    assert_grpo_metrics_logged(logs)
    assert any(log["grad_norm"] > 0 for log in logs), "no gradient reached the adapter"
    for folder in (output_dir, output_dir / "checkpoint-1", output_dir / "checkpoint-2"):
        assert (folder / "adapter_model.safetensors").exists()
        assert (folder / "preprocessor_config.json").exists()
    assert (output_dir / "training_rewards_fea_emotion_mean.png").exists()

    chained = run_grpo(  # stage 2 on top of an earlier adapter (the SFT one in examples/fea_grpo.yaml)
        tiny_model, tmp_path / "chained", record, f"adapter_name_or_path={output_dir}", "max_steps=1"
    )
    assert chained.returncode == 0, chained.stderr[-3000:]
    assert "Merged 1 adapter(s)" in chained.stdout + chained.stderr
    assert (tmp_path / "chained" / "adapter_model.safetensors").exists()

    resumed = run_grpo(  # as examples/README.md says: overwrite_output_dir=false keeps the log of steps 1-2
        tiny_model, output_dir, record, "max_steps=3", "overwrite_output_dir=false",
        f"resume_from_checkpoint={output_dir / 'checkpoint-2'}",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Continuing training from checkpoint" in resumed.stdout + resumed.stderr
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 3
    assert [log["current_steps"] for log in step_logs(output_dir)] == [1, 2, 3]


@pytest.mark.e2e
def test_full_grpo_with_reference_model_and_evaluation(tiny_model: Path, tmp_path: Path):
    output_dir, record = tmp_path / "full", tmp_path / "record.jsonl"
    result = run_grpo(
        tiny_model,
        output_dir,
        record,
        "finetuning_type=full",
        "create_new_adapter=false",
        "beta=0.04",
        "au_frequency_weighting=reference",
        "val_size=4",
        "do_eval=true",
        "eval_strategy=steps",
        "eval_steps=2",
        "per_device_eval_batch_size=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_rewards_saw_the_labels(read_records(record))
    logs = step_logs(output_dir)
    assert_grpo_metrics_logged(logs)
    assert (output_dir / "model.safetensors").exists()
    assert not (output_dir / "adapter_model.safetensors").exists()
    evals = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert any("eval_rewards/fea_emotion/mean" in log for log in evals)
    assert "eval_fea/format_rate" in json.loads((output_dir / "all_results.json").read_text())


@pytest.mark.e2e
def test_two_processes_with_torchrun_on_cpu(tiny_model: Path, tmp_path: Path):
    output_dir, record = tmp_path / "ddp", tmp_path / "record.jsonl"
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # LLaMA-Factory's launcher calls `torchrun`
    result = run_grpo(tiny_model, output_dir, record, FORCE_TORCHRUN="1", NPROC_PER_NODE="2", PATH=path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("record.jsonl.*")) == ["record.jsonl.0", "record.jsonl.1"]
    assert_rewards_saw_the_labels(read_records(record))
    logs = step_logs(output_dir)
    assert [log["current_steps"] for log in logs] == [1, 2]
    assert_grpo_metrics_logged(logs)
    assert logs[0]["num_tokens"] > 0
    assert (output_dir / "checkpoint-2" / "adapter_model.safetensors").exists()


@pytest.mark.e2e
def test_a_mix_of_emotion_only_and_au_only_rows_grades_each_row_on_the_labels_it_has(tiny_model: Path, tmp_path: Path):
    # one prompt per step (2 completions, a group of 2) and an epoch of 3 rows: every row is one step, so each step's
    # logged reward means come from one row alone, and an unlabelled side must log NaN rather than a number
    rows = []
    for source, emotion, aus in ((DEMO[0], None, "keep"), (DEMO[1], "keep", None), (DEMO[2], "keep", "keep")):
        row = {**source, "images": [str(DATA_REGISTRY / image) for image in source["images"]]}
        row["emotion"] = row["emotion"] if emotion == "keep" else None
        row["aus"] = row["aus"] if aus == "keep" else None
        rows.append(row)

    data = tmp_path / "mix"
    data.mkdir()
    (data / "mix.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (data / "dataset_info.json").write_text(
        json.dumps(
            {
                "mix": json.loads((DATA_REGISTRY / "dataset_info.json").read_text())["fea_demo"]
                | {"file_name": "mix.jsonl"}
            }
        )
    )
    output_dir, record = tmp_path / "grpo", tmp_path / "record.jsonl"
    result = run_grpo(
        tiny_model, output_dir, record, f"dataset_dir={data}", "dataset=mix", "max_steps=3", "save_steps=10"
    )
    assert result.returncode == 0, result.stderr[-3000:]

    records = read_records(record)
    assert len(records) == 3 * 2  # one call a step, two completions of one row
    seen = [(records[2 * k]["emotion"], records[2 * k]["aus"]) for k in range(3)]
    assert [(row["emotion"], row["aus"]) for row in records[1::2]] == seen
    assert sorted(seen, key=str) == sorted(((row["emotion"], row["aus"]) for row in rows), key=str)  # each row once

    logs = step_logs(output_dir)
    assert [log["current_steps"] for log in logs] == [1, 2, 3]
    for log, (emotion, aus) in zip(logs, seen):
        for name in ("fea_emotion", "fea_au_f1"):
            labelled = (emotion if name == "fea_emotion" else aus) is not None
            mean = log[f"rewards/{name}/mean"]
            assert math.isnan(mean) != labelled, (name, emotion, aus, mean)

        assert ("fea/emotion_accuracy" in log) == (emotion is not None)
        assert ("fea/au_f1" in log) == (aus is not None)
        assert not math.isnan(log["rewards/fea_format/mean"])
        assert not math.isnan(log["reward"])  # the summed reward leaves the missing side out (nansum)
