r"""`llamafactory-fea plan`: the resolved settings of every stage of a training or loop YAML, without a model.

    llamafactory-fea plan examples/paper/stage2_grpo_later.yaml --processes 8
    llamafactory-fea plan examples/paper/loop_later.yaml

Each stage's YAML goes through the same parsers as `llamafactory-cli train` (the plugin's argument classes, then
LLaMA-Factory's `get_train_args`), so a key that a run would refuse is refused here. Settings that depend on this
machine are parsed as on a CPU (bf16/fp16 off, DeepSpeed's file checked but not set up) and shown as written.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.files import RecordError, read_yaml


LOOP_KEYS = ("rounds", "seed_dataset")  # a YAML with these is a loop config


@dataclass
class StagePlan:
    r"""One stage's parsed arguments: LLaMA-Factory's five dataclasses and the plugin's."""

    title: str
    config: dict[str, Any]
    stage: str
    model_args: Any
    data_args: Any
    training_args: Any
    finetuning_args: Any
    generating_args: Any
    plugin_args: Any = None
    extension_args: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def is_loop_config(config: dict[str, Any]) -> bool:
    r"""Whether a YAML is a loop config (`llamafactory-fea loop`) rather than a training YAML."""
    return all(key in config for key in LOOP_KEYS)


def parse_stage(config: dict[str, Any], title: str = "stage") -> StagePlan:
    r"""Parse a training YAML (a dict) as `llamafactory-cli train` would, loading no model; ValueError if refused."""
    import torch
    from llamafactory.hparams import get_train_args

    from . import train  # noqa: F401  (the stage and extension declarations)
    from .seam import host_train_arguments
    from .train.plugin import STAGES, check_keys, split_extension_args, split_plugin_args

    args, notes = dict(config), []
    for key in ("bf16", "fp16"):
        if args.get(key) and not torch.cuda.is_available():
            args[key] = False
            notes.append(f"{key}: true is parsed as false on this machine (no GPU); a GPU run uses it.")

    if args.get("deepspeed"):
        if not Path(args["deepspeed"]).is_file():
            raise ValueError(f"{title}: deepspeed config {args['deepspeed']} does not exist.")

        if not os.getenv("FORCE_TORCHRUN") and "LOCAL_RANK" not in os.environ:
            args.pop("deepspeed")  # LLaMA-Factory refuses DeepSpeed outside a launcher

    stage = STAGES.get(config.get("stage"))
    plugin_args = None
    if stage is not None:
        check_keys(stage, args, host_train_arguments())
        plugin_args, args = split_plugin_args(stage, args)

    extensions, args = split_extension_args(args)
    parsed = get_train_args(args)
    if stage is not None:
        parsed[3].stage = stage.name

    return StagePlan(
        title,
        config,
        config.get("stage", "sft"),
        *parsed,
        plugin_args=plugin_args,
        extension_args={extension.name: extension_args for extension, extension_args in extensions},
        notes=notes,
    )


