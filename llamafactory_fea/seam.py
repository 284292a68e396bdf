r"""The seam: every change the plugin makes to LLaMA-Factory, and every private LLaMA-Factory name it uses.

Read `PATCHES` (at the end) when LLaMA-Factory changes: one row per target, with its replacement and the reason.
- `import` rows are applied by `on_import` the moment their module has been executed. `_bootstrap.py` (imported by
  `llamafactory_fea.pth` in every interpreter) puts a post-import hook on `sys.meta_path` for them, because
  LLaMA-Factory's modules copy each other's names with `from ... import` (`webui.components` copies
  `create_train_tab`, `webui.runner` copies `get_trainer_info`, the tabs copy `DEFAULT_DATA_DIR`): a patch applied
  any later would miss those copies. And training often starts in a fresh interpreter (torchrun children, LLaMA
  Board's training subprocess, Ray workers), which no wrapper command reaches.
- `run` rows are swapped in for the length of a training run only, by the function named in the row.
- `read` rows are private names read, each through the one function of this module named in the row.
With the plugin off (`LLAMAFACTORY_FEA_DISABLE=1`, or a LLaMA-Factory version it was not tested on), `OFF_PATCHES`
is applied instead: stock stages run untouched, and a plugin stage or key is refused in one line saying why.
A LLaMA Board patch that fails, while applied or while the board is built or used, logs one warning and leaves
the stock function in place. Top-level imports are the standard library only: the hook imports this module.
"""

import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal


if TYPE_CHECKING:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    from .train.plugin import PluginExtension, PluginStage


TESTED_VERSIONS = {  # LLaMA-Factory version: what the plugin was tested on (scripts/test_main.sh runs the snapshot)
    "0.9.5": "the 0.9.5 release",
    "0.9.6.dev0": "its main branch at ff6d4d12e (2026-08-18)",
}
FORCE_ENV = "LLAMAFACTORY_FEA_FORCE"
DISABLE_ENV = "LLAMAFACTORY_FEA_DISABLE"
BOARD_ELEM_PREFIX = "train.fea_"


@dataclass(frozen=True)
class Patch:
    r"""One change to LLaMA-Factory: the target `module` and `name` (`Class.name` for a method), the replacement, why.

    `replacement` of an `import` row maps `(module, stock value)` to the new value; of a `run` or `read` row it is the
    function of this module that swaps in, or reads, the target.
    """

    module: str
    name: str
    replacement: Callable[..., Any]
    reason: str
    when: Literal["import", "run", "read"] = "import"
    board: bool = False


@contextmanager
def swapped(owner: Any, name: str, value: Any) -> Iterator[Any]:
    r"""Set `owner.name` to `value` for the length of the block (yields the stock value), then put the stock back."""
    stock = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield stock
    finally:
        setattr(owner, name, stock)


def host_version() -> str:
    r"""The installed LLaMA-Factory's version."""
    from llamafactory.extras.env import VERSION

    return VERSION


def tested_versions() -> str:
    r"""The LLaMA-Factory versions the plugin was tested on, in words."""
    return ", ".join(f"{version} ({what})" for version, what in TESTED_VERSIONS.items())


@cache
def host_supported() -> bool:
    r"""Whether the installed LLaMA-Factory is a version this plugin was tested on; says why not, once."""
    version = host_version()
    if version in TESTED_VERSIONS or os.getenv(FORCE_ENV, "0") == "1":
        return True

    print(
        f"[llamafactory-fea] this plugin was tested on llamafactory {tested_versions()} but found {version}: "
        f"the plugin is switched off. Install llamafactory=={next(iter(TESTED_VERSIONS))} or its main branch, or set "
        f"{FORCE_ENV}=1 to try anyway.",
        file=sys.stderr,
    )
    return False


