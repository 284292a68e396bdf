r"""LLaMA Board with the plugin: stage list, FEA settings widgets, their args, stock stages unchanged, reward plot."""

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from llamafactory_fea import webui
from llamafactory_fea.train.plugin import STAGES

from .conftest import BIN, DATA_REGISTRY, cli_env, python_path


STOCK_STAGES = ("Supervised Fine-Tuning", "Reward Modeling", "PPO", "DPO", "KTO", "Pre-Training")


def build_board() -> Any:
    r"""LLaMA Board's engine (its `blocks` added) with the top bar and the Train tab built, in the current folder."""
    import gradio as gr
    from llamafactory.webui.components import create_top, create_train_tab
    from llamafactory.webui.engine import Engine

    engine = Engine()
    with gr.Blocks() as engine.blocks:
        engine.manager.add_elems("top", create_top())
        with gr.Tab("Train"):
            engine.manager.add_elems("train", create_train_tab(engine))

    return engine


def board_data(engine: Any, **values: Any) -> dict[Any, Any]:
    r"""An event's data: every element's initial value, with `values` (`top__model_path=...`) set."""
    manager = engine.manager
    data = {elem: getattr(elem, "value", None) for elem in manager.get_elem_list()}
    settings = {
        "top.lang": "en",
        "top.model_name": "Custom",
        "top.model_path": "tiny/model",
        "top.template": "qwen2_vl",
        "train.dataset_dir": str(DATA_REGISTRY),
        "train.dataset": ["fea_demo"],
        "train.output_dir": "run",
    }
    settings.update({key.replace("__", "."): value for key, value in values.items()})
    for elem_id, value in settings.items():
        data[manager.get_elem_by_id(elem_id)] = value

    return data


def stock_stage_outputs() -> None:
    r"""Print, as JSON, what the board makes of every stock stage (run with and without the plugin)."""
    from llamafactory.webui.common import gen_cmd

    engine = build_board()
    fea_values = {
        elem_id: value
        for elem_id, value in (("train.fea_grpo_num_generations", 3), ("train.fea_synth_synth_resume", False))
        if elem_id in engine.manager._id_to_elem
    }
    outputs = {}
    for board_stage in STOCK_STAGES:
        data = board_data(engine, train__training_stage=board_stage, train__use_galore=True, train__val_size=0.1)
        data.update({engine.manager.get_elem_by_id(elem_id): value for elem_id, value in fea_values.items()})
        args = engine.runner._parse_train_args(data)
        outputs[board_stage] = {
            "error": engine.runner._initialize(data, do_train=True, from_preview=True),
            "args": args,
            "preview": gen_cmd(args),
            "config": engine.runner._build_config_dict(data),
        }

    print(json.dumps({"fea_widgets": sorted(fea_values), "stages": outputs}, default=str))


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    return build_board()


def test_plugin_stages_are_in_the_stage_list(engine: Any):
    choices = [value for value, _ in engine.manager.get_elem_by_id("train.training_stage").choices]
    assert "GRPO" in choices
    assert "FEA Synthesis" in choices
    assert choices[: len(STOCK_STAGES)] == list(STOCK_STAGES)


@pytest.mark.parametrize("board_stage", ["GRPO", "FEA Synthesis"])
def test_board_handles_plugin_stages(board_stage: str):
    from llamafactory.webui.control import change_stage, list_datasets

    assert change_stage(board_stage) == ([], False)
    datasets = list_datasets(str(DATA_REGISTRY), board_stage).choices
    assert ("fea_demo", "fea_demo") in datasets


def test_empo_lists_ranking_datasets_and_has_its_weights(engine: Any, tmp_path: Path):
    from dataclasses import fields

    from llamafactory.webui.control import change_stage, list_datasets

    from llamafactory_fea.data.pairs import pairs_entry

    info = json.loads((DATA_REGISTRY / "dataset_info.json").read_text(encoding="utf-8"))
    info["demo_pairs"] = pairs_entry("pairs/demo_pairs.jsonl")
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    assert change_stage("EMPO") == ([], False)
    assert [name for name, _ in list_datasets(str(tmp_path), "EMPO").choices] == ["demo_pairs"]
    assert "demo_pairs" not in [name for name, _ in list_datasets(str(tmp_path), "Supervised Fine-Tuning").choices]
    assert "demo_pairs" in [name for name, _ in list_datasets(str(tmp_path), "DPO").choices]

    defaults = {f.name: f.default for f in fields(STAGES["empo"].load_arguments())}
    widgets = {name: engine.manager.get_elem_by_id(f"train.fea_empo_{name}") for name in defaults}
    assert {name: widget.value for name, widget in widgets.items()} == defaults
    assert all((w.minimum, w.maximum, w.step) == (0, 5, 0.1) for w in widgets.values())
    data = board_data(engine, train__training_stage="EMPO", train__fea_empo_empo_image_weight=0.5)
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == ""
    args = engine.runner._parse_train_args(data)
    assert args["stage"] == "empo"
    assert {name: args[name] for name in defaults} == {**defaults, "empo_image_weight": 0.5}


