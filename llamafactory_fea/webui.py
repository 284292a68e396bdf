r"""LLaMA Board pieces for the plugin stages: the settings accordions, their YAML keys, the reward plot, the data dir.

`seam.py` patches them into LLaMA Board; nothing here touches LLaMA-Factory by itself. Every widget of a
plugin stage is a field of the stage's arguments dataclass (`GRPOArguments`, `SynthesisArguments`,
`EMPOArguments`): its default comes from there, and its value reaches the training YAML only when that stage is
selected.
"""

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from .hparams import split_arg
from .resources import data_registry_dir


if TYPE_CHECKING:
    from gradio.components import Component
    from matplotlib.figure import Figure


DATA_DIR_ENV = "LLAMAFACTORY_FEA_BOARD_DATA_DIR"
ELEM_PREFIX = "fea_"
REWARD_PREFIX = "rewards/"


@dataclass(frozen=True)
class BoardField:
    r"""A widget of a plugin stage in LLaMA Board, bound to a field of the stage's arguments dataclass."""

    name: str
    label: str
    info: str = ""
    kind: str = "number"  # number, integer, slider, checkbox, dropdown, multiselect, floats, text
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: Callable[[], Sequence[str]] | None = None


ROW_SIZE = 5
MARKERS, LINESTYLES = ("o", "s", "^", "D", "v", "P"), ("-", "--", ":", "-.")


def _reward_names() -> list[str]:
    r"""The registered reward functions."""
    from .rewards import REWARDS

    return list(REWARDS)


def _au_weightings() -> list[str]:
    r"""The AU frequency weightings by their current names (the old ones still parse from YAML, not offered here)."""
    from .rewards.weighting import AU_WEIGHTINGS

    return list(AU_WEIGHTINGS)


def _synth_backends() -> tuple[str, ...]:
    r"""The generation backends of the synthesis stage."""
    from .train.synth.args import BACKENDS

    return BACKENDS


BOARD_FIELDS: dict[str, tuple[BoardField, ...]] = {
    "grpo": (
        BoardField(
            "reward_funcs",
            "Reward functions",
            "Registered rewards, or dotted paths module.function.",
            kind="multiselect",
            choices=_reward_names,
        ),
        BoardField(
            "reward_weights", "Reward weights", "Comma-separated, one per reward; empty: all 1.", kind="floats"
        ),
        BoardField("num_generations", "Generations per prompt", "GRPO group size.", "slider", 2, 64, 1),
        BoardField(
            "max_completion_length", "Max completion length", "New tokens per completion.", "slider", 8, 4096, 8
        ),
        BoardField("temperature", "Temperature", "Sampling temperature of the rollouts.", "slider", 0.0, 2.0, 0.05),
        BoardField("beta", "KL beta", "Weight of the KL penalty (0: no reference model).", "slider", 0.0, 1.0, 0.001),
        BoardField("loss_type", "Loss type", "TRL's GRPO loss formulation.", kind="dropdown"),
        BoardField("scale_rewards", "Advantage scaling", "Divide by the std of the group, batch or none.", "dropdown"),
        BoardField(
            "au_frequency_weighting",
            "AU frequency weighting",
            "Per-sample weight of rare AUs.",
            kind="dropdown",
            choices=_au_weightings,
        ),
        BoardField("use_vllm", "Use vLLM", "Generate the rollouts with vLLM.", kind="checkbox"),
    ),
    "synth": (
        BoardField("synth_max_retries", "Max retries", "Retries after a rejected answer.", "slider", 0, 10, 1),
        BoardField("synth_min_au_f1", "Min AU F1", "Least AU set F1 to keep a sample.", "slider", 0.0, 1.0, 0.05),
        BoardField("synth_require_emotion", "Require the emotion", "Keep only the labelled emotion.", kind="checkbox"),
        BoardField("synth_strict_format", "Strict format", "Keep only fault-free think/answer.", kind="checkbox"),
        BoardField("synth_resume", "Resume", "Continue from the journal in the output dir.", kind="checkbox"),
        BoardField("synth_batch_size", "Synthesis batch size", "Prompts generated together.", "slider", 1, 256, 1),
        BoardField(
            "synth_backend", "Backend", "hf, vllm or module.factory.", kind="dropdown", choices=_synth_backends
        ),
        BoardField("synth_dataset_name", "Output dataset", "Name the kept samples are registered under.", kind="text"),
        BoardField("synth_dataset_dir", "Output dataset dir", "Registers them; empty: the output dir.", kind="text"),
        BoardField("synth_stop_after", "Stop after", "Samples per rank in this run; empty: all.", kind="integer"),
    ),
    "empo": (
        BoardField(
            "empo_response_weight", "Response pair weight", "One entity edited in the answer.", "slider", 0, 5, 0.1
        ),
        BoardField(
            "empo_instruction_weight", "Instruction pair weight", "A false claim in the question.", "slider", 0, 5, 0.1
        ),
        BoardField(
            "empo_image_weight", "Image pair weight", "An AU's region hidden, or another face.", "slider", 0, 5, 0.1
        ),
    ),
}


