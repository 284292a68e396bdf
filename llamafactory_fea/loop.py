r"""The iterative loop of Facial-R1: round k = SFT on the seed data plus round k-1's synthesis, GRPO, synthesis.

    llamafactory-fea loop examples/fea_loop.yaml [key=value ...]

Each step is an ordinary `llamafactory-cli train <yaml>` run (own process: own GPU memory, torchrun/DeepSpeed as
its YAML says) of a YAML the loop writes to `output_dir/round_<k>/<step>.yaml` from the step's base YAML plus the
loop's keys; the step's output is `output_dir/round_<k>/<step>/`, its log `output_dir/round_<k>/<step>.log`.
Datasets: the loop keeps its own registry `output_dir/data/dataset_info.json` (every entry of `dataset_dir`,
paths made absolute, plus each round's synthesized set `<synth_prefix>_round<k>`), so the user's registry is
never written. The loop stops after `rounds` rounds, or once a round's acceptance rate improves on the previous
round's by no more than `min_improvement`. `output_dir/loop_report.{json,md}` has each round's acceptance (and
evaluation figures with `eval`). Run the same command again after a crash: finished steps are skipped and an
interrupted synthesis resumes from its journal.

EMPO (optional, `empo: examples/fea_empo.yaml`; default null: no EMPO step) runs after GRPO on the round's
model. Its pairs are made by the loop with `llamafactory-fea data pairs` (`data/pairs.py`) from the round's SFT
data (the seed datasets and round k-1's synthesized set, rows with verified reasoning): one pairs set per source,
registered in the loop's registry as `<source>_pairs_round<k>` (files under `output_dir/data/pairs/`, images
edited from `media_dir`). `empo_pairs` sets the `data pairs` options (`kinds`, `pairs_per_row`, `seed`: default
the round number, `instruction_chosen`, `au_names`). `empo_args.dataset` names registered preference datasets to
use instead, in every round; then no pairs are made.
"""

import json
import os
import shlex
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.files import RecordError, atomic_write, read_yaml
from .data.records import DATASET_INFO
from .hparams import split_arg
from .progress import run_job
from .train.synth.report import read_passes


if TYPE_CHECKING:
    from .data.pairs import PairOptions


STATE_FILE = "loop_state.json"
LOOP_REPORT = "loop_report"


@dataclass
class LoopArguments:
    r"""Keys of a loop YAML (examples/fea_loop.yaml); a step's `dataset` is a key of its `*_args` (default: the seed)."""

    output_dir: str
    seed_dataset: str
    synthesis_dataset: str | None = None  # deprecated: `synth_args: {dataset: ...}`
    dataset_dir: str = "data_registry"
    rounds: int = 3
    min_improvement: float = 0.0
    sft: str | None = "examples/fea_sft.yaml"
    grpo: str | None = "examples/fea_grpo.yaml"
    empo: str | None = None
    synth: str = "examples/fea_synth.yaml"
    common_args: dict[str, Any] = field(default_factory=dict)
    sft_args: dict[str, Any] = field(default_factory=dict)
    grpo_args: dict[str, Any] = field(default_factory=dict)
    empo_args: dict[str, Any] = field(default_factory=dict)
    empo_pairs: dict[str, Any] = field(default_factory=dict)
    synth_args: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] | None = None
    sft_init: str = "base"
    synth_prefix: str = "fea_synth"
    launcher: str = "llamafactory-cli"

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("`rounds` must be at least 1.")

        if self.sft is None:
            raise ValueError("`sft` must name the base YAML of the SFT step (e.g. examples/fea_sft.yaml).")

        if self.sft_init not in ("base", "previous"):
            raise ValueError("`sft_init` must be `base` (each round from the base model) or `previous`.")

        if self.eval is not None and not self.eval.get("dataset"):
            raise ValueError("`eval` needs `dataset`: a registered labelled test set, e.g. fea20k_test.")

        if self.empo_pairs:
            self.pair_options(0)  # an unknown or bad option fails before the first step

        if self.synthesis_dataset is not None:
            warnings.warn("loop key `synthesis_dataset` is deprecated: use `synth_args.dataset`.", FutureWarning)
            self.synth_args = {"dataset": self.synthesis_dataset, **self.synth_args}

    def pair_options(self, k: int) -> "PairOptions":
        r"""The `data pairs` options of round k's EMPO pairs (`empo_pairs`; the seed defaults to the round number)."""
        from .data.pairs import PairOptions

        options = {"seed": k, **self.empo_pairs}
        unknown = set(options) - {f.name for f in fields(PairOptions)}
        if unknown:
            raise ValueError(
                f"unknown `empo_pairs` keys {sorted(unknown)}; known: {[f.name for f in fields(PairOptions)]}."
            )

        if "kinds" in options:
            options["kinds"] = tuple(split_arg(options["kinds"]))

        return PairOptions(**options)

    @classmethod
    def from_yaml(cls, path: "str | Path", overrides: list[str] | None = None) -> "LoopArguments":
        r"""Read a loop YAML with `key=value` overrides (OmegaConf dotted keys, as `llamafactory-cli train`)."""
        values = read_yaml(path, overrides)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise RecordError(str(path), None, f"unknown loop keys {sorted(unknown)}; see examples/fea_loop.yaml.")

        return cls(**values)