def test_grpo_widgets_reach_the_args(engine: Any):
    data = board_data(
        engine,
        train__training_stage="GRPO",
        train__fea_grpo_reward_funcs=["fea_format", "fea_au_f1"],
        train__fea_grpo_reward_weights="1, 0.5",
        train__fea_grpo_num_generations=4,
        train__fea_grpo_max_completion_length=64,
        train__fea_grpo_beta=0.0,
        train__fea_grpo_loss_type="dr_grpo",
    )
    assert engine.runner._initialize(data, do_train=True, from_preview=True) == ""
    args = engine.runner._parse_train_args(data)
    assert args["stage"] == "grpo"
    assert args["reward_funcs"] == "fea_format,fea_au_f1"
    assert args["reward_weights"] == "1.0,0.5"
    assert (args["num_generations"], args["max_completion_length"], args["beta"]) == (4, 64, 0.0)
    assert args["loss_type"] == "dr_grpo"
    assert not any(key.startswith("synth_") for key in args)


def test_grpo_widget_defaults_are_the_dataclass_defaults(engine: Any):
    arguments = STAGES["grpo"].load_arguments()()
    data = board_data(engine, train__training_stage="GRPO")
    args = engine.runner._parse_train_args(data)
    assert args["reward_funcs"].split(",") == arguments.reward_funcs
    assert args["num_generations"] == arguments.num_generations
    assert args["max_completion_length"] == arguments.max_completion_length
    assert args["beta"] == arguments.beta
    assert "reward_weights" not in args  # empty box: the dataclass default (all 1)


def test_extra_arguments_override_the_widgets(engine: Any):
    data = board_data(
        engine,
        train__training_stage="GRPO",
        train__fea_grpo_num_generations=4,
        train__extra_args=json.dumps({"num_generations": 2, "max_steps": 3}),
    )
    args = engine.runner._parse_train_args(data)
    assert (args["num_generations"], args["max_steps"]) == (2, 3)


def test_synthesis_widgets_reach_the_args_and_the_yaml(engine: Any):
    from llamafactory.webui.common import gen_cmd, save_cmd

    data = board_data(
        engine,
        train__training_stage="FEA Synthesis",
        train__fea_synth_synth_max_retries=2,
        train__fea_synth_synth_resume=False,
        train__fea_synth_synth_dataset_dir="",
        train__fea_synth_synth_stop_after=10,
    )
    args = engine.runner._parse_train_args(data)
    assert args["stage"] == "synth"
    assert (args["synth_max_retries"], args["synth_resume"], args["synth_stop_after"]) == (2, False, 10)
    assert "synth_dataset_dir" not in args
    assert not any(key in args for key in ("reward_funcs", "num_generations"))
    assert "--synth_resume False" in gen_cmd(args)  # stock drops false values; a plugin stage keeps them
    yaml_path = save_cmd(args)
    assert "synth_resume: false" in Path(yaml_path).read_text()


def test_invalid_plugin_settings_are_reported_by_the_board(engine: Any):
    data = board_data(
        engine,
        train__training_stage="GRPO",
        train__fea_grpo_reward_funcs=["fea_format", "fea_au_f1"],
        train__fea_grpo_reward_weights="1, 2, 3",
    )
    error = engine.runner._initialize(data, do_train=True, from_preview=True)
    assert error.startswith("GRPO:")
    assert "reward_weights" in error


def test_plugin_widgets_stay_out_of_stock_stages(engine: Any):
    data = board_data(
        engine,
        train__training_stage="Supervised Fine-Tuning",
        train__fea_grpo_num_generations=4,
        train__use_galore=True,
    )
    args = engine.runner._parse_train_args(data)
    names = {f for spec in webui.BOARD_FIELDS.values() for f in (s.name for s in spec)}
    assert args["stage"] == "sft"
    assert not names & set(args)
    assert not any(key.startswith("train.fea_") for key in engine.runner._build_config_dict(data))


