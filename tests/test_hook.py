r"""The `.pth` bootstrap and the seam: on, off, refused versions, stock behaviour unchanged, wrong routes refused."""

import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest

from llamafactory_fea import seam
from llamafactory_fea.train import plugin

from .conftest import DATA_REGISTRY, cli_env, run_cli


PROBE = (
    "import sys, json; from llamafactory.extras.constants import TRAINING_STAGES; import llamafactory.train.tuner as t; "
    "print(json.dumps({'finders': [type(f).__name__ for f in sys.meta_path], 'stages': TRAINING_STAGES, "
    "'training_function': t._training_function.__qualname__}))"
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
    assert probe["training_function"].startswith("_training_function.")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_environment_variable_switches_the_plugin_off(value: str):
    probe = _probe(LLAMAFACTORY_FEA_DISABLE=value)
    assert "grpo" not in probe["stages"].values()
    assert probe["training_function"].startswith("_switched_off.")  # only the guard naming plugin stages and keys


SWITCHED_OFF_PROBE = """
import json, sys
import llamafactory.train.tuner as t

ran = []
t.run_sft = lambda *args: ran.append("sft")
base = {"do_train": True, "model_name_or_path": "tiny", "dataset": "d", "report_to": "none", "output_dir": sys.argv[1]}
errors = {}
for name, args in (
    ("grpo", {**base, "stage": "grpo", "num_generations": 2}),
    ("key", {**base, "stage": "sft", "synth_callback": True, "synth_callback_dataset": "x"}),
    ("stock", {**base, "stage": "sft", "temperature": 0.5}),
):
    try:
        t._training_function({"args": args, "callbacks": []})
    except Exception as err:
        errors[name] = f"{type(err).__name__}: {err}"
print(json.dumps({"errors": errors, "ran": ran}))
"""


def test_switched_off_plugin_names_itself_for_a_plugin_stage_or_key(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-c", SWITCHED_OFF_PROBE, str(tmp_path / "out")],
        env=cli_env(LLAMAFACTORY_FEA_DISABLE="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["errors"]["grpo"] == (
        "ValueError: Stage grpo is a llamafactory-fea stage and the plugin is switched off "
        "(LLAMAFACTORY_FEA_DISABLE=1): unset LLAMAFACTORY_FEA_DISABLE to train it."
    )
    assert probe["errors"]["key"] == (
        "ValueError: Keys synth_callback, synth_callback_dataset are llamafactory-fea keys and the plugin is switched "
        "off (LLAMAFACTORY_FEA_DISABLE=1): unset LLAMAFACTORY_FEA_DISABLE to use them, or remove them."
    )
    assert "stock" not in probe["errors"]  # `temperature` is LLaMA-Factory's key too: a stock run goes on
    assert probe["ran"] == ["sft"]


@pytest.fixture
def fake_tuner() -> tuple[types.ModuleType, list]:
    r"""A stand-in for LLaMA-Factory's tuner whose stock `_training_function` records the config objects it gets."""
    calls = []
    tuner = types.ModuleType("llamafactory.train.tuner")
    tuner._training_function = calls.append
    return tuner, calls


def test_unsupported_llamafactory_version_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, fake_tuner
):
    import llamafactory.extras.env

    monkeypatch.setattr(llamafactory.extras.env, "VERSION", "0.9.9")
    seam.host_supported.cache_clear()
    tuner, calls = fake_tuner
    constants = types.ModuleType("llamafactory.extras.constants")
    constants.TRAINING_STAGES = {"Supervised Fine-Tuning": "sft"}
    try:
        seam.on_import(tuner)
        seam.on_import(constants)
        stock_config = {"args": {"stage": "sft", "lora_rank": 8, "top_p": 0.5}, "callbacks": []}
        tuner._training_function(stock_config)
        assert calls == [stock_config]
        assert calls[0] is stock_config  # the stock function, with the very same config
        for args in ({"stage": "synth"}, ["--stage", "grpo"], {"stage": "sft", "synth_callback_every_n_epochs": 1}):
            with pytest.raises(ValueError, match=r"0\.9\.5, 0\.9\.6\.dev0, found 0\.9\.9.*LLAMAFACTORY_FEA_FORCE=1"):
                tuner._training_function({"args": args, "callbacks": []})
    finally:
        seam.host_supported.cache_clear()

    assert len(calls) == 1
    assert constants.TRAINING_STAGES == {"Supervised Fine-Tuning": "sft"}
    message = capsys.readouterr().err
    for expected in ("0.9.9", "0.9.6.dev0 (its main branch", "llamafactory==0.9.5", "LLAMAFACTORY_FEA_FORCE"):
        assert expected in message


@pytest.mark.parametrize("version", ["0.9.5", "0.9.6.dev0"])
def test_tested_llamafactory_versions_are_accepted(
    version: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    import llamafactory.extras.env

    monkeypatch.setattr(llamafactory.extras.env, "VERSION", version)
    monkeypatch.delenv("LLAMAFACTORY_FEA_FORCE", raising=False)
    seam.host_supported.cache_clear()
    try:
        assert seam.off_reason() is None
    finally:
        seam.host_supported.cache_clear()

    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("version", ["0.9.6.dev0", "0.9.9"])
def test_version_option_prints_ours_and_the_hosts(
    version: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    import llamafactory.extras.env

    from llamafactory_fea import __version__
    from llamafactory_fea.cli import main

    monkeypatch.setattr(llamafactory.extras.env, "VERSION", version)
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    ours, host = capsys.readouterr().out.splitlines()
    assert ours == f"llamafactory-fea {__version__}"
    if version == "0.9.6.dev0":
        assert host == "llamafactory 0.9.6.dev0, tested: its main branch at ff6d4d12e (2026-08-18)"
    else:
        assert host.startswith("llamafactory 0.9.9, not tested (tested: 0.9.5 (the 0.9.5 release), 0.9.6.dev0 (")
        assert host.endswith("the plugin is off unless LLAMAFACTORY_FEA_FORCE=1")


def test_switched_off_guard_gives_way_to_the_stock_error_when_it_cannot_read_the_args(
    monkeypatch: pytest.MonkeyPatch, fake_tuner
):
    monkeypatch.setenv("LLAMAFACTORY_FEA_DISABLE", "yes")
    tuner, calls = fake_tuner
    seam.on_import(tuner)
    with pytest.raises(ValueError, match=r"^Stage grpo .* switched off \(LLAMAFACTORY_FEA_DISABLE=yes\)"):
        tuner._training_function({"args": {"stage": "grpo"}, "callbacks": []})

    broken = {"args": 42, "callbacks": []}  # what read_args cannot read: the stock function says what is wrong
    tuner._training_function(broken)
    assert calls == [broken]


def test_duplicate_stage_is_refused():
    with pytest.raises(ValueError, match="already exists"):
        plugin.register_stage(plugin.STAGES["grpo"])

    with pytest.raises(ValueError, match="already exists"):
        plugin.register_stage(plugin.PluginStage("sft", "x", "a.b", "a.c"))


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
    stage = plugin.STAGES["grpo"]
    plugin_args, rest = plugin.split_plugin_args(
        stage, {"stage": "grpo", "num_generations": 4, "model_name_or_path": "m"}
    )
    assert plugin_args.num_generations == 4
    assert rest == {"stage": "sft", "model_name_or_path": "m"}

    command_line = ["--stage", "grpo", "--num_generations", "3", "--model_name_or_path", "m"]
    plugin_args, rest = plugin.split_plugin_args(stage, command_line)
    assert plugin_args.num_generations == 3
    assert rest == ["--stage", "sft", "--model_name_or_path", "m"]


def test_unknown_plugin_stage_key_names_the_closest_known_key():
    stage = plugin.STAGES["grpo"]
    plugin.check_keys(
        stage,
        {"stage": "grpo", "num_generations": 2, "synth_callback": True, "lora_rank": 8},
        seam.host_train_arguments(),
    )
    with pytest.raises(ValueError, match=r"num_generation \(did you mean num_generations"):
        plugin.check_keys(stage, {"stage": "grpo", "num_generation": 2}, seam.host_train_arguments())


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


GRPO_ARGS = {
    "stage": "grpo",
    "do_train": True,
    "model_name_or_path": "tiny",
    "dataset": "fea_demo",
    "report_to": "none",
}


@pytest.fixture
def host_routes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    r"""LLaMA-Factory's tuner with its HyperParallel and Megatron-Core trainers faked as installed; lists what ran."""
    import llamafactory.train.tuner as tuner

    ran = []
    for name, available in (("hyper_parallel", "is_hyper_parallel_available"), ("mca", "is_mcore_adapter_available")):
        trainers = types.ModuleType(f"llamafactory.train.{name}")
        trainers.run_sft = lambda *args, name=name: ran.append(f"{name} sft")
        monkeypatch.setitem(sys.modules, trainers.__name__, trainers)
        monkeypatch.setattr(tuner, available, lambda: True)

    monkeypatch.setattr(tuner, "run_sft", lambda *args: ran.append("sft"))
    return ran


def test_plugin_stage_with_hyper_parallel_is_refused_not_run_as_sft(host_routes: list[str], tmp_path: Path):
    import llamafactory.train.tuner as tuner

    args = {**GRPO_ARGS, "output_dir": str(tmp_path), "use_hyper_parallel": True}
    tuner._training_function.__wrapped__({"args": {**args, "stage": "sft"}, "callbacks": []})
    assert host_routes == ["hyper_parallel sft"]  # where the stock dispatcher sends a plugin stage parsed as sft
    with pytest.raises(ValueError, match=r"Stage grpo cannot run with `use_hyper_parallel: true`.*not grpo"):
        tuner._training_function({"args": args, "callbacks": []})

    assert host_routes == ["hyper_parallel sft"]


@pytest.mark.parametrize("setting", ["USE_MCA", "USE_MEGATRON_BRIDGE"])
def test_plugin_stage_with_a_megatron_switch_is_refused_not_run_as_sft(
    setting: str, host_routes: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import llamafactory.train.tuner as tuner

    if setting not in seam.host_env_routes():
        pytest.skip(f"this LLaMA-Factory has no {setting} route (main has Megatron Bridge; scripts/test_main.sh)")

    monkeypatch.setenv(setting, "1")
    with pytest.raises(ValueError, match=rf"Stage synth cannot run with {setting}=1.*Unset"):
        tuner._training_function(
            {"args": {**GRPO_ARGS, "stage": "synth", "output_dir": str(tmp_path)}, "callbacks": []}
        )

    assert not host_routes


def test_every_row_of_the_seam_names_a_host_name_and_import_rows_are_applied():
    import importlib

    assert {patch.module for patch in seam.PATCHES if patch.when == "import"} == seam.HOOKED_MODULES
    for patch in seam.PATCHES:
        target = importlib.import_module(patch.module)
        for part in patch.name.split("."):
            target = getattr(target, part, None)

        assert target is not None, f"{patch.module}.{patch.name} is gone from LLaMA-Factory"
        if patch.when == "import" and callable(target):
            assert hasattr(target, "__wrapped__"), f"{patch.module}.{patch.name} was not patched"


def test_private_host_names_are_used_in_the_seam_only():
    import ast

    package = Path(seam.__file__).parent
    private = {part for patch in seam.PATCHES for part in patch.name.split(".") if part.startswith("_")}
    offenders = []
    for path in package.rglob("*.py"):
        if path == Path(seam.__file__):
            continue

        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llamafactory"):
                names = [alias.name for alias in node.names if alias.name.startswith("_")]
            else:
                names = [name for name in (getattr(node, "attr", None), getattr(node, "id", None)) if name in private]

            offenders += [f"{path.relative_to(package)}:{node.lineno} {name}" for name in names]

    assert not offenders


def test_swapped_puts_the_stock_value_back_on_error():
    owner = types.SimpleNamespace(run=len)
    with pytest.raises(RuntimeError), seam.swapped(owner, "run", abs) as stock:
        assert (stock, owner.run) == (len, abs)
        raise RuntimeError

    assert owner.run is len


@pytest.fixture
def plugin_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    r"""Captures the plugin's log (its logger does not propagate to the root logger)."""
    logger = logging.getLogger("llamafactory_fea")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_a_failing_board_patch_warns_once_and_leaves_the_stock_function(plugin_log: pytest.LogCaptureFixture):
    board_warnings = lambda: [message for message in plugin_log.messages if "LLaMA Board patch" in message]
    calls = []

    def stock(value: str) -> str:
        calls.append(value)
        if value == "host error":
            raise KeyError(value)

        return f"stock {value}"

    def replacement(module: types.ModuleType, stock: types.FunctionType) -> types.FunctionType:
        def build(value: str) -> str:
            result = stock(value)
            if value == "boom":
                raise RuntimeError("broken on purpose")

            return f"patched {result}"

        return build

    module = types.ModuleType("host.board")
    module.build = stock
    seam._apply(seam.Patch("host.board", "build", replacement, "the test's extras", board=True), module)
    copied = module.build  # as `from host.board import build` elsewhere
    assert copied("a") == "patched stock a"
    with pytest.raises(KeyError):  # the stock function's own error is not the patch's
        copied("host error")

    assert copied("boom") == "stock boom"  # the stock answer, without calling the stock function twice
    assert (copied("b"), module.build) == ("stock b", stock)
    assert calls == ["a", "host error", "boom", "b"]
    (warning,) = board_warnings()
    assert "host.board.build failed (RuntimeError: broken on purpose)" in warning

    seam._apply(seam.Patch("host.board", "gone", replacement, "the test's extras", board=True), module)
    assert len(board_warnings()) == 2  # a target that is gone: one warning, nothing patched
    with pytest.raises(AttributeError):  # a training patch is not guarded
        seam._apply(seam.Patch("host.board", "gone", replacement, "training"), module)


def test_resuming_a_plugin_run_with_overwrite_output_dir_keeps_its_log(host_routes: list[str], tmp_path: Path):
    import llamafactory.train.tuner as tuner

    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    log = tmp_path / "trainer_log.jsonl"
    log.write_text('{"current_steps": 2, "loss": 0.5}\n', encoding="utf-8")
    args = {**GRPO_ARGS, "output_dir": str(tmp_path), "overwrite_output_dir": True}
    with pytest.raises(ValueError, match=r"Stage grpo resumes from .*checkpoint-2.*overwrite_output_dir: false"):
        tuner._training_function({"args": {**args, "resume_from_checkpoint": str(checkpoint)}, "callbacks": []})

    assert log.read_text(encoding="utf-8") == '{"current_steps": 2, "loss": 0.5}\n'
    assert not host_routes
