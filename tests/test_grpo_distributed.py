r"""The `grpo` stage under DeepSpeed ZeRO and through LLaMA-Factory's Ray path, on CPU with the tiny model.

Skipped unless `deepspeed` / `ray` is importable. What LLaMA-Factory 0.9.5 itself cannot do on CPU is left out:
- LoRA + ZeRO-2/3 fails in the stock `sft` stage (the LR scheduler is built on the trainer's two parameter groups,
  DeepSpeed then drops LoRA's empty no-decay group, torch's strict `zip` in `LRScheduler.step` raises); the grpo
  stage's trainer drops empty groups first, so LoRA + ZeRO is tested here too;
- the Ray path asks for 10 CPUs per worker in bundles of one per CPU of the cluster, which never fits on CPU only:
  the Ray test shrinks those sizes to 1 in its driver and checks what the plugin owns (the hook in the workers).
"""

import json
import os
import sys
from pathlib import Path

import pytest

from .conftest import BIN, EXAMPLES, python_path, run_cli
from .test_grpo_e2e import (
    CPU_OVERRIDES,
    RECORD_ENV,
    assert_grpo_metrics_logged,
    assert_rewards_saw_the_labels,
    read_records,
    run_grpo,
    step_logs,
)


@pytest.mark.e2e
@pytest.mark.parametrize(("zero", "finetuning_type"), [("z2", "full"), ("z3", "full"), ("z2", "lora")])
def test_grpo_with_deepspeed_zero_on_two_cpu_processes(
    tiny_model: Path, tmp_path: Path, zero: str, finetuning_type: str
):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    output_dir, record = tmp_path / zero, tmp_path / "record.jsonl"
    result = run_grpo(
        tiny_model,
        output_dir,
        record,
        f"deepspeed={EXAMPLES / 'deepspeed' / f'ds_{zero}_config.json'}",
        f"finetuning_type={finetuning_type}",
        "create_new_adapter=false",
        "beta=0.04",  # the frozen reference model goes through DeepSpeed as well
        FORCE_TORCHRUN="1",
        NPROC_PER_NODE="2",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # LLaMA-Factory's launcher calls `torchrun`
        PYTHONPATH=python_path(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("record.jsonl.*")) == ["record.jsonl.0", "record.jsonl.1"]
    assert_rewards_saw_the_labels(read_records(record))
    logs = step_logs(output_dir)
    assert [log["current_steps"] for log in logs] == [1, 2]
    assert_grpo_metrics_logged(logs)
    assert any(log["grad_norm"] > 0 for log in logs)
    weights = "model.safetensors" if finetuning_type == "full" else "adapter_model.safetensors"
    assert (output_dir / weights).stat().st_size > 0
    assert (output_dir / "checkpoint-2" / "global_step2").is_dir()  # DeepSpeed's own checkpoint


RAY_DRIVER = r"""
import sys

import ray
from llamafactory.train import trainer_utils, tuner
from ray.util.placement_group import placement_group


def get_placement_group(num_workers):
    bundle = {"CPU": 1}  # stock: {"CPU": 10} per bundle, one bundle per CPU of the cluster: never fits on CPU
    return placement_group([bundle] * num_workers, strategy="PACK"), bundle


def get_ray_remote_config_for_worker(*args, **kwargs):
    config = trainer_utils.get_ray_remote_config_for_worker(*args, **kwargs)
    config["num_cpus"] = 1  # stock: 10
    return config


tuner.get_placement_group = get_placement_group
tuner.get_ray_remote_config_for_worker = get_ray_remote_config_for_worker
ray.init(num_cpus=2, include_dashboard=False)
# stock looks the head node up through the dashboard's state API (ray[default]); name it instead
sys.argv.append(f"master_addr={ray.nodes()[0]['NodeManagerAddress']}")
tuner.run_exp()
"""


@pytest.mark.e2e
def test_lora_grpo_through_the_ray_path_on_two_cpu_workers(tiny_model: Path, tmp_path: Path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")
    output_dir, record = tmp_path / "ray", tmp_path / "record.jsonl"
    driver = tmp_path / "ray_driver.py"
    driver.write_text(RAY_DRIVER, encoding="utf-8")
    args = [f"model_name_or_path={tiny_model}", f"output_dir={output_dir}", *CPU_OVERRIDES, "ray_num_workers=2"]
    result = run_cli(
        [Path(sys.executable).name, str(driver), str(EXAMPLES / "fea_grpo.yaml"), *args],
        PYTHONPATH=python_path(),
        USE_RAY="1",
        RAY_AUTH_MODE="disabled",
        OMP_NUM_THREADS="1",
        **{RECORD_ENV: str(record)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Using ray.remote mode with 2 workers" in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.glob("record.jsonl.*")) == ["record.jsonl.0", "record.jsonl.1"]
    assert_rewards_saw_the_labels(read_records(record))
    logs = step_logs(output_dir)
    assert [log["current_steps"] for log in logs] == [1, 2]
    assert_grpo_metrics_logged(logs)
    assert (output_dir / "checkpoint-2" / "adapter_model.safetensors").exists()
    assert json.loads((output_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model)