@dataclass
class ModelChain:
    r"""The model a step starts from: base weights plus LoRA adapters (all but the last merged by LLaMA-Factory)."""

    model_name_or_path: str
    adapters: list[str] = field(default_factory=list)

    def keys(self) -> dict[str, Any]:
        r"""The YAML keys that load this model."""
        return {
            "model_name_or_path": self.model_name_or_path,
            "adapter_name_or_path": ",".join(self.adapters) if self.adapters else None,
        }

    def after_training(self, step_config: dict[str, Any], output_dir: str) -> "ModelChain":
        r"""The model a training step leaves: its LoRA adapter continues the last one (or adds one), or new weights."""
        if step_config.get("finetuning_type", "lora") != "lora":
            return ModelChain(output_dir)

        if step_config.get("create_new_adapter") or not self.adapters:
            return ModelChain(self.model_name_or_path, [*self.adapters, output_dir])

        return ModelChain(self.model_name_or_path, [*self.adapters[:-1], output_dir])


def launcher_command(launcher: str) -> list[str]:
    r"""The launcher's words, its program found on PATH or beside this Python (an unactivated virtual env)."""
    words = shlex.split(launcher)
    beside = Path(sys.executable).parent / words[0]
    program = shutil.which(words[0]) or (str(beside) if beside.is_file() else None)
    if program is None:
        raise FileNotFoundError(f"Launcher {words[0]!r} not found on PATH or in {beside.parent}.")

    return [program, *words[1:]]


def _eval_figures(metrics: dict[str, Any] | None) -> list[str]:
    r"""Headline evaluation figures of a round (format rate, emotion accuracy, AU macro F1), `-` when absent."""
    if metrics is None:
        return ["-", "-", "-"]

    values = (
        metrics.get("format_rate"),
        (metrics.get("emotion") or {}).get("accuracy"),
        (metrics.get("au") or {}).get("macro_f1"),
    )
    return ["-" if value is None else f"{value:.1%}" for value in values]