def off_reason() -> tuple[str, str] | None:
    r"""Why the plugin is off in this interpreter and how to switch it back on, or None when it is on.

    It is off when `LLAMAFACTORY_FEA_DISABLE` is 1, true, yes or on, or when LLaMA-Factory's version is refused.
    """
    if os.getenv(DISABLE_ENV, "0").strip().lower() in ("1", "true", "yes", "on"):
        return f"switched off ({DISABLE_ENV}={os.environ[DISABLE_ENV]})", f"unset {DISABLE_ENV}"

    if not host_supported():
        return (
            f"off (it was tested on llamafactory {', '.join(TESTED_VERSIONS)}, found {host_version()})",
            f"install llamafactory=={next(iter(TESTED_VERSIONS))} or set {FORCE_ENV}=1",
        )

    return None


# Training: `llamafactory-cli train`, LLaMA Board's training subprocess and Ray workers all call `_training_function`.
HOST_ROUTES = {  # setting: (as written, where LLaMA-Factory sends the sft stage a plugin stage is parsed as, fix)
    "use_hyper_parallel": ("`use_hyper_parallel: true`", "its HyperParallel trainer", "Remove it from the YAML."),
    "USE_MCA": ("USE_MCA=1", "its Megatron-Core (mcore_adapter) trainers", "Unset USE_MCA for this run."),
    "USE_MEGATRON_BRIDGE": ("USE_MEGATRON_BRIDGE=1", "its Megatron Bridge trainers", "Unset it for this run."),
}


def host_env_routes() -> list[str]:
    r"""The environment switches of `HOST_ROUTES` this LLaMA-Factory has (Megatron Bridge: main since 0.9.5)."""
    from llamafactory.hparams import FinetuningArguments

    return ["USE_MCA", *(["USE_MEGATRON_BRIDGE"] if hasattr(FinetuningArguments, "use_megatron_bridge") else [])]


def _refuse_route(stage: "PluginStage", setting: str) -> ValueError:
    r"""The error for a plugin stage that a host setting would run as another stage."""
    written, trainer, fix = HOST_ROUTES[setting]
    return ValueError(
        f"Stage {stage.name} cannot run with {written}: LLaMA-Factory would hand it to {trainer}, which would "
        f"train sft, not {stage.name}. {fix}"
    )


def _refuse_log_loss(stage: "PluginStage", training_args: Any) -> None:
    r"""Refuse a resumed plugin run whose `overwrite_output_dir` would make LogCallback delete the run's log."""
    from llamafactory.extras.constants import TRAINER_LOG

    log = os.path.join(training_args.output_dir, TRAINER_LOG)
    if training_args.resume_from_checkpoint and getattr(training_args, "overwrite_output_dir", False):
        if os.path.exists(log):
            raise ValueError(
                f"Stage {stage.name} resumes from {training_args.resume_from_checkpoint} with "
                f"`overwrite_output_dir: true`, which makes LLaMA-Factory delete {log}, the log of the steps run so "
                "far. Set `overwrite_output_dir: false` to resume and keep the log (LLaMA-Factory then also finds the "
                "last checkpoint by itself), or move the log away to start it afresh."
            )


def _train_args_hook(
    tuner: ModuleType,
    stage: "PluginStage | None",
    extensions: list[tuple["PluginExtension", Any]],
    callbacks: list[Any],
) -> Any:
    r"""Swap `tuner.get_train_args` for one that refuses wrong routes and adds the extensions' callbacks.

    A plugin stage is refused where LLaMA-Factory would run it as another stage (`HOST_ROUTES`), before parsing
    (the parser of such a route needs its packages); the callbacks are added as soon as the arguments are parsed.
    """
    from llamafactory.extras.misc import is_env_enabled

    stock_get_train_args = tuner.get_train_args
    env_routes = host_env_routes()

    def get_train_args(args: Any = None) -> tuple[Any, ...]:
        for setting in env_routes if stage is not None else ():
            if is_env_enabled(setting):
                raise _refuse_route(stage, setting)

        parsed = stock_get_train_args(args)
        if stage is not None and parsed[3].use_hyper_parallel:
            raise _refuse_route(stage, "use_hyper_parallel")

        if stage is not None:
            _refuse_log_loss(stage, parsed[2])

        for extension, extension_args in extensions:
            callbacks.extend(extension.load_callbacks()(extension_args, *parsed))

        return parsed

    return swapped(tuner, "get_train_args", get_train_args)


