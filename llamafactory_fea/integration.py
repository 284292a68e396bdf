r"""Everything the plugin patches into LLaMA-Factory, in one place (the seam to read when LLaMA-Factory changes).

`_bootstrap` calls `on_import` when a hooked LLaMA-Factory module has been imported:
- `llamafactory.extras.constants`: the plugin stages join `TRAINING_STAGES` (LLaMA Board's stage list);
- `llamafactory.train.tuner`: `_training_function` (looked up at call time by `run_exp` and by Ray workers)
  runs plugin stages and takes the plugin's YAML keys out before LLaMA-Factory's parser sees them; the keys of
  plugin extensions (e.g. `synthesis_callback`) are taken out for any stage and add their training callbacks;
- `llamafactory.webui.*` (LLaMA Board): the plugin stages' settings accordions, their keys in the board's args,
  the per-reward plot and an optional default data dir (builders in `webui.py`).
"""

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cache
from types import ModuleType
from typing import Any


SUPPORTED_VERSIONS = ("0.9.5",)
FORCE_ENV = "LLAMAFACTORY_FEA_FORCE"
HOST_STAGE = "sft"  # plugin stages borrow the sft stage's argument checks and callbacks


@dataclass(frozen=True)
class PluginStage:
    r"""A training stage the plugin adds to `llamafactory-cli train` and LLaMA Board."""

    name: str
    board_name: str
    runner: str
    arguments: str

    def load_runner(self) -> Callable[..., None]:
        r"""Import the stage's `run_<stage>` function."""
        return _import_object(self.runner)

    def load_arguments(self) -> type:
        r"""Import the dataclass of the stage's own YAML keys."""
        return _import_object(self.arguments)


STAGES: dict[str, PluginStage] = {}


def register_stage(stage: PluginStage) -> None:
    r"""Register a plugin stage; a name already used by LLaMA-Factory or another plugin stage is refused."""
    if stage.name in STAGES or stage.name in ("pt", "sft", "rm", "ppo", "dpo", "kto"):
        raise ValueError(f"Stage {stage.name} already exists.")

    STAGES[stage.name] = stage


register_stage(
    PluginStage(
        name="grpo",
        board_name="GRPO",
        runner="llamafactory_fea.train.grpo.workflow.run_grpo",
        arguments="llamafactory_fea.train.grpo.args.GRPOArguments",
    )
)
register_stage(
    PluginStage(
        name="synth",
        board_name="FEA Synthesis",
        runner="llamafactory_fea.train.synth.workflow.run_synth",
        arguments="llamafactory_fea.train.synth.args.SynthesisArguments",
    )
)


@dataclass(frozen=True)
class PluginExtension:
    r"""Plugin YAML keys that every stage, stock or plugin, accepts, and the training callbacks they add."""

    name: str
    arguments: str
    callbacks: str

    def load_arguments(self) -> type:
        r"""Import the dataclass of the extension's YAML keys."""
        return _import_object(self.arguments)

    def load_callbacks(self) -> Callable[..., list[Any]]:
        r"""Import `f(extension_args, model_args, data_args, training_args, finetuning_args, generating_args)`."""
        return _import_object(self.callbacks)


EXTENSIONS: dict[str, PluginExtension] = {}


def register_extension(extension: PluginExtension) -> None:
    r"""Register a plugin extension; duplicates are refused."""
    if extension.name in EXTENSIONS:
        raise ValueError(f"Extension {extension.name} already exists.")

    EXTENSIONS[extension.name] = extension


register_extension(
    PluginExtension(
        name="synthesis_callback",
        arguments="llamafactory_fea.train.synth.args.SynthesisCallbackArguments",
        callbacks="llamafactory_fea.train.synth.callback.synthesis_callbacks",
    )
)