class Loop:
    r"""Runs the rounds, each step a `llamafactory-cli train` subprocess, and keeps the state and the report."""

    def __init__(self, args: LoopArguments) -> None:
        self.args = args
        self.output_dir = Path(args.output_dir).absolute()
        self.registry = self.output_dir / "data"
        self.state_path = self.output_dir / STATE_FILE
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {"done": []}

    def prepare_registry(self) -> None:
        r"""Copy every dataset entry of `dataset_dir` into the loop's registry with absolute paths (kept: synth sets)."""
        source = Path(self.args.dataset_dir).absolute()
        entries = json.loads((source / DATASET_INFO).read_text(encoding="utf-8"))
        for entry in entries.values():
            for key in ("file_name", "script_url"):
                if key in entry and not entry[key].startswith(("http://", "https://")):
                    entry[key] = str(source / entry[key])

        path = self.registry / DATASET_INFO
        current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        atomic_write(path, json.dumps({**current, **entries}, indent=2, ensure_ascii=False) + "\n")

    def step_config(self, base: str | None, extra: dict[str, Any], forced: dict[str, Any]) -> dict[str, Any]:
        r"""A step's YAML: base YAML < `common_args` < the step's `*_args` < the loop's own keys."""
        config = {**(read_yaml(base) if base else {}), **self.args.common_args, **extra}
        config.setdefault("media_dir", str(Path(self.args.dataset_dir).absolute()))  # the seed images
        return {**config, "dataset_dir": str(self.registry), **forced}

    def run_step(self, round_dir: Path, step: str, config: dict[str, Any]) -> None:
        r"""Write the step's YAML and run `llamafactory-cli train` on it, unless a previous run finished it."""
        from omegaconf import OmegaConf

        name = f"{round_dir.name}/{step}"
        if name in self.state["done"]:
            print(f"[loop] {name}: done before, skipped", flush=True)
            return

        yaml_path, log_path = round_dir / f"{step}.yaml", round_dir / f"{step}.log"
        round_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(yaml_path, OmegaConf.to_yaml(OmegaConf.create(config)))
        print(f"[loop] {name}: {self.args.launcher} train {yaml_path} (log: {log_path})", flush=True)
        command = [*launcher_command(self.args.launcher), "train", str(yaml_path)]
        returncode = run_job(command, log_path, config["output_dir"], f"[loop] {name}")

        if returncode != 0:
            tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:])
            raise RuntimeError(f"[loop] {name} failed (exit {returncode}); last lines of {log_path}:\n{tail}")

        self.state["done"].append(name)
        atomic_write(self.state_path, json.dumps(self.state, indent=2) + "\n")

    def evaluate(self, round_dir: Path, chain: ModelChain) -> dict[str, Any] | None:
        r"""Optional: predict on the eval set with the round's model and score the predictions (`score_predictions`)."""
        if self.args.eval is None:
            return None

        from .eval.runner import score_predictions

        eval_args = dict(self.args.eval)
        dataset, benchmark = eval_args.pop("dataset"), eval_args.pop("benchmark", None)
        base = eval_args.pop("yaml", "examples/fea_predict.yaml")
        predict_dir = round_dir / "predict"
        config = self.step_config(
            base, eval_args, {**chain.keys(), "eval_dataset": dataset, "output_dir": str(predict_dir)}
        )
        self.run_step(round_dir, "predict", config)
        results, _ = score_predictions(
            predict_dir / "generated_predictions.jsonl",
            round_dir / "eval",
            dataset_dir=self.registry,
            dataset=dataset,
            max_samples=config.get("max_samples"),
            benchmark=benchmark,
        )
        return results

    def run_round(self, k: int, chain: ModelChain, previous_synth: str | None) -> tuple[dict[str, Any], ModelChain]:
        r"""SFT (seed + previous synthesis), GRPO (optional), synthesis; return the round's record and final model."""
        round_dir = self.output_dir / f"round_{k}"
        sft_datasets = split_arg(self.args.seed_dataset) + ([previous_synth] if previous_synth else [])
        sft_dir = str(round_dir / "sft")
        sft_config = self.step_config(
            self.args.sft,
            self.args.sft_args,
            {**chain.keys(), "dataset": ",".join(sft_datasets), "output_dir": sft_dir},
        )
        self.run_step(round_dir, "sft", sft_config)
        chain = chain.after_training(sft_config, sft_dir)

        if self.args.grpo is not None:
            grpo_dir = str(round_dir / "grpo")
            grpo_dataset = self.args.grpo_args.get("dataset", self.args.seed_dataset)
            grpo_config = self.step_config(
                self.args.grpo, self.args.grpo_args, {**chain.keys(), "dataset": grpo_dataset, "output_dir": grpo_dir}
            )
            self.run_step(round_dir, "grpo", grpo_config)
            chain = chain.after_training(grpo_config, grpo_dir)

        empo_datasets = None
        if self.args.empo is not None:
            chain, empo_datasets = self.run_empo(round_dir, k, chain, sft_datasets)

        synth_name = f"{self.args.synth_prefix}_round{k}"
        synth_dir = round_dir / "synth"
        synth_file = os.path.relpath(synth_dir / f"{synth_name}.jsonl", self.registry)
        synth_config = self.step_config(
            self.args.synth,
            self.args.synth_args,
            {
                **chain.keys(),
                "dataset": self.args.synth_args.get("dataset") or self.args.seed_dataset,
                "output_dir": str(synth_dir),
                "synth_dataset_dir": str(self.registry),
                "synth_dataset_name": synth_name,
                "synth_dataset_file": synth_file,
            },
        )
        self.run_step(round_dir, "synth", synth_config)
        synthesis = read_passes(synth_dir)[-1]
        record = {
            "round": k,
            "sft_datasets": sft_datasets,
            "empo_datasets": empo_datasets,
            "model": chain.keys(),
            "generated": synthesis.generated,
            "kept": synthesis.kept,
            "acceptance_rate": synthesis.acceptance_rate,
            "rejected": synthesis.rejected,
            "synth_dataset": synth_name if synthesis.registered_in else None,
            "eval": self.evaluate(round_dir, chain),
        }
        return record, chain

    def make_pairs(self, k: int, sources: list[str], media_dir: str) -> list[str]:
        r"""Round k's EMPO pairs: one registered pairs set per source dataset that gives any; their names."""
        from .data.pairs import make_pairs

        names = []
        for source in sources:
            name = f"{source}_pairs_round{k}"
            report = make_pairs(self.registry, source, name, self.args.pair_options(k), media_dir=media_dir)
            print(f"[loop] round_{k}/empo: {name} from {source}: {report.summary()}", flush=True)
            if report.pairs:
                names.append(name)

        if not names:
            raise RuntimeError(
                f"[loop] round_{k}/empo: no pair could be made from {', '.join(sources)} (rows need <think> reasoning "
                "that agrees with their labels); name a preference dataset in `empo_args.dataset`."
            )

        return names

    def run_empo(self, round_dir: Path, k: int, chain: ModelChain, sft_datasets: list[str]) -> tuple[ModelChain, str]:
        r"""The EMPO step on the round's model: pairs from the round's SFT data (or `empo_args.dataset`), then train."""
        empo_dir = str(round_dir / "empo")
        config = self.step_config(self.args.empo, self.args.empo_args, {**chain.keys(), "output_dir": empo_dir})
        dataset = self.args.empo_args.get("dataset")
        if dataset is None and f"{round_dir.name}/empo" in self.state["done"]:  # made before: the registered ones
            registered = json.loads((self.registry / DATASET_INFO).read_text(encoding="utf-8"))
            dataset = ",".join(f"{s}_pairs_round{k}" for s in sft_datasets if f"{s}_pairs_round{k}" in registered)
        elif dataset is None:
            dataset = ",".join(self.make_pairs(k, sft_datasets, config["media_dir"]))

        config["dataset"] = dataset
        self.run_step(round_dir, "empo", config)
        return chain.after_training(config, empo_dir), dataset

    def write_report(self, records: list[dict[str, Any]], stopped: str) -> None:
        r"""`loop_report.json` and a readable `loop_report.md`."""
        report = {"config": asdict(self.args), "rounds": records, "stopped": stopped}
        atomic_write(self.output_dir / f"{LOOP_REPORT}.json", json.dumps(report, indent=2) + "\n")
        lines = [
            "# Facial-R1 loop",
            "",
            "| round | generated | kept | acceptance | synthesized set | format | emotion acc. | AU macro F1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for record in records:
            lines.append(
                f"| {record['round']} | {record['generated']} | {record['kept']} | {record['acceptance_rate']:.1%} "
                f"| {record['synth_dataset'] or '-'} | {' | '.join(_eval_figures(record['eval']))} |"
            )

        lines += ["", f"Stopped: {stopped}."]
        atomic_write(self.output_dir / f"{LOOP_REPORT}.md", "\n".join(lines) + "\n")

    def run(self) -> list[dict[str, Any]]:
        r"""Run the rounds; stop after `rounds` or when acceptance stops improving."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.prepare_registry()
        base = self.step_config(self.args.sft, self.args.sft_args, {})
        base_chain = ModelChain(base["model_name_or_path"], split_arg(base.get("adapter_name_or_path")))
        chain, previous_synth, records, stopped = base_chain, None, [], f"{self.args.rounds} rounds done"
        for k in range(1, self.args.rounds + 1):
            start = base_chain if self.args.sft_init == "base" else chain
            record, chain = self.run_round(k, start, previous_synth)
            records.append(record)
            previous_synth = record["synth_dataset"]
            print(
                f"[loop] round {k}: kept {record['kept']} of {record['generated']} ({record['acceptance_rate']:.1%})"
            )
            self.write_report(records, stopped)
            if k > 1 and record["acceptance_rate"] - records[-2]["acceptance_rate"] <= self.args.min_improvement:
                stopped = f"acceptance stopped improving after round {k}"
                break

        self.write_report(records, stopped)
        print(f"[loop] {stopped}; report: {self.output_dir / LOOP_REPORT}.md", flush=True)
        return records


def run_loop(config_path: str, overrides: list[str] | None = None) -> int:
    r"""Entry point of `llamafactory-fea loop`."""
    Loop(LoopArguments.from_yaml(config_path, overrides)).run()
    return 0


if __name__ == "__main__":
    sys.exit(run_loop(sys.argv[1], sys.argv[2:]))