def board_data_dir() -> str | None:
    r"""The data dir LLaMA Board should show by default, when the user asked for one through the environment."""
    return os.getenv(DATA_DIR_ENV) or None


def elem_name(stage: str, name: str) -> str:
    r"""The element name of a plugin widget in the Train tab (`train.<name>` in LLaMA Board's manager)."""
    return f"{ELEM_PREFIX}{stage}_{name}"


def _dataclass_fields(arguments_cls: type) -> dict[str, Any]:
    r"""The fields of an arguments dataclass by name."""
    return {f.name: f for f in fields(arguments_cls)}


def _default(dataclass_field: Any) -> Any:
    r"""The default value of a dataclass field (None when it has none)."""
    if dataclass_field.default is not MISSING:
        return dataclass_field.default

    if dataclass_field.default_factory is not MISSING:
        return dataclass_field.default_factory()

    return None


def _is_list(dataclass_field: Any) -> bool:
    r"""Whether a dataclass field holds a list (else a list widget's value is joined with commas)."""
    return "list" in str(dataclass_field.type).lower()


def _widget_value(spec: BoardField, default: Any) -> Any:
    r"""The initial value of a widget from the dataclass default."""
    if spec.kind == "multiselect":
        return split_arg(default)

    if spec.kind == "floats":
        return ", ".join(map(str, split_arg(default)))

    if spec.kind == "checkbox":
        return bool(default)

    return default


def _choices(spec: BoardField, dataclass_field: Any, default: Any) -> list[str]:
    r"""The choices of a dropdown: the spec's, else the field's `Literal` values, always with the default."""
    choices = list(spec.choices()) if spec.choices is not None else []
    if not choices and get_origin(dataclass_field.type) is Literal:
        choices = list(get_args(dataclass_field.type))

    return choices + [value for value in split_arg(default) if value not in choices]


def create_widget(spec: BoardField, dataclass_field: Any, elem_id: str) -> "Component":
    r"""Build the gradio widget of a plugin stage setting."""
    import gradio as gr

    default = _default(dataclass_field)
    common = dict(label=spec.label, info=spec.info or None, elem_id=elem_id)
    value = _widget_value(spec, default)
    if spec.kind == "slider":
        return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=spec.step, value=value, **common)

    if spec.kind in ("dropdown", "multiselect"):
        choices = _choices(spec, dataclass_field, default)
        multiselect = spec.kind == "multiselect"
        return gr.Dropdown(choices=choices, value=value, multiselect=multiselect, allow_custom_value=True, **common)

    if spec.kind == "checkbox":
        return gr.Checkbox(value=value, **common)

    if spec.kind in ("floats", "text"):
        return gr.Textbox(value=value or "", **common)

    return gr.Number(value=value, precision=0 if spec.kind == "integer" else None, **common)


def create_stage_tab(stage: str, title: str, arguments_cls: type) -> dict[str, "Component"]:
    r"""Build a stage's settings accordion (hidden until the stage is selected); returns its elements by name."""
    import gradio as gr

    dataclass_fields = _dataclass_fields(arguments_cls)
    elems: dict[str, Component] = {}
    specs = [spec for spec in BOARD_FIELDS.get(stage, ()) if spec.name in dataclass_fields]
    with gr.Accordion(title, open=True, visible=False, elem_id=elem_name(stage, "tab")) as tab:
        for start in range(0, len(specs), ROW_SIZE):
            with gr.Row():
                for spec in specs[start : start + ROW_SIZE]:
                    name = elem_name(stage, spec.name)
                    elems[name] = create_widget(spec, dataclass_fields[spec.name], name)

    return {elem_name(stage, "tab"): tab, **elems}


def stage_visibility(stages: Sequence[str]) -> Callable[[str], list[Any]]:
    r"""An event handler that shows the accordion of the selected plugin stage and hides the others."""
    import gradio as gr

    def change_visibility(training_stage: str) -> list[Any]:
        from llamafactory.extras.constants import TRAINING_STAGES

        selected = TRAINING_STAGES.get(training_stage)
        return [gr.Accordion(visible=selected == stage) for stage in stages]

    return change_visibility


def _to_arg(spec: BoardField, dataclass_field: Any, value: Any) -> Any:
    r"""Turn a widget value into the YAML value of its dataclass field (None: leave the field's default)."""
    if spec.kind in ("multiselect", "floats"):
        items = [float(item) if spec.kind == "floats" else item for item in split_arg(value)]
        if not items:
            return None

        return items if _is_list(dataclass_field) else ",".join(map(str, items))

    if spec.kind == "text":
        return value.strip() or None if isinstance(value, str) else value

    if isinstance(value, float) and value.is_integer() and "int" in str(dataclass_field.type):
        return int(value)

    return value