def _import_object(path: str) -> Any:
    r"""Import `package.module.attribute`."""
    module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _parse_keys(arguments_cls: type, args: dict[str, Any] | list[str]) -> tuple[Any, dict[str, Any] | list[str]]:
    r"""Parse the keys of a dataclass out of YAML/dict or command-line arguments; return it and the other arguments."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(arguments_cls)
    if isinstance(args, dict):
        names = {f.name for f in fields(arguments_cls)}
        (parsed,) = parser.parse_dict({k: v for k, v in args.items() if k in names})
        return parsed, {k: v for k, v in args.items() if k not in names}

    parsed, rest = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    return parsed, rest


def split_plugin_args(stage: PluginStage, args: dict[str, Any] | list[str]) -> tuple[Any, dict[str, Any] | list[str]]:
    r"""Parse a plugin stage's own keys into its dataclass; return it and the rest for LLaMA-Factory's parser."""
    plugin_args, rest = _parse_keys(stage.load_arguments(), args)
    if isinstance(rest, dict):
        return plugin_args, {**rest, "stage": HOST_STAGE}

    rest = [HOST_STAGE if i > 0 and rest[i - 1] == "--stage" else arg for i, arg in enumerate(rest)]
    rest = [f"--stage={HOST_STAGE}" if arg.startswith("--stage=") else arg for arg in rest]
    return plugin_args, rest


def _names_keys(names: set[str], args: dict[str, Any] | list[str]) -> bool:
    r"""Whether YAML/dict or command-line arguments set any of the keys."""
    if isinstance(args, dict):
        return any(key in names for key in args)

    return any(arg.startswith("--") and arg[2:].split("=", 1)[0] in names for arg in args)


def split_extension_args(
    args: dict[str, Any] | list[str],
) -> tuple[list[tuple[PluginExtension, Any]], dict[str, Any] | list[str]]:
    r"""Parse the keys of every extension the arguments use; return the extensions with their arguments, and the rest."""
    used = []
    for extension in EXTENSIONS.values():
        arguments_cls = extension.load_arguments()
        if _names_keys({f.name for f in fields(arguments_cls)}, args):
            extension_args, args = _parse_keys(arguments_cls, args)
            used.append((extension, extension_args))

    return used, args


@contextmanager
def _extension_callbacks(
    tuner: ModuleType, extensions: list[tuple[PluginExtension, Any]], callbacks: list[Any]
) -> Iterator[None]:
    r"""Add the extensions' callbacks as soon as LLaMA-Factory has parsed its arguments (the callbacks need them)."""
    stock_get_train_args = tuner.get_train_args

    def get_train_args(args: Any = None) -> tuple[Any, ...]:
        parsed = stock_get_train_args(args)
        for extension, extension_args in extensions:
            callbacks.extend(extension.load_callbacks()(extension_args, *parsed))

        return parsed

    tuner.get_train_args = get_train_args
    try:
        yield
    finally:
        tuner.get_train_args = stock_get_train_args


def _requested_stage(args: dict[str, Any] | list[str]) -> str | None:
    r"""Return the `stage` value of YAML/dict or command-line arguments."""
    if isinstance(args, dict):
        return args.get("stage")

    for i, arg in enumerate(args):
        if arg == "--stage" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--stage="):
            return arg.split("=", 1)[1]

    return None


def _check_keys(stage: PluginStage, args: dict[str, Any] | list[str]) -> None:
    r"""Refuse YAML keys that neither LLaMA-Factory nor the plugin knows, suggesting the closest known key."""
    from difflib import get_close_matches

    from llamafactory.extras.misc import is_env_enabled
    from llamafactory.hparams.parser import _TRAIN_ARGS

    if not isinstance(args, dict) or is_env_enabled("ALLOW_EXTRA_ARGS"):
        return

    plugin_classes = [stage.load_arguments(), *(extension.load_arguments() for extension in EXTENSIONS.values())]
    known = {f.name for cls in (*_TRAIN_ARGS, *plugin_classes) for f in fields(cls)}
    unknown = sorted(key for key in args if key not in known)
    if unknown:
        hints = [
            f"{key} (did you mean {', '.join(get_close_matches(key, known, n=2)) or 'nothing close'}?)"
            for key in unknown
        ]
        raise ValueError(f"Unknown keys for stage {stage.name}: {'; '.join(hints)}. Fix or remove them in the YAML.")


def _run_plugin_stage(
    tuner: ModuleType, original: Callable[[dict[str, Any]], None], stage: PluginStage, config: dict[str, Any]
) -> None:
    r"""Run a plugin stage through LLaMA-Factory's own `_training_function` (argument checks, callbacks, clean-up).

    The stage's arguments are parsed as the host stage's, and the host stage's runner is swapped for the
    plugin's for the duration of the call, so logging, reporting and process-group clean-up stay stock.
    """
    _check_keys(stage, config.get("args"))
    plugin_args, args = split_plugin_args(stage, config.get("args"))
    extensions, args = split_extension_args(args)
    runner = stage.load_runner()
    host_runner = getattr(tuner, f"run_{HOST_STAGE}")

    def run_stage(model_args, data_args, training_args, finetuning_args, generating_args, callbacks) -> None:
        finetuning_args.stage = stage.name
        runner(model_args, data_args, training_args, finetuning_args, generating_args, plugin_args, callbacks)

    setattr(tuner, f"run_{HOST_STAGE}", run_stage)
    try:
        with _extension_callbacks(tuner, extensions, config["callbacks"]):
            original({**config, "args": args})
    finally:
        setattr(tuner, f"run_{HOST_STAGE}", host_runner)


