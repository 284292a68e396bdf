r"""Everything the plugin patches into LLaMA-Factory, in one place (the seam to read when LLaMA-Factory changes).

`_bootstrap` calls `on_import` when a hooked LLaMA-Factory module has been imported:
- `llamafactory.extras.constants`: the plugin stages join `TRAINING_STAGES` (LLaMA Board's stage list);
- `llamafactory.train.tuner`: `_training_function` (looked up at call time by `run_exp` and by Ray workers)
  runs plugin stages and takes the plugin's YAML keys out before LLaMA-Factory's parser sees them.
"""

import importlib
import os
import sys
from collections.abc import Callable
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


def _import_object(path: str) -> Any:
    r"""Import `package.module.attribute`."""
    module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def split_plugin_args(stage: PluginStage, args: dict[str, Any] | list[str]) -> tuple[Any, dict[str, Any] | list[str]]:
    r"""Parse a plugin stage's own keys into its dataclass; return it and the rest for LLaMA-Factory's parser."""
    from transformers import HfArgumentParser

    arguments_cls = stage.load_arguments()
    parser = HfArgumentParser(arguments_cls)
    if isinstance(args, dict):
        names = {f.name for f in fields(arguments_cls)}
        (plugin_args,) = parser.parse_dict({k: v for k, v in args.items() if k in names})
        rest = {k: v for k, v in args.items() if k not in names}
        return plugin_args, {**rest, "stage": HOST_STAGE}

    plugin_args, rest = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    rest = [HOST_STAGE if i > 0 and rest[i - 1] == "--stage" else arg for i, arg in enumerate(rest)]
    rest = [f"--stage={HOST_STAGE}" if arg.startswith("--stage=") else arg for arg in rest]
    return plugin_args, rest


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


def _run_plugin_stage(
    tuner: ModuleType, original: Callable[[dict[str, Any]], None], stage: PluginStage, config: dict[str, Any]
) -> None:
    r"""Run a plugin stage through LLaMA-Factory's own `_training_function` (argument checks, callbacks, clean-up).

    The stage's arguments are parsed as the host stage's, and the host stage's runner is swapped for the
    plugin's for the duration of the call, so logging, reporting and process-group clean-up stay stock.
    """
    plugin_args, args = split_plugin_args(stage, config.get("args"))
    runner = stage.load_runner()
    host_runner = getattr(tuner, f"run_{HOST_STAGE}")

    def run_stage(model_args, data_args, training_args, finetuning_args, generating_args, callbacks) -> None:
        finetuning_args.stage = stage.name
        runner(model_args, data_args, training_args, finetuning_args, generating_args, plugin_args, callbacks)

    setattr(tuner, f"run_{HOST_STAGE}", run_stage)
    try:
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
            return original(config)

        return _run_plugin_stage(tuner, original, stage, {**config, "args": args})

    _training_function.__wrapped__ = original
    tuner._training_function = _training_function


def _patch_constants(constants: ModuleType) -> None:
    r"""Add the plugin stages to LLaMA Board's stage list."""
    for stage in STAGES.values():
        constants.TRAINING_STAGES.setdefault(stage.board_name, stage.name)


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