def test_plugin_stage_config_keeps_its_widgets(engine: Any):
    data = board_data(engine, train__training_stage="GRPO", train__fea_grpo_num_generations=4)
    config = engine.runner._build_config_dict(data)
    assert config["train.fea_grpo_num_generations"] == 4


def test_saved_grpo_arguments_load_back_into_the_widgets(engine: Any):
    data = board_data(
        engine, train__training_stage="GRPO", train__fea_grpo_num_generations=6, train__config_path="fea.yaml"
    )
    engine.runner.save_args(data)
    loaded = engine.runner.load_args("en", "fea.yaml")
    widget = engine.manager.get_elem_by_id("train.fea_grpo_num_generations")
    assert loaded[widget] == 6
    assert loaded[engine.manager.get_elem_by_id("train.training_stage")] == "GRPO"


def test_every_widget_is_a_field_of_its_stage_arguments():
    from dataclasses import fields

    for stage, specs in webui.BOARD_FIELDS.items():
        names = {f.name for f in fields(STAGES[stage].load_arguments())}
        assert specs, f"stage {stage} has no board widgets"
        assert {spec.name for spec in specs} <= names


def test_dropdown_choices_are_the_literal_values_of_the_field():
    from dataclasses import fields
    from typing import get_args

    from llamafactory_fea.train.grpo.args import GRPOArguments

    by_name = {f.name: f for f in fields(GRPOArguments)}
    for spec in webui.BOARD_FIELDS["grpo"]:
        if spec.name in ("loss_type", "scale_rewards"):
            field = by_name[spec.name]
            assert webui._choices(spec, field, field.default) == list(get_args(field.type))

    (weighting,) = [spec for spec in webui.BOARD_FIELDS["grpo"] if spec.name == "au_frequency_weighting"]
    field = by_name["au_frequency_weighting"]
    offered = webui._choices(weighting, field, field.default)
    assert offered == ["none", "reward_minmax", "reward_mean_one", "loss_batch_sum"]  # the old names only parse
    assert set(offered) < set(get_args(field.type))


def test_accordions_sit_above_the_buttons_and_follow_the_stage(engine: Any):
    manager = engine.manager
    buttons = manager.get_elem_by_id("train.start_btn").parent
    layout = buttons.parent.children
    for stage in ("grpo", "synth"):
        tab = manager.get_elem_by_id(f"train.fea_{stage}_tab")
        assert layout.index(tab) < layout.index(buttons)
        assert tab.visible is False

    change_visibility = webui.stage_visibility(["grpo", "synth"])
    assert [update.visible for update in change_visibility("GRPO")] == [True, False]
    assert [update.visible for update in change_visibility("FEA Synthesis")] == [False, True]
    assert [update.visible for update in change_visibility("Supervised Fine-Tuning")] == [False, False]


@pytest.mark.parametrize("button", ["start_btn", "cmd_preview_btn", "arg_save_btn"])
def test_board_events_carry_the_plugin_widgets(engine: Any, button: str):
    widgets = [engine.manager.get_elem_by_id(f"train.fea_grpo_{name}") for name in ("reward_funcs", "beta")]
    target = engine.manager.get_elem_by_id(f"train.{button}")
    listeners = [fn for fn in engine.blocks.fns.values() if any(t[0] == target._id for t in fn.targets)]
    assert len(listeners) == 1
    assert all(widget in listeners[0].inputs for widget in widgets)


