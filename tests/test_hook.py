r"""The `.pth` bootstrap and the LLaMA-Factory patches: on, off, refused versions, stock behaviour unchanged."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from llamafactory_fea import integration

from .conftest import DATA_REGISTRY, cli_env, run_cli


PROBE = (
    "import sys, json; from llamafactory.extras.constants import TRAINING_STAGES; import llamafactory.train.tuner as t; "
    "print(json.dumps({'finders': [type(f).__name__ for f in sys.meta_path], 'stages': TRAINING_STAGES, "
    "'patched': hasattr(t._training_function, '__wrapped__')}))"
)


def _probe(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=cli_env(**env), capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_hook_reaches_a_fresh_interpreter():
    probe = _probe()
    assert "_PostImportFinder" in probe["finders"]
    assert probe["stages"]["GRPO"] == "grpo"
    assert probe["patched"]


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_environment_variable_switches_the_plugin_off(value: str):
    probe = _probe(LLAMAFACTORY_FEA_DISABLE=value)
    assert "_PostImportFinder" not in probe["finders"]
    assert "grpo" not in probe["stages"].values()
    assert not probe["patched"]


def test_unsupported_llamafactory_version_is_refused(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    import llamafactory.extras.env

    monkeypatch.setattr(llamafactory.extras.env, "VERSION", "0.9.9")
    integration.host_supported.cache_clear()
    original = lambda config: None
    tuner = types.ModuleType("llamafactory.train.tuner")
    tuner._training_function = original
    constants = types.ModuleType("llamafactory.extras.constants")
    constants.TRAINING_STAGES = {"Supervised Fine-Tuning": "sft"}
    try:
        integration.on_import(tuner)
        integration.on_import(constants)
    finally:
        integration.host_supported.cache_clear()

    assert tuner._training_function is original
    assert constants.TRAINING_STAGES == {"Supervised Fine-Tuning": "sft"}
    message = capsys.readouterr().err
    for expected in ("0.9.9", "llamafactory==0.9.5", "LLAMAFACTORY_FEA_FORCE"):
        assert expected in message


def test_duplicate_stage_is_refused():
    with pytest.raises(ValueError, match="already exists"):
        integration.register_stage(integration.STAGES["grpo"])

    with pytest.raises(ValueError, match="already exists"):
        integration.register_stage(integration.PluginStage("sft", "x", "a.b", "a.c"))


def _write_text_dataset(dataset_dir: Path) -> None:
    rows = [
        {"instruction": f"Say {word}.", "input": "", "output": f"{word} {word}."}
        for word in ("hello", "there", "calm")
    ]
    (dataset_dir / "plain.json").write_text(json.dumps(rows * 4), encoding="utf-8")
    (dataset_dir / "dataset_info.json").write_text(
        json.dumps({"plain": {"file_name": "plain.json"}}), encoding="utf-8"
    )


@pytest.mark.e2e
def test_stock_sft_losses_are_identical_with_and_without_plugin(tiny_model: Path, tmp_path: Path):
    _write_text_dataset(tmp_path)
    losses = {}
    for label, disable in (("plugin", "0"), ("stock", "1")):
        out = tmp_path / label
        args = [
            "--stage", "sft", "--do_train", "--finetuning_type", "lora", "--model_name_or_path", str(tiny_model),
            "--template", "qwen2_vl", "--dataset", "plain", "--dataset_dir", str(tmp_path), "--cutoff_len", "64",
            "--max_steps", "4", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--output_dir", str(out), "--report_to", "none", "--seed", "7", "--save_strategy", "no",
        ]  # fmt: skip
        result = run_cli(["llamafactory-cli", "train", *args], LLAMAFACTORY_FEA_DISABLE=disable)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = (out / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()
        losses[label] = [log["loss"] for log in map(json.loads, lines) if "loss" in log]

    assert len(losses["plugin"]) == 4
    assert losses["plugin"] == losses["stock"]


@pytest.mark.e2e
def test_unknown_yaml_key_still_fails_for_stock_stages(tiny_model: Path, tmp_path: Path):
    _write_text_dataset(tmp_path)
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"stage: sft\ndo_train: true\nmodel_name_or_path: {tiny_model}\ntemplate: qwen2_vl\ndataset: plain\n"
        f"dataset_dir: {tmp_path}\noutput_dir: {tmp_path / 'out'}\nno_such_key: 3\n",
        encoding="utf-8",
    )
    result = run_cli(["llamafactory-cli", "train", str(config)])
    assert result.returncode != 0
    assert "no_such_key" in result.stdout + result.stderr


def test_plugin_keys_are_split_from_yaml_and_command_line_arguments():
    stage = integration.STAGES["grpo"]
    plugin_args, rest = integration.split_plugin_args(
        stage, {"stage": "grpo", "num_generations": 4, "model_name_or_path": "m"}
    )
    assert plugin_args.num_generations == 4
    assert rest == {"stage": "sft", "model_name_or_path": "m"}

    command_line = ["--stage", "grpo", "--num_generations", "3", "--model_name_or_path", "m"]
    plugin_args, rest = integration.split_plugin_args(stage, command_line)
    assert plugin_args.num_generations == 3
    assert rest == ["--stage", "sft", "--model_name_or_path", "m"]


def test_unknown_plugin_stage_key_names_the_closest_known_key():
    stage = integration.STAGES["grpo"]
    integration._check_keys(stage, {"stage": "grpo", "num_generations": 2, "synthesis_callback": True, "lora_rank": 8})
    with pytest.raises(ValueError, match=r"num_generation \(did you mean num_generations"):
        integration._check_keys(stage, {"stage": "grpo", "num_generation": 2})


@pytest.mark.e2e
def test_unknown_grpo_yaml_key_fails_before_training(tiny_model: Path, tmp_path: Path):
    config = tmp_path / "grpo.yaml"
    config.write_text(
        f"stage: grpo\ndo_train: true\nmodel_name_or_path: {tiny_model}\ntemplate: qwen2_vl\ndataset: fea_demo\n"
        f"dataset_dir: {DATA_REGISTRY}\noutput_dir: {tmp_path / 'out'}\nreward_func: fea_format\n",
        encoding="utf-8",
    )
    result = run_cli(["llamafactory-cli", "train", str(config)])
    assert result.returncode != 0
    assert "reward_func (did you mean reward_funcs" in result.stderr
    assert not (tmp_path / "out").exists()
