r"""What a plugin stage or extension is, their registries, and how their YAML keys are told from LLaMA-Factory's.

Each stage declares itself in its package's `__init__` (`train/grpo`, `train/synth`): its name, its LLaMA Board
name, and its runner and arguments dataclass as dotted paths, so a declaration imports nothing heavy. A dataclass's
fields are its YAML keys. `seam.py` wires the declarations into LLaMA-Factory.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Any

from ..registry import Registry, import_object


HOST_STAGE = "sft"  # plugin stages are parsed as the sft stage and borrow its argument checks and callbacks
STOCK_STAGES = ("pt", "sft", "rm", "ppo", "dpo", "kto")


@dataclass(frozen=True)
class PluginStage:
    r"""A training stage the plugin adds to `llamafactory-cli train` and LLaMA Board."""

    name: str
    board_name: str
    runner: str
    arguments: str
    pairwise: bool = False  # trains on ranking (chosen/rejected) datasets: LLaMA Board lists those for it

    def load_runner(self) -> Callable[..., None]:
        r"""Import the stage's `run_<stage>` function."""
        return import_object(self.runner, "stage runner")

    def load_arguments(self) -> type:
        r"""Import the dataclass of the stage's own YAML keys."""
        return import_object(self.arguments, "arguments dataclass")


@dataclass(frozen=True)
class PluginExtension:
    r"""Plugin YAML keys that every stage, stock or plugin, accepts, and the training callbacks they add."""

    name: str
    arguments: str
    callbacks: str
    run_context: str | None = None

    def load_arguments(self) -> type:
        r"""Import the dataclass of the extension's YAML keys."""
        return import_object(self.arguments, "arguments dataclass")

    def load_callbacks(self) -> Callable[..., list[Any]]:
        r"""Import `f(extension_args, model_args, data_args, training_args, finetuning_args, generating_args)`."""
        return import_object(self.callbacks, "extension callbacks")

    def load_run_context(self) -> Callable[[Any], AbstractContextManager] | None:
        r"""Import `f(extension_args)`, the context the seam holds for the whole run (None: the extension has none)."""
        return import_object(self.run_context, "extension run context") if self.run_context else None


STAGES: Registry[PluginStage] = Registry("stage")
EXTENSIONS: Registry[PluginExtension] = Registry("extension")


def register_stage(stage: PluginStage) -> PluginStage:
    r"""Register a plugin stage; a name already used by LLaMA-Factory or another plugin stage is refused."""
    if stage.name in STOCK_STAGES:
        raise ValueError(f"Stage {stage.name} already exists.")

    return STAGES.register(stage.name, stage)


def register_extension(extension: PluginExtension) -> PluginExtension:
    r"""Register a plugin extension; duplicates are refused."""
    return EXTENSIONS.register(extension.name, extension)


def _key_names(arguments_cls: type) -> set[str]:
    r"""The YAML keys of an arguments dataclass."""
    return {f.name for f in fields(arguments_cls)}


def _parse_keys(arguments_cls: type, args: dict[str, Any] | list[str]) -> tuple[Any, dict[str, Any] | list[str]]:
    r"""Parse the keys of a dataclass out of YAML/dict or command-line arguments; return it and the other arguments."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(arguments_cls)
    if isinstance(args, dict):
        names = _key_names(arguments_cls)
        (parsed,) = parser.parse_dict({k: v for k, v in args.items() if k in names})
        return parsed, {k: v for k, v in args.items() if k not in names}

    parsed, rest = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    return parsed, rest


def requested_stage(args: dict[str, Any] | list[str]) -> str | None:
    r"""Return the `stage` value of YAML/dict or command-line arguments."""
    if isinstance(args, dict):
        return args.get("stage")

    for i, arg in enumerate(args):
        if arg == "--stage" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--stage="):
            return arg.split("=", 1)[1]

    return None


def split_plugin_args(stage: PluginStage, args: dict[str, Any] | list[str]) -> tuple[Any, dict[str, Any] | list[str]]:
    r"""Parse a plugin stage's own keys into its dataclass; return it and the rest for LLaMA-Factory's parser."""
    plugin_args, rest = _parse_keys(stage.load_arguments(), args)
    if isinstance(rest, dict):
        return plugin_args, {**rest, "stage": HOST_STAGE}

    rest = [HOST_STAGE if i > 0 and rest[i - 1] == "--stage" else arg for i, arg in enumerate(rest)]
    rest = [f"--stage={HOST_STAGE}" if arg.startswith("--stage=") else arg for arg in rest]
    return plugin_args, rest


def _sets_any(names: set[str], args: dict[str, Any] | list[str]) -> bool:
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
        if _sets_any(_key_names(arguments_cls), args):
            extension_args, args = _parse_keys(arguments_cls, args)
            used.append((extension, extension_args))

    return used, args


def check_keys(stage: PluginStage, args: dict[str, Any] | list[str], host_arguments: tuple[type, ...]) -> None:
    r"""Refuse YAML keys that neither LLaMA-Factory (`host_arguments`) nor the plugin knows, naming the closest key."""
    from difflib import get_close_matches

    from llamafactory.extras.misc import is_env_enabled

    if not isinstance(args, dict) or is_env_enabled("ALLOW_EXTRA_ARGS"):
        return

    plugin_classes = [stage.load_arguments(), *(extension.load_arguments() for extension in EXTENSIONS.values())]
    known = set().union(*(_key_names(cls) for cls in (*host_arguments, *plugin_classes)))
    unknown = sorted(key for key in args if key not in known)
    if unknown:
        hints = [
            f"{key} (did you mean {', '.join(get_close_matches(key, known, n=2)) or 'nothing close'}?)"
            for key in unknown
        ]
        raise ValueError(f"Unknown keys for stage {stage.name}: {'; '.join(hints)}. Fix or remove them in the YAML.")