def _patch_tuner(tuner: ModuleType) -> None:
    r"""Wrap `_training_function` so that plugin stages are dispatched and stock stages run untouched."""
    from llamafactory.hparams import read_args

    original = tuner._training_function

    def _training_function(config: dict[str, Any]) -> None:
        args = read_args(config.get("args"))
        stage = STAGES.get(_requested_stage(args))
        if stage is None:
            extensions, args = split_extension_args(args)
            if not extensions:
                return original(config)

            with _extension_callbacks(tuner, extensions, config["callbacks"]):
                return original({**config, "args": args})

        return _run_plugin_stage(tuner, original, stage, {**config, "args": args})

    _training_function.__wrapped__ = original
    tuner._training_function = _training_function


def _patch_constants(constants: ModuleType) -> None:
    r"""Add the plugin stages to LLaMA Board's stage list."""
    for stage in STAGES.values():
        constants.TRAINING_STAGES.setdefault(stage.board_name, stage.name)


# LLaMA Board (webui): the builders live in `webui.py`; here they are wired into LLaMA Board's modules.
BOARD_ELEM_PREFIX = "train.fea_"


def _patch_webui_common(common: ModuleType) -> None:
    r"""Point the board's default `Data dir` at the folder named by `LLAMAFACTORY_FEA_BOARD_DATA_DIR`, if set."""
    from . import webui

    data_dir = webui.board_data_dir()
    if data_dir is not None:
        common.DEFAULT_DATA_DIR = data_dir

    stock_clean_cmd = common._clean_cmd

    def _clean_cmd(args: dict[str, Any]) -> dict[str, Any]:
        r"""Keep a plugin stage's `false` settings in its YAML and preview (stock drops every false value)."""
        cleaned = stock_clean_cmd(args)
        stage = STAGES.get(args.get("stage"))
        if stage is None:
            return cleaned

        names = {f.name for f in fields(stage.load_arguments())}
        return {**cleaned, **{key: value for key, value in args.items() if key in names and value is False}}

    _clean_cmd.__wrapped__ = stock_clean_cmd
    common._clean_cmd = _clean_cmd


def _patch_webui_control(control: ModuleType) -> None:
    r"""Show the loss and per-reward curves in the loss viewer when a run logs `rewards/*`; the stock plot otherwise."""
    from . import webui

    stock_trainer_info = control.get_trainer_info

    def get_trainer_info(lang: str, output_path: str, do_train: bool) -> tuple[str, Any, dict[str, Any]]:
        running_log, running_progress, running_info = stock_trainer_info(lang, output_path, do_train)
        reward_plot = webui.create_reward_plot(output_path) if "loss_viewer" in running_info else None
        if reward_plot is not None:
            running_info["loss_viewer"] = reward_plot

        return running_log, running_progress, running_info

    get_trainer_info.__wrapped__ = stock_trainer_info
    control.get_trainer_info = get_trainer_info


def _board_stages() -> list[tuple[PluginStage, type]]:
    r"""The plugin stages whose arguments dataclass imports, with it (a stage still being built is left out)."""
    board_stages = []
    for stage in STAGES.values():
        try:
            board_stages.append((stage, stage.load_arguments()))
        except (ImportError, AttributeError) as err:
            print(f"[llamafactory-fea] no LLaMA Board settings for stage {stage.name}: {err}", file=sys.stderr)

    return board_stages


def _move_before(block: Any, anchor: Any) -> None:
    r"""Move a gradio block just before a sibling block in their parent's layout."""
    siblings = anchor.parent.children
    siblings.remove(block)
    siblings.insert(siblings.index(anchor), block)


def _patch_webui_train(train: ModuleType) -> None:
    r"""Add an accordion of settings per plugin stage to the Train tab, shown when that stage is selected.

    The widgets are built before the stock tab and joined to its base elements, so the stock preview, start,
    save and load events carry them; they are then moved just above the stock buttons.
    """
    from . import webui

    stock_create_train_tab = train.create_train_tab

    def create_train_tab(engine: Any) -> dict[str, Any]:
        plugin_elems, tabs = {}, []
        for stage, arguments_cls in _board_stages():
            title = stage.board_name if stage.board_name.startswith("FEA") else f"FEA / {stage.board_name}"
            elems = webui.create_stage_tab(stage.name, title, arguments_cls)
            tabs.append((stage.name, elems.pop(webui.elem_name(stage.name, "tab"))))
            plugin_elems.update(elems)

        stock_base_elems = engine.manager.get_base_elems
        engine.manager.get_base_elems = lambda: stock_base_elems() | set(plugin_elems.values())
        try:
            elem_dict = stock_create_train_tab(engine)
        finally:
            del engine.manager.get_base_elems

        for _, tab in tabs:
            _move_before(tab, elem_dict["cmd_preview_btn"].parent)

        change_visibility = webui.stage_visibility([name for name, _ in tabs])
        elem_dict["training_stage"].change(
            change_visibility, [elem_dict["training_stage"]], [tab for _, tab in tabs], queue=False
        )
        tab_elems = {webui.elem_name(name, "tab"): tab for name, tab in tabs}
        return {**elem_dict, **tab_elems, **plugin_elems}

    create_train_tab.__wrapped__ = stock_create_train_tab
    train.create_train_tab = create_train_tab