def _stock_probe(**env: str) -> dict[str, Any]:
    code = "import tests.test_webui as t; t.stock_stage_outputs()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=env.pop("cwd"),
        env={**cli_env(**env), "PYTHONPATH": python_path()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_stock_stages_are_unchanged_by_the_plugin(tmp_path: Path):
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    with_plugin = _stock_probe(cwd=str(tmp_path / "on"))
    without_plugin = _stock_probe(cwd=str(tmp_path / "off"), LLAMAFACTORY_FEA_DISABLE="1")
    assert with_plugin["fea_widgets"], "the plugin's widgets were not built"
    assert not without_plugin["fea_widgets"]
    for board_stage in STOCK_STAGES:
        assert with_plugin["stages"][board_stage] == without_plugin["stages"][board_stage], board_stage


def broken_board_outputs() -> None:
    r"""Print, as JSON, the element ids of two boards built with the plugin's settings widgets broken on purpose."""

    def broken(*args: Any) -> None:
        raise RuntimeError("broken on purpose")

    webui.create_stage_tab = broken
    print(json.dumps({"elem_ids": [sorted(build_board().manager._id_to_elem) for _ in range(2)]}))


def test_a_broken_board_patch_warns_once_and_the_stock_board_builds(engine: Any, tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-c", "import tests.test_webui as t; t.broken_board_outputs()"],
        cwd=tmp_path,
        env={**cli_env(), "PYTHONPATH": python_path()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stock_ids = sorted(elem_id for elem_id in engine.manager._id_to_elem if not elem_id.startswith("train.fea_"))
    assert json.loads(result.stdout.strip().splitlines()[-1])["elem_ids"] == [stock_ids, stock_ids]
    warning = "LLaMA Board patch of llamafactory.webui.components.train.create_train_tab failed (RuntimeError: broken"
    assert (result.stdout + result.stderr).count(warning) == 1


def test_reward_series_reads_per_reward_means():
    trainer_log = [
        {"current_steps": 1, "loss": 0.0, "rewards/fea_format/mean": 0.5, "rewards/fea_format/std": 0.1},
        {"current_steps": 2, "loss": 0.1, "rewards/fea_format/mean": 1.0, "rewards/fea_au_f1": -1.0},
        {"current_steps": 3, "loss": 0.2},
    ]
    series = webui.reward_series(trainer_log)
    assert series == {"fea_format": ([1, 2], [0.5, 1.0]), "fea_au_f1": ([2], [-1.0])}


def test_loss_viewer_shows_rewards_only_when_logged(tmp_path: Path):
    from llamafactory.webui.control import get_trainer_info

    log = tmp_path / "trainer_log.jsonl"
    lines = [
        {"current_steps": 1, "total_steps": 2, "loss": 0.3, "percentage": 50, "elapsed_time": "", "remaining_time": ""}
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    _, _, info = get_trainer_info("en", str(tmp_path), True)
    assert not (info["loss_viewer"].label or "").startswith("Loss and rewards")  # the stock plot

    lines.append({**lines[0], "current_steps": 2, "rewards/fea_format/mean": 0.5, "rewards/fea_emotion/mean": 0.0})
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    _, _, info = get_trainer_info("en", str(tmp_path), True)
    assert info["loss_viewer"].label == "Loss and rewards: fea_format, fea_emotion"
    figure = webui.gen_reward_plot(lines)
    assert [ax.get_title() for ax in figure.axes] == ["loss", "rewards (mean per step)"]
    assert [line.get_label() for line in figure.axes[1].get_lines()] == ["fea_format", "fea_emotion"]


def _board_default_data_dir(module: str, **env: str) -> str:
    code = f"from {module} import DEFAULT_DATA_DIR; print(DEFAULT_DATA_DIR)"
    result = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(**env), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[-1]


def test_data_dir_variable_sets_the_board_default(tmp_path: Path):
    train_tab, common = "llamafactory.webui.components.train", "llamafactory.webui.common"
    assert _board_default_data_dir(train_tab, LLAMAFACTORY_FEA_BOARD_DATA_DIR=str(tmp_path)) == str(tmp_path)
    assert _board_default_data_dir(common) == "data"
    assert (
        _board_default_data_dir(common, LLAMAFACTORY_FEA_BOARD_DATA_DIR=str(tmp_path), LLAMAFACTORY_FEA_DISABLE="1")
        == "data"
    )


def test_webui_command_points_the_board_at_the_data_registry(monkeypatch: pytest.MonkeyPatch, capsys):
    import llamafactory.webui.interface as interface

    from llamafactory_fea.cli import main

    seen = {}

    class Board:
        local_url, share_url = "http://127.0.0.1:7861/", None

        def queue(self) -> "Board":
            return self

        def launch(self, **kwargs: Any) -> None:
            seen.update(kwargs, dir=os.environ[webui.DATA_DIR_ENV])

        def block_thread(self) -> None:
            seen["blocked"] = True

    monkeypatch.delenv(webui.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    monkeypatch.setattr(interface, "create_ui", Board)
    assert main(["webui"]) == 0
    assert seen["dir"] == str(DATA_REGISTRY.resolve())
    assert (Path(seen["dir"]) / "dataset_info.json").is_file()
    assert (seen["server_name"], seen["server_port"], seen["share"], seen["blocked"]) == ("0.0.0.0", 7861, False, True)
    assert main(["webui", "--host", "127.0.0.1", "--port", "8000", "--share"]) == 0
    assert (seen["server_name"], seen["server_port"], seen["share"]) == ("127.0.0.1", 8000, True)

    def busy(self: Board, **kwargs: Any) -> None:
        raise OSError("port in use")

    monkeypatch.setattr(Board, "launch", busy)
    assert main(["webui", "--port", "8000"]) == 1
    assert "cannot listen on 0.0.0.0:8000 (port in use): pass a free --port" in capsys.readouterr().out


@pytest.fixture
def grpo_board(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    r"""A board engine whose runs start `llamafactory-cli train` of this venv, on CPU and offline."""
    from .conftest import BIN

    monkeypatch.chdir(tmp_path)
    for key, value in cli_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}").items():
        monkeypatch.setenv(key, value)

    return build_board()


def grpo_run_data(engine: Any, model: Path, max_steps: int) -> dict[Any, Any]:
    r"""The board's data for a short GRPO run of the tiny model on the demo data."""
    extra_args = {"max_steps": max_steps, "logging_steps": 1, "preprocessing_num_workers": 1, "report_to": "none"}
    return board_data(
        engine,
        top__model_path=str(model),
        train__training_stage="GRPO",
        train__compute_type="fp32",
        train__gradient_accumulation_steps=1,
        train__fea_grpo_num_generations=2,
        train__fea_grpo_max_completion_length=16,
        train__fea_grpo_beta=0.0,
        train__extra_args=json.dumps(extra_args),
    )


def _elem_updates(engine: Any, updates: list[dict[Any, Any]], elem_id: str) -> list[Any]:
    r"""The values one element took over a run's updates."""
    elem = engine.manager.get_elem_by_id(elem_id)
    return [update[elem] for update in updates if elem in update]


@pytest.mark.e2e
def test_grpo_run_from_the_board_shows_progress_and_rewards(grpo_board: Any, tiny_model: Path, tmp_path: Path):
    from llamafactory.webui.control import get_trainer_info

    updates = list(grpo_board.runner.run_train(grpo_run_data(grpo_board, tiny_model, max_steps=3)))
    output = _elem_updates(grpo_board, updates, "train.output_box")
    assert output[-1].startswith("Finished."), output[-1][-3000:]
    plots = _elem_updates(grpo_board, updates, "train.loss_viewer")
    assert plots[-1].label == "Loss and rewards: fea_format, fea_emotion, fea_au_f1"  # the run's last word
    output_path = tmp_path / "saves" / "Custom" / "lora" / "run"
    trainer_log = webui.read_trainer_log(output_path)
    assert [steps for steps, _ in webui.reward_series(trainer_log).values()] == [[1, 2, 3]] * 3
    _, progress_bar, _ = get_trainer_info("en", str(output_path), True)  # what the board polls while it runs
    assert progress_bar.label.startswith("Running 3/3")


@pytest.mark.e2e
def test_abort_from_the_board_stops_the_training_process(grpo_board: Any, tiny_model: Path, tmp_path: Path):
    import psutil

    runner = grpo_board.runner
    updates = runner.run_train(grpo_run_data(grpo_board, tiny_model, max_steps=500))
    log_path = tmp_path / "saves" / "Custom" / "lora" / "run" / "trainer_log.jsonl"
    next(updates)
    trainer = runner.trainer
    for _ in updates:  # the board polls every 2 s; stop once the first training step is logged
        if log_path.is_file() and log_path.read_text().strip():
            break

    processes = [psutil.Process(trainer.pid), *psutil.Process(trainer.pid).children(recursive=True)]
    runner.set_abort()
    for _ in updates:
        pass

    assert trainer.returncode is not None  # LLaMA-Factory's LogCallback turns SIGABRT into a stop at the step's end
    assert not [process for process in processes if process.is_running() and process.status() != "zombie"]
    assert max(log["current_steps"] for log in webui.read_trainer_log(log_path.parent)) < 500
    assert not runner.running


def test_board_listens_on_the_address_it_prints(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    command = [str(BIN / "llamafactory-fea"), "webui", "--host", "127.0.0.1", "--port", str(port)]
    env = cli_env(GRADIO_SERVER_PORT="1", BROWSER="true", GRADIO_ANALYTICS_ENABLED="False")
    board = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        for line in board.stdout:
            lines.append(line)
            if "listening on" in line:
                break

        assert f"LLaMA Board listening on http://127.0.0.1:{port}/" in lines[-1], "".join(lines)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as page:
            assert page.status == 200
    finally:
        board.terminate()
        board.wait(timeout=60)