def _stage_runner(tuner: ModuleType, stage: "PluginStage", plugin_args: Any) -> Any:
    r"""Swap the host stage's runner for the plugin stage's, which also receives the stage's own arguments."""
    from .train.plugin import HOST_STAGE

    runner = stage.load_runner()

    def run_stage(model_args, data_args, training_args, finetuning_args, generating_args, callbacks) -> None:
        finetuning_args.stage = stage.name
        runner(model_args, data_args, training_args, finetuning_args, generating_args, plugin_args, callbacks)

    return swapped(tuner, f"run_{HOST_STAGE}", run_stage)


def _training_function(tuner: ModuleType, stock: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    r"""Run plugin stages through the stock `_training_function` (its checks, callbacks, clean-up); stock untouched.

    The plugin's keys are taken out first, since LLaMA-Factory's parser refuses unknown keys.
    """
    from llamafactory.hparams import read_args

    from .train.plugin import STAGES, check_keys, requested_stage, split_extension_args, split_plugin_args

    def _training_function(config: dict[str, Any]) -> None:
        args = read_args(config.get("args"))
        stage = STAGES.get(requested_stage(args))
        if stage is not None:
            check_keys(stage, args, host_train_arguments())
            plugin_args, args = split_plugin_args(stage, args)

        extensions, args = split_extension_args(args)
        if stage is None and not extensions:
            return stock(config)

        with ExitStack() as stack:
            if stage is not None:
                stack.enter_context(_stage_runner(tuner, stage, plugin_args))

            for extension, extension_args in extensions:
                run_context = extension.load_run_context()
                if run_context is not None:
                    stack.enter_context(run_context(extension_args))

            stack.enter_context(_train_args_hook(tuner, stage, extensions, config["callbacks"]))
            return stock({**config, "args": args})

    return _training_function


def _plugin_refusal(config: dict[str, Any], state: str, fix: str) -> str | None:
    r"""The one line refusing a plugin stage or plugin key while the plugin is off; None for a stock run."""
    from llamafactory.hparams import read_args

    from .train.plugin import EXTENSIONS, STAGES, requested_stage

    args = read_args(config.get("args"))
    stage = requested_stage(args)
    if stage in STAGES:
        return f"Stage {stage} is a llamafactory-fea stage and the plugin is {state}: {fix} to train it."

    given = set(args) if isinstance(args, dict) else {arg[2:].split("=", 1)[0] for arg in args if arg[:2] == "--"}
    host_keys = {field.name for cls in host_train_arguments() for field in fields(cls)}
    plugin_keys = {field.name for extension in EXTENSIONS.values() for field in fields(extension.load_arguments())}
    keys = sorted(given & plugin_keys - host_keys)
    if not keys:
        return None

    if len(keys) == 1:
        return f"Key {keys[0]} is a llamafactory-fea key and the plugin is {state}: {fix} to use it, or remove it."

    return f"Keys {', '.join(keys)} are llamafactory-fea keys and the plugin is {state}: {fix} to use them, or remove them."


def _switched_off(tuner: ModuleType, stock: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    r"""With the plugin off: the stock `_training_function` with the same config, after refusing plugin stages and keys.

    Where the check itself fails (arguments it cannot read, a broken plugin install), the stock function runs: the
    guard never stands in a stock run's way.
    """
    state, fix = off_reason()

    def _training_function(config: dict[str, Any]) -> None:
        try:
            refusal = _plugin_refusal(config, state, fix)
        except Exception:
            refusal = None

        if refusal is not None:
            raise ValueError(refusal)

        return stock(config)

    return _training_function


def _training_stages(constants: ModuleType, stages: dict[str, str]) -> dict[str, str]:
    r"""LLaMA Board's stage list (board name -> stage), with the plugin stages after the stock ones."""
    from .train.plugin import STAGES

    for stage in STAGES.values():
        stages.setdefault(stage.board_name, stage.name)

    return stages


def _pair_data_stages(constants: ModuleType, stages: set[str]) -> set[str]:
    r"""The stages LLaMA Board lists ranking datasets for, with the plugin stages trained on pairs (`pairwise`)."""
    from .train.plugin import STAGES

    stages.update(stage.name for stage in STAGES.values() if stage.pairwise)
    return stages


@contextmanager
def dataset_formattings(converters: dict[str, type]) -> Iterator[None]:
    r"""LLaMA-Factory's dataset formattings with `converters` in place of the same-named stock ones, for one run.

    The registry is changed in place and only at those names, so a converter registered meanwhile stays registered.
    """
    from llamafactory.data.converter import DATASET_CONVERTERS

    stock = {name: DATASET_CONVERTERS[name] for name in converters if name in DATASET_CONVERTERS}
    DATASET_CONVERTERS.update(converters)
    try:
        yield
    finally:
        for name in converters:
            if name in stock:
                DATASET_CONVERTERS[name] = stock[name]
            else:
                DATASET_CONVERTERS.pop(name, None)


def _missing_file_hint(loader: ModuleType, stock: Callable[..., Any]) -> Callable[..., Any]:
    r"""Stock loading; when a registered file that one of our converters writes is missing, say the command."""

    def _load_single_dataset(dataset_attr: Any, model_args: Any, data_args: Any, training_args: Any) -> Any:
        try:
            return stock(dataset_attr, model_args, data_args, training_args)
        except ValueError as error:
            path = os.path.join(data_args.dataset_dir, str(dataset_attr.dataset_name))
            if dataset_attr.load_from != "file" or str(error) != f"File {path} not found.":
                raise

            from .data.validate import missing_file_fix

            fix = missing_file_fix(Path(path), data_args.dataset_dir)
            if not fix.startswith("run "):
                raise

            raise ValueError(f"{error} It is an FEA dataset file, registered but not shipped: {fix}") from None

    return _load_single_dataset


# Private LLaMA-Factory names, each read here only.
def host_train_arguments() -> tuple[type, ...]:
    r"""The dataclasses of LLaMA-Factory's training arguments (model, data, training, finetuning, generating)."""
    from llamafactory.hparams.parser import _TRAIN_ARGS

    return tuple(_TRAIN_ARGS)


def load_single_dataset(converter: str, dataset_attr: Any, model_args: Any, data_args: Any, training_args: Any) -> Any:
    r"""One registered dataset through LLaMA-Factory's loader (file or hub, `media_dir`, sampling) and `converter`.

    `converter` is a registered dataset converter used instead of the one of the dataset's formatting; the caller's
    `dataset_attr` is left as it is.
    """
    from copy import copy

    from llamafactory.data.loader import _load_single_dataset

    dataset_attr = copy(dataset_attr)
    dataset_attr.formatting = converter
    return _load_single_dataset(dataset_attr, model_args, data_args, training_args)


def regularize_images(mm_plugin: Any, images: list[Any], image_max_pixels: int, image_min_pixels: int) -> list[Any]:
    r"""Images opened and resized by LLaMA-Factory's multimodal plugin, as its SFT stage sees them."""
    limits = {"image_max_pixels": image_max_pixels, "image_min_pixels": image_min_pixels}
    return mm_plugin._regularize_images(images, **limits)["images"]


@cache
def _grpo_log_callback() -> type:
    r"""`GRPOLogCallback`, defined on first use (LLaMA-Factory's callbacks import torch and transformers)."""
    from llamafactory.train.callbacks import LogCallback
    from typing_extensions import override

    class GRPOLogCallback(LogCallback):
        r"""LLaMA-Factory's LogCallback that also writes each step's GRPO metrics into trainer_log.jsonl.

        The stock callback writes a fixed set of keys; LLaMA Board and users also need `rewards/<name>/mean`, `kl`,
        `completions/mean_length`, `fea/format_rate`, ... The instance LLaMA-Factory created is switched to this
        class (see `use_grpo_log_callback`) so its web UI handlers and abort signal stay as they are.
        """

        @property
        def pending_metrics(self) -> dict[int, dict[str, float]]:
            return self.__dict__.setdefault("_pending_metrics", {})

        @override
        def on_log(self, args: "TrainingArguments", state: "TrainerState", control: "TrainerControl", **kwargs):
            if args.should_save and state.log_history:
                metrics = {k: v for k, v in state.log_history[-1].items() if isinstance(v, (int, float))}
                self.pending_metrics.setdefault(state.global_step, {}).update(metrics)

            super().on_log(args, state, control, **kwargs)

        @override
        def _write_log(self, output_dir: str, logs: dict[str, Any]) -> None:
            metrics = self.pending_metrics.pop(logs.get("current_steps"), {})
            metrics.pop("step", None)
            super()._write_log(output_dir, {**metrics, **logs})

    return GRPOLogCallback


def use_grpo_log_callback(callbacks: list["TrainerCallback"]) -> None:
    r"""Switch LLaMA-Factory's LogCallback in `callbacks` to `GRPOLogCallback` (the same object, so nothing is lost)."""
    from llamafactory.train.callbacks import LogCallback

    for callback in callbacks:
        if type(callback) is LogCallback:
            callback.__class__ = _grpo_log_callback()


# LLaMA Board: the builders live in `webui.py`; here they are wired into LLaMA Board's modules.
def _default_data_dir(common: ModuleType, stock: str) -> str:
    r"""The board's default `Data dir`: the folder named by `LLAMAFACTORY_FEA_BOARD_DATA_DIR`, if set."""
    from . import webui

    data_dir = webui.board_data_dir()
    return stock if data_dir is None else data_dir


def _clean_cmd(common: ModuleType, stock: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    from .train.plugin import STAGES

    def _clean_cmd(args: dict[str, Any]) -> dict[str, Any]:
        r"""Keep a plugin stage's `false` settings in its YAML and preview (stock drops every false value)."""
        cleaned = stock(args)
        stage = STAGES.get(args.get("stage"))
        if stage is None:
            return cleaned

        names = {f.name for f in fields(stage.load_arguments())}
        return {**cleaned, **{key: value for key, value in args.items() if key in names and value is False}}

    return _clean_cmd


def _get_trainer_info(control: ModuleType, stock: Callable[..., tuple]) -> Callable[..., tuple]:
    from . import webui

    def get_trainer_info(lang: str, output_path: str, do_train: bool) -> tuple[str, Any, dict[str, Any]]:
        r"""The loss viewer plots the loss and per-reward curves when a run logs `rewards/*`; stock otherwise."""
        running_log, running_progress, running_info = stock(lang, output_path, do_train)
        reward_plot = webui.create_reward_plot(output_path) if "loss_viewer" in running_info else None
        if reward_plot is not None:
            running_info["loss_viewer"] = reward_plot

        return running_log, running_progress, running_info

    return get_trainer_info


def _board_stages() -> list[tuple["PluginStage", type]]:
    r"""The plugin stages whose arguments dataclass imports, with it (a stage still being built is left out)."""
    from .train.plugin import STAGES

    board_stages = []
    for stage in STAGES.values():
        try:
            board_stages.append((stage, stage.load_arguments()))
        except ValueError as err:  # `import_object` names the path and the import error
            print(f"[llamafactory-fea] no LLaMA Board settings for stage {stage.name}: {err}", file=sys.stderr)

    return board_stages


def _move_before(block: Any, anchor: Any) -> None:
    r"""Move a gradio block just before a sibling block in their parent's layout."""
    siblings = anchor.parent.children
    siblings.remove(block)
    siblings.insert(siblings.index(anchor), block)


def _create_train_tab(train: ModuleType, stock: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    from . import webui

    def create_train_tab(engine: Any) -> dict[str, Any]:
        r"""The stock Train tab with an accordion of settings per plugin stage, shown when that stage is selected.

        The widgets are built before the stock tab and joined to its base elements, so the stock preview, start,
        save and load events carry them; they are then moved just above the stock buttons.
        """
        plugin_elems, tabs = {}, []
        for stage, arguments_cls in _board_stages():
            title = stage.board_name if stage.board_name.startswith("FEA") else f"FEA / {stage.board_name}"
            elems = webui.create_stage_tab(stage.name, title, arguments_cls)
            tabs.append((stage.name, elems.pop(webui.elem_name(stage.name, "tab"))))
            plugin_elems.update(elems)

        base_elems = engine.manager.get_base_elems
        with swapped(engine.manager, "get_base_elems", lambda: base_elems() | set(plugin_elems.values())):
            elem_dict = stock(engine)

        for _, tab in tabs:
            _move_before(tab, elem_dict["cmd_preview_btn"].parent)

        change_visibility = webui.stage_visibility([name for name, _ in tabs])
        elem_dict["training_stage"].change(
            change_visibility, [elem_dict["training_stage"]], [tab for _, tab in tabs], queue=False
        )
        tab_elems = {webui.elem_name(name, "tab"): tab for name, tab in tabs}
        return {**elem_dict, **tab_elems, **plugin_elems}

    return create_train_tab


def _board_args(stage: "PluginStage", manager: Any, data: dict[Any, Any]) -> dict[str, Any]:
    r"""A plugin stage's YAML keys from its widgets in a board event's data (elements `train.fea_<stage>_<field>`)."""
    from . import webui

    values = {}
    for elem, value in data.items():
        elem_id = manager.get_id_by_elem(elem)
        if elem_id.startswith(BOARD_ELEM_PREFIX):
            values[elem_id.removeprefix("train.")] = value

    return webui.stage_args(stage.name, stage.load_arguments(), values)


def _parse_train_args(runner: ModuleType, stock: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    import json

    from .train.plugin import STAGES

    def _parse_train_args(self, data: dict[Any, Any]) -> dict[str, Any]:
        r"""The stock args, with a plugin stage's settings (never for a stock stage); `extra_args` take precedence."""
        args = stock(self, data)
        stage = STAGES.get(args["stage"])
        if stage is None:
            return args

        extra_args = json.loads(data[self.manager.get_elem_by_id("train.extra_args")])
        board_args = _board_args(stage, self.manager, data)
        return {**args, **{key: value for key, value in board_args.items() if key not in extra_args}}

    return _parse_train_args


def _initialize(runner: ModuleType, stock: Callable[..., str]) -> Callable[..., str]:
    from .train.plugin import STAGES, split_plugin_args

    def _initialize(self, data: dict[Any, Any], do_train: bool, from_preview: bool) -> str:
        r"""The stock checks, then a plugin stage's own (its widgets' values, `__post_init__`), shown in the board."""
        error = stock(self, data, do_train, from_preview)
        if error or not do_train:
            return error

        stage = STAGES.get(runner.TRAINING_STAGES[data[self.manager.get_elem_by_id("train.training_stage")]])
        if stage is None:
            return ""

        try:
            _board_args(stage, self.manager, data)
            split_plugin_args(stage, self._parse_train_args(data))
        except Exception as err:  # the user's settings, not this patch: shown as the board's error
            return f"{stage.board_name}: {err}"

        return ""

    return _initialize


def _build_config_dict(runner: ModuleType, stock: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    from .train.plugin import STAGES

    def _build_config_dict(self, data: dict[Any, Any]) -> dict[str, Any]:
        r"""The saved board config keeps the plugin widgets of a plugin stage only."""
        config = stock(self, data)
        if runner.TRAINING_STAGES.get(config.get("train.training_stage")) in STAGES:
            return config

        return {key: value for key, value in config.items() if not key.startswith(BOARD_ELEM_PREFIX)}

    return _build_config_dict


def _monitor(runner: ModuleType, stock: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    from . import webui
    from .train.plugin import STAGES

    def monitor(self):
        r"""Stock monitoring; a plugin stage's run ends with its final loss and reward curves (stock stops polling)."""
        get = lambda elem_id: self.running_data[self.manager.get_elem_by_id(elem_id)]
        stage, output_path = None, None
        if self.do_train:
            stage = runner.TRAINING_STAGES.get(get("train.training_stage"))
            output_path = runner.get_save_dir(
                get("top.model_name"), get("top.finetuning_type"), get("train.output_dir")
            )

        yield from stock(self)
        reward_plot = webui.create_reward_plot(output_path) if stage in STAGES else None
        if reward_plot is not None:
            yield {self.manager.get_elem_by_id("train.loss_viewer"): reward_plot}

    return monitor


PATCHES: tuple[Patch, ...] = (
    Patch(
        "llamafactory.extras.constants", "TRAINING_STAGES", _training_stages,
        "LLaMA Board's stage list; filled before the board modules copy it", board=True,
    ),
    Patch(
        "llamafactory.extras.constants", "STAGES_USE_PAIR_DATA", _pair_data_stages,
        "LLaMA Board lists ranking datasets for a plugin stage trained on pairs (empo); `webui.control` copies the "
        "name", board=True,
    ),
    Patch(
        "llamafactory.train.tuner", "_training_function", _training_function,
        "LLaMA-Factory (0.9.5 and main) has no plugin stages: dispatch grpo/synth, take the plugin's keys out before "
        "its parser",
    ),
    Patch(
        "llamafactory.train.tuner", "run_sft", _stage_runner,
        "a plugin stage runs in the sft stage's place, so the stock checks, callbacks and clean-up apply", "run",
    ),
    Patch(
        "llamafactory.train.tuner", "get_train_args", _train_args_hook,
        "extension callbacks need the parsed args; refuse routes that run sft instead: HyperParallel, USE_MCA, and "
        "on main USE_MEGATRON_BRIDGE (where `FinetuningArguments.use_megatron_bridge` exists)", "run",
    ),
    Patch(
        "llamafactory.train.callbacks", "LogCallback._write_log", use_grpo_log_callback,
        "the stock log keeps a fixed set of keys; grpo's instance is switched to a class writing rewards too", "run",
    ),
    Patch(
        "llamafactory.hparams.parser", "_TRAIN_ARGS", host_train_arguments,
        "every key LLaMA-Factory knows, to name the closest one to an unknown plugin-stage key (main's extra "
        "`_TRAIN_MBRIDGE_ARGS` only parse under USE_MEGATRON_BRIDGE, refused for plugin stages)", "read",
    ),
    Patch(
        "llamafactory.data.loader", "_load_single_dataset", _missing_file_hint,
        "a registered FEA dataset whose file our converter writes says the `data convert` command, not only 'not found'",
    ),
    Patch(
        "llamafactory.data.converter", "DATASET_CONVERTERS", dataset_formattings,
        "`fea_prompt_set` in a stock stage renders its rows: the stock formattings' subclasses with rendering, for that "
        "run", "run",
    ),
    Patch(
        "llamafactory.data.loader", "_load_single_dataset", load_single_dataset,
        "the stock loader of a registered dataset (file, hub, media_dir, sampling), with the label converters", "read",
    ),
    Patch(
        "llamafactory.data.mm_plugin", "BasePlugin._regularize_images", regularize_images,
        "images opened and resized with the pixel limits exactly as the sft stage does", "read",
    ),
    Patch(
        "llamafactory.webui.common", "DEFAULT_DATA_DIR", _default_data_dir,
        "`llamafactory-fea webui` points the board at the FEA data registry; the tabs copy the name", board=True,
    ),
    Patch(
        "llamafactory.webui.common", "_clean_cmd", _clean_cmd,
        "stock drops false values from the YAML; a plugin stage's false settings must stay", board=True,
    ),
    Patch(
        "llamafactory.webui.control", "get_trainer_info", _get_trainer_info,
        "the loss viewer plots the per-reward curves of a GRPO run; the runner copies the name", board=True,
    ),
    Patch(
        "llamafactory.webui.components.train", "create_train_tab", _create_train_tab,
        "the plugin stages' settings widgets, in the stock events; `webui.components` copies the name. Main adds a "
        "`train_seed` widget: the accordions are placed by the stock buttons, never by position", board=True,
    ),
    Patch(
        "llamafactory.webui.runner", "Runner._parse_train_args", _parse_train_args,
        "a plugin stage's widget values become its YAML keys", board=True,
    ),
    Patch(
        "llamafactory.webui.runner", "Runner._initialize", _initialize,
        "a plugin stage's settings are checked before a run and the error shown in the board", board=True,
    ),
    Patch(
        "llamafactory.webui.runner", "Runner._build_config_dict", _build_config_dict,
        "the saved board config keeps plugin widgets for plugin stages only", board=True,
    ),
    Patch(
        "llamafactory.webui.runner", "Runner.monitor", _monitor,
        "a plugin stage's run ends with its final reward curves (stock stops polling first); it reads "
        "trainer_log.jsonl only, so main's training output going to webui_subprocess.log, not a pipe, is alike",
        board=True,
    ),
)  # fmt: skip
OFF_PATCHES: tuple[Patch, ...] = (
    Patch(
        "llamafactory.train.tuner", "_training_function", _switched_off,
        "plugin off: stock stages untouched; a plugin stage or key says the plugin is off, not 'Unknown task'",
    ),
)  # fmt: skip
HOOKED_MODULES = frozenset(patch.module for patch in (*PATCHES, *OFF_PATCHES) if patch.when == "import")


class _StockCall:
    r"""The stock function as one call of a board patch sees it: whether it was called, is running, its result."""

    def __init__(self, stock: Callable[..., Any]) -> None:
        self.stock, self.used, self.running, self.result = stock, False, False, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.used = True
        if inspect.isgeneratorfunction(self.stock):
            return self._iterate(*args, **kwargs)

        self.running = True
        self.result = self.stock(*args, **kwargs)
        self.running = False
        return self.result

    def _iterate(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.running = True
        yield from self.stock(*args, **kwargs)
        self.running = False


def _board_patch_failed(patch: Patch, err: Exception) -> None:
    r"""Log the one warning of a LLaMA Board patch that failed."""
    from .train._logging import get_logger

    get_logger(__name__).warning(
        f"LLaMA Board patch of {patch.module}.{patch.name} failed ({type(err).__name__}: {err}); "
        f"the stock {patch.name} is used instead."
    )


def _guarded(patch: Patch, module: ModuleType, owner: Any, attr: str, stock: Callable[..., Any]) -> Callable[..., Any]:
    r"""A board patch that, on its first failure, logs one warning, puts the stock function back and answers as it.

    An error raised by the stock function itself is not the patch's and is raised as it is; the stock function is
    never called twice for one call.
    """
    failed = []

    def give_up(err: Exception) -> None:
        failed.append(err)
        setattr(owner, attr, stock)  # names copied from the module meanwhile keep calling `guarded`, which defers
        _board_patch_failed(patch, err)

    if inspect.isgeneratorfunction(stock):

        def guarded(*args: Any, **kwargs: Any) -> Iterator[Any]:
            if failed:
                return (yield from stock(*args, **kwargs))

            call = _StockCall(stock)
            try:
                yield from patch.replacement(module, call)(*args, **kwargs)
            except Exception as err:
                if call.running:
                    raise

                give_up(err)
                if not call.used:
                    yield from stock(*args, **kwargs)

    else:

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if failed:
                return stock(*args, **kwargs)

            call = _StockCall(stock)
            try:
                return patch.replacement(module, call)(*args, **kwargs)
            except Exception as err:
                if call.running:
                    raise

                give_up(err)
                return call.result if call.used else stock(*args, **kwargs)

    return guarded


def _apply(patch: Patch, module: ModuleType) -> None:
    r"""Apply an `import` row to its freshly imported module."""
    owner_name, _, attr = patch.name.rpartition(".")
    try:
        owner = getattr(module, owner_name) if owner_name else module
        stock = getattr(owner, attr)
        value = patch.replacement(module, stock)
        if patch.board and callable(stock):
            value = _guarded(patch, module, owner, attr, stock)
    except Exception as err:
        if not patch.board:
            raise

        _board_patch_failed(patch, err)
        return

    if callable(value):
        value.__wrapped__ = stock

    setattr(owner, attr, value)


def on_import(module: ModuleType) -> None:
    r"""Apply the `import` rows of a LLaMA-Factory module right after it has been executed (`OFF_PATCHES` when off)."""
    if off_reason() is None:
        for patch in PATCHES:
            if patch.when == "import" and patch.module == module.__name__:
                _apply(patch, module)

        return

    for patch in OFF_PATCHES:
        if patch.module == module.__name__:
            with suppress(Exception):  # off means the host as it is: a guard that cannot be put in place is left out
                _apply(patch, module)