def stage_args(stage: str, arguments_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    r"""The YAML keys of a plugin stage from its widgets' values (element name -> value)."""
    dataclass_fields = _dataclass_fields(arguments_cls)
    args = {}
    for spec in BOARD_FIELDS.get(stage, ()):
        name = elem_name(stage, spec.name)
        if spec.name in dataclass_fields and name in values:
            value = _to_arg(spec, dataclass_fields[spec.name], values[name])
            if value is not None:
                args[spec.name] = value

    return args


def reward_series(trainer_log: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    r"""Per-reward curves (`rewards/<name>/mean` or `rewards/<name>`) of a trainer log: name -> (steps, values)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for log in trainer_log:
        for key, value in log.items():
            if not key.startswith(REWARD_PREFIX) or key.endswith("/std") or not isinstance(value, (int, float)):
                continue

            name = key.removeprefix(REWARD_PREFIX).removesuffix("/mean")
            if math.isfinite(value) and "current_steps" in log:
                steps, values = series.setdefault(name, ([], []))
                steps.append(log["current_steps"])
                values.append(float(value))

    return series


def gen_reward_plot(trainer_log: list[dict[str, Any]]) -> "Figure":
    r"""Plot the loss and the per-reward curves of a plugin stage run (two panels) for LLaMA Board."""
    import matplotlib.pyplot as plt
    from llamafactory.extras.ploting import smooth
    from matplotlib.ticker import MaxNLocator

    plt.close("all")
    plt.switch_backend("agg")
    fig, (loss_ax, reward_ax) = plt.subplots(2, 1, figsize=(6.4, 8.0))
    losses = [(log["current_steps"], log["loss"]) for log in trainer_log if log.get("loss") is not None]
    steps, values = [step for step, _ in losses], [loss for _, loss in losses]
    loss_ax.plot(steps, values, color="#1f77b4", alpha=0.4, marker="o", label="original")
    loss_ax.plot(steps, smooth(values), color="#1f77b4", label="smoothed")
    loss_ax.set_title("loss")
    loss_ax.set_xlabel("step")
    loss_ax.legend()
    for index, (name, (steps, values)) in enumerate(reward_series(trainer_log).items()):
        style = dict(marker=MARKERS[index % len(MARKERS)], linestyle=LINESTYLES[index % len(LINESTYLES)])
        reward_ax.plot(steps, values, label=name, **style)  # styles tell apart curves that overlap

    reward_ax.set_title("rewards (mean per step)")
    reward_ax.set_xlabel("step")
    reward_ax.legend(fontsize="small")
    for ax in (loss_ax, reward_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    fig.tight_layout(rect=(0, 0, 1, 0.96))  # room for the board's label over the plot
    return fig


def read_trainer_log(output_path: "str | os.PathLike") -> list[dict[str, Any]]:
    r"""The lines of a run's `trainer_log.jsonl` (empty before the first log; a half-written last line is skipped)."""
    from llamafactory.extras.constants import TRAINER_LOG

    from .data.files import json_lines

    path = Path(output_path, TRAINER_LOG)
    return [log for _, log in json_lines(path) if isinstance(log, dict)] if path.is_file() else []


def create_reward_plot(output_path: "str | os.PathLike") -> "Component | None":
    r"""The board's loss viewer showing loss and per-reward curves, labelled with the rewards; None without rewards."""
    import gradio as gr

    trainer_log = read_trainer_log(output_path)
    names = list(reward_series(trainer_log))
    if not names:
        return None

    return gr.Plot(gen_reward_plot(trainer_log), label=f"Loss and rewards: {', '.join(names)}")


def launch_board(
    data_dir: "str | os.PathLike | None" = None, host: str | None = None, port: int | None = None, share: bool = False
) -> int:
    r"""Run LLaMA Board (`llamafactory-cli webui`) on `host:port`, the data dir the plugin's data_registry unless given.

    Unset options keep LLaMA Board's environment variables (`GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT`,
    `GRADIO_SHARE`, `GRADIO_IPV6`); the address printed is the one gradio listens on.
    """
    os.environ[DATA_DIR_ENV] = str(Path(data_dir or data_registry_dir()).resolve())
    from llamafactory.extras.misc import fix_proxy, is_env_enabled
    from llamafactory.webui.interface import create_ui

    ipv6 = is_env_enabled("GRADIO_IPV6")
    host = host or os.getenv("GRADIO_SERVER_NAME", "[::]" if ipv6 else "0.0.0.0")
    port = port or int(os.getenv("GRADIO_SERVER_PORT", "7860"))
    share = share or is_env_enabled("GRADIO_SHARE")
    print(f"[llamafactory-fea] LLaMA Board data dir: {os.environ[DATA_DIR_ENV]}", flush=True)
    fix_proxy(ipv6_enabled=ipv6)
    board = create_ui().queue()
    try:
        board.launch(share=share, server_name=host, server_port=port, inbrowser=True, prevent_thread_lock=True)
    except OSError as error:  # gradio's "Cannot find empty port", or an address this machine does not have
        print(f"error: LLaMA Board cannot listen on {host}:{port} ({error}): pass a free --port or another --host.")
        return 1

    print(f"[llamafactory-fea] LLaMA Board listening on {board.local_url}", flush=True)
    if board.share_url:
        print(f"[llamafactory-fea] public share link: {board.share_url}", flush=True)

    board.block_thread()
    return 0