def loop_step_configs(path: "str | Path", overrides: list[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    r"""The step YAMLs of round 1 of a loop config as the loop writes them; then a line on the later rounds."""
    from .hparams import split_arg
    from .loop import Loop, LoopArguments, ModelChain

    args = LoopArguments.from_yaml(path, overrides)
    loop = Loop(args)
    base = loop.step_config(args.sft, args.sft_args, {})
    chain = ModelChain(base["model_name_or_path"], split_arg(base.get("adapter_name_or_path")))
    steps = [("sft", args.sft, args.sft_args, args.seed_dataset)]
    if args.grpo is not None:
        steps.append(("grpo", args.grpo, args.grpo_args, args.grpo_args.get("dataset", args.seed_dataset)))

    for step, yaml_path, extra, dataset in steps:
        output_dir = str(loop.output_dir / "round_1" / step)
        config = loop.step_config(yaml_path, extra, {**chain.keys(), "dataset": dataset, "output_dir": output_dir})
        yield f"round 1: {step} ({yaml_path})", config
        chain = chain.after_training(config, output_dir)

    dataset = args.synth_args.get("dataset") or args.seed_dataset
    output_dir = str(loop.output_dir / "round_1" / "synth")
    yield (
        f"round 1: synth ({args.synth})",
        loop.step_config(args.synth, args.synth_args, {**chain.keys(), "dataset": dataset, "output_dir": output_dir}),
    )
    start = "the base model" if args.sft_init == "base" else "the previous round's last trained model"
    yield f"rounds 2..{args.rounds}: sft starts from {start} on {args.seed_dataset} + the previous synthesis", {}


def _prompt_set(plan: StagePlan) -> str:
    r"""The prompt set a stage renders with."""
    name = getattr(plan.plugin_args, "fea_prompt_set", None)
    extension = plan.extension_args.get("prompt_set")
    name = name or getattr(extension, "fea_prompt_set", None)
    return name or "as stored in the data (generated prompts: concise)"


def describe(plan: StagePlan, processes: int) -> list[tuple[str, Any]]:
    r"""The settings of one parsed stage worth comparing with the paper, as (name, value) rows."""
    m, d, t, f, g, p = (
        plan.model_args,
        plan.data_args,
        plan.training_args,
        plan.finetuning_args,
        plan.generating_args,
        plan.plugin_args,
    )
    datasets = d.eval_dataset if t.do_predict and not t.do_train else d.dataset
    rows: list[tuple[str, Any]] = [
        ("stage", plan.stage),
        ("model", m.model_name_or_path),
        ("adapters", m.adapter_name_or_path),
        ("finetuning", f.finetuning_type),
        ("vision tower", None if plan.stage == "synth" else "frozen" if f.freeze_vision_tower else "trained"),
        ("image_max_pixels", m.image_max_pixels),
        ("deepspeed", plan.config.get("deepspeed")),
        ("precision", "bf16" if plan.config.get("bf16") else "fp16" if plan.config.get("fp16") else "fp32"),
        ("data", f"{', '.join(datasets or [])} (dataset_dir {d.dataset_dir}, max_samples {d.max_samples or 'all'})"),
        ("prompt set", _prompt_set(plan)),
    ]
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * processes
    if plan.stage == "grpo" and p is not None:
        weights = p.reward_weights or [1.0] * len(p.reward_funcs)
        rows += [
            ("rewards", ", ".join(f"{name} x {weight:g}" for name, weight in zip(p.reward_funcs, weights))),
            ("reward clip", p.reward_clip),
            ("AU weighting", p.au_frequency_weighting),
            ("policy loss", _loss(p)),
            ("KL beta", p.beta),
            ("group", f"{p.num_generations} completions per prompt, temperature {p.temperature}"),
            ("completion tokens", p.max_completion_length),
        ]
        prompts = per_step / p.num_generations
        batch = f"{per_step} completions = {prompts:g} prompts x {p.num_generations} per optimizer step"
        if per_step % p.num_generations:
            batch += " (NOT a multiple of num_generations: use more processes or a larger batch)"

        rows.append(("batch", f"{batch} ({processes} processes)"))
    elif plan.stage == "synth" and p is not None:
        rows += [
            ("retries", f"{p.synth_max_retries} ({getattr(p, 'synth_retry_feedback', '')})"),
            ("keep rule", getattr(p, "synth_keep_rule", None)),
            ("decoding", "sampling" if g.do_sample else "greedy"),
            ("new tokens", g.max_new_tokens),
        ]
    else:
        rows += [
            ("loss on the prompt", d.train_on_prompt),
            ("cutoff_len", d.cutoff_len),
            ("batch", f"{per_step} samples per optimizer step ({processes} processes)"),
        ]
        if t.do_predict:
            rows.append(("new tokens", g.max_new_tokens))

    if plan.stage != "synth":
        rows += [
            ("learning rate", t.learning_rate),
            ("epochs", t.num_train_epochs if t.max_steps <= 0 else f"max_steps {t.max_steps}"),
        ]

    return [(name, value) for name, value in rows if value is not None] + [("note", note) for note in plan.notes]


def _loss(grpo_args: Any) -> str:
    r"""The GRPO loss in words."""
    if grpo_args.policy_loss == "trl":
        return f"TRL ({grpo_args.loss_type})"

    spans = [name for name in grpo_args.reward_funcs if name in grpo_args.think_span_rewards]
    where = f"{', '.join(spans)} over <think> tokens, the others over all" if spans else "all terms over all tokens"
    return f"one term per reward ({grpo_args.loss_type}; {where})"


def plan(path: "str | Path", overrides: list[str] | None = None, processes: int | None = None) -> str:
    r"""The plan of a training or loop YAML as text."""
    processes = processes or int(os.getenv("NPROC_PER_NODE", "1") or 1)
    config = read_yaml(path, overrides)
    steps = loop_step_configs(path, overrides) if is_loop_config(config) else [(str(path), config)]
    lines = []
    for title, step in steps:
        lines.append(f"== {title}")
        if not step:
            continue

        for name, value in describe(parse_stage(step, title), processes):
            lines.append(f"  {name:<18} {value}")

    return "\n".join(lines)


def run_plan(path: str, overrides: list[str] | None = None, processes: int | None = None) -> int:
    r"""`llamafactory-fea plan`: print the plan; exit 1 with the one-line reason when a stage would be refused."""
    try:
        text = plan(path, overrides, processes)
    except RecordError as err:  # names its file
        print(f"llamafactory-fea plan: {err}")
        return 1
    except (ValueError, OSError) as err:
        print(f"llamafactory-fea plan: {path}: {err}")
        return 1

    print(text)

    return 0