def _board_values(manager: Any, data: dict[Any, Any]) -> dict[str, Any]:
    r"""The values of the plugin widgets in a board event's data, by element name (`fea_<stage>_<field>`)."""
    values = {}
    for elem, value in data.items():
        elem_id = manager.get_id_by_elem(elem)
        if elem_id.startswith(BOARD_ELEM_PREFIX):
            values[elem_id.removeprefix("train.")] = value

    return values


def _patch_webui_runner(runner: ModuleType) -> None:
    r"""Add a plugin stage's settings to the args the board writes (never for a stock stage) and check them."""
    import json

    from . import webui

    Runner = runner.Runner
    stock_parse, stock_initialize = Runner._parse_train_args, Runner._initialize
    stock_config, stock_monitor = Runner._build_config_dict, Runner.monitor

    def _parse_train_args(self, data: dict[Any, Any]) -> dict[str, Any]:
        args = stock_parse(self, data)
        stage = STAGES.get(args["stage"])
        if stage is None:
            return args

        extra_args = json.loads(data[self.manager.get_elem_by_id("train.extra_args")])
        board_args = webui.stage_args(stage.name, stage.load_arguments(), _board_values(self.manager, data))
        return {**args, **{key: value for key, value in board_args.items() if key not in extra_args}}

    def _initialize(self, data: dict[Any, Any], do_train: bool, from_preview: bool) -> str:
        error = stock_initialize(self, data, do_train, from_preview)
        if error or not do_train:
            return error

        args = self._parse_train_args(data)
        stage = STAGES.get(args["stage"])
        try:
            if stage is not None:
                split_plugin_args(stage, args)
        except Exception as err:  # the stage's own checks (`__post_init__`), shown in the board
            return f"{stage.board_name}: {err}"

        return ""

    def _build_config_dict(self, data: dict[Any, Any]) -> dict[str, Any]:
        config = stock_config(self, data)
        if runner.TRAINING_STAGES.get(config.get("train.training_stage")) in STAGES:
            return config

        return {key: value for key, value in config.items() if not key.startswith(BOARD_ELEM_PREFIX)}

    def monitor(self):
        r"""Stock monitoring; a plugin stage's run ends with its final loss and reward curves (stock stops polling)."""
        get = lambda elem_id: self.running_data[self.manager.get_elem_by_id(elem_id)]
        stage, output_path = None, None
        if self.do_train:
            stage = runner.TRAINING_STAGES.get(get("train.training_stage"))
            output_path = runner.get_save_dir(
                get("top.model_name"), get("top.finetuning_type"), get("train.output_dir")
            )

        yield from stock_monitor(self)
        reward_plot = webui.create_reward_plot(output_path) if stage in STAGES else None
        if reward_plot is not None:
            yield {self.manager.get_elem_by_id("train.loss_viewer"): reward_plot}

    for patched in (_parse_train_args, _initialize, _build_config_dict, monitor):
        patched.__wrapped__ = getattr(Runner, patched.__name__)
        setattr(Runner, patched.__name__, patched)


WEBUI_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "llamafactory.webui.common": _patch_webui_common,
    "llamafactory.webui.components.train": _patch_webui_train,
    "llamafactory.webui.control": _patch_webui_control,
    "llamafactory.webui.runner": _patch_webui_runner,
}


@cache
def host_supported() -> bool:
    r"""Whether the installed LLaMA-Factory is a version this plugin was built for; says why not, once."""
    from llamafactory.extras.env import VERSION

    if VERSION in SUPPORTED_VERSIONS or os.getenv(FORCE_ENV, "0") == "1":
        return True

    print(
        f"[llamafactory-fea] this plugin supports llamafactory {', '.join(SUPPORTED_VERSIONS)} but found {VERSION}: "
        f"the plugin is switched off. Install llamafactory=={SUPPORTED_VERSIONS[-1]}, or set {FORCE_ENV}=1 to try anyway.",
        file=sys.stderr,
    )
    return False


def on_import(module: ModuleType) -> None:
    r"""Patch a hooked LLaMA-Factory module right after it has been imported."""
    if not host_supported():
        return

    if module.__name__ == "llamafactory.train.tuner":
        _patch_tuner(module)
    elif module.__name__ == "llamafactory.extras.constants":
        _patch_constants(module)
    elif module.__name__ in WEBUI_PATCHES:
        WEBUI_PATCHES[module.__name__](module)
