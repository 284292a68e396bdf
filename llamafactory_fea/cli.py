r"""The `llamafactory-fea` command: the demo, LLaMA Board, FEA data, tiny models, evaluation, the loop.

commands:
  demo              every Facial-R1 stage on the demo data with a tiny offline model (no download)
  webui             LLaMA Board with the GRPO and synthesis stages, the FEA datasets as data dir
  data convert      a benchmark (RAF-DB, AffectNet, FEA-20K, ...) into registered LLaMA-Factory data
  data validate     registered FEA datasets checked row by row
  data register     FEA datasets copied into your own dataset_info.json
  data pairs        preference pairs (response / instruction / image edits) for stage empo and stock dpo
  data misleading   a labelled test set with a false claim in each question (eval --misleading)
  data make-demo    the embedded demo set drawn again
  make-tiny-model   a tiny random-weight Qwen-VL model to smoke-test a YAML
  eval              the paper's metrics from generated_predictions.jsonl
  plan              every stage's resolved settings of a training or loop YAML, no model loaded
  loop              the rounds (SFT, GRPO, synthesis) of a loop YAML
Training itself is `llamafactory-cli train examples/fea_*.yaml` (see examples/README.md).
"""

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    r"""Help with each option's default, descriptions as written."""


class OneLineParser(argparse.ArgumentParser):
    r"""An argument parser whose errors are one line naming the option and what it accepts, with exit code 1."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        r"""Print `<command>: error: <message>` (no usage block) and exit 1, as every other bad input does."""
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


class VersionAction(argparse.Action):
    r"""`--version`: this plugin's version and the installed LLaMA-Factory's, and whether the plugin was tested on it."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs = {"default": argparse.SUPPRESS, "help": "Print ours and LLaMA-Factory's version, and exit."}
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from . import __version__, seam

        try:
            version = seam.host_version()
        except ImportError as err:
            parser.exit(1, f"llamafactory-fea {__version__}\nllamafactory: not importable ({err})\n")

        if version in seam.TESTED_VERSIONS:
            verdict = f"tested: {seam.TESTED_VERSIONS[version]}"
        else:
            verdict = f"not tested (tested: {seam.tested_versions()}); the plugin is off unless {seam.FORCE_ENV}=1"

        print(f"llamafactory-fea {__version__}\nllamafactory {version}, {verdict}")
        parser.exit()


def _make_tiny_model(args: argparse.Namespace) -> int:
    from .demo.tiny_model import make_tiny_model

    path = make_tiny_model(args.output_dir, arch=args.arch, seed=args.seed)
    print(f"Tiny {args.arch} model written to {path}")
    return 0


def _webui(args: argparse.Namespace) -> int:
    from .webui import launch_board

    return launch_board(args.data_dir, args.host, args.port, args.share)


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    if args.sft_epochs < 1:
        raise SystemExit(f"llamafactory-fea demo: --sft-epochs must be at least 1, got {args.sft_epochs}.")

    return run_demo(args.output_dir, args.sft_epochs)


def _convert(args: argparse.Namespace) -> int:
    from .data.converters import CONVERTERS
    from .data.files import RecordError

    try:
        report = CONVERTERS[args.source].run(args)
    except (RecordError, OSError) as error:  # an unusable input, registry or output folder; nothing was written
        print(f"error: {error}")
        return 1

    print(report.summary())
    return 0 if report.written else 1


def _eval(args: argparse.Namespace) -> int:
    from .eval.runner import run_eval

    return run_eval(args)


def _make_demo(args: argparse.Namespace) -> int:
    from .demo.data import make_demo

    for name, path in make_demo(args.output_dir).items():
        print(f"Demo dataset {name} written to {path}")

    return 0


def _validate(args: argparse.Namespace) -> int:
    from .data.validate import run

    return run(args)


def _register(args: argparse.Namespace) -> int:
    from .data.register import run

    return run(args)


def _pairs(args: argparse.Namespace) -> int:
    from .data.pairs import run

    return run(args)


def _misleading(args: argparse.Namespace) -> int:
    from .eval.hallucination import run

    return run(args)


def _loop(args: argparse.Namespace) -> int:
    from .loop import run_loop

    return run_loop(args.config, args.overrides)


def _plan(args: argparse.Namespace) -> int:
    from .plan import run_plan

    return run_plan(args.config, args.overrides, args.processes)


def build_parser() -> argparse.ArgumentParser:
    r"""The command-line parser with every subcommand."""
    from .data.converters import CONVERTERS
    from .data.pairs import add_arguments as add_pairs_arguments
    from .data.register import add_arguments as add_register_arguments
    from .data.validate import add_arguments as add_validate_arguments
    from .demo.tiny_model import ARCHITECTURES
    from .eval.hallucination import add_arguments as add_misleading_arguments
    from .eval.runner import add_eval_arguments

    parser = OneLineParser(prog="llamafactory-fea", description=__doc__)
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("make-tiny-model", help="Write a tiny random-weight Qwen-VL model (offline).")
    tiny.add_argument("output_dir", help="Folder to write the model, tokenizer and processor to.")
    tiny.add_argument("--arch", choices=ARCHITECTURES, default="qwen2_vl", help="Model architecture.")
    tiny.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
    tiny.set_defaults(func=_make_tiny_model)

    board = commands.add_parser("webui", help="Launch LLaMA Board with the FEA datasets (data_registry) as data dir.")
    board.add_argument(
        "--data-dir", default=None, help="The board's default data dir; None: the plugin's data_registry."
    )
    board.add_argument("--host", default=None, help="Address to listen on; None: GRADIO_SERVER_NAME, else 0.0.0.0.")
    board.add_argument(
        "--port", type=int, default=None, help="Port to listen on; None: GRADIO_SERVER_PORT, else 7860."
    )
    board.add_argument(
        "--share", action="store_true", help="Also open a public gradio share link (as GRADIO_SHARE=1)."
    )
    board.set_defaults(func=_webui)

    demo = commands.add_parser("demo", help="Run every Facial-R1 stage on the demo data with a tiny offline model.")
    demo.add_argument("--output-dir", default="outputs/demo", help="Folder for every stage's outputs.")
    demo.add_argument(
        "--sft-epochs",
        type=int,
        default=60,
        help="Epochs of stage 1 (a checkpoint every 10 is sampled); 60 teach the tiny model the format.",
    )
    demo.set_defaults(func=_demo)

    data = commands.add_parser("data", help="Convert, validate and register FEA datasets.").add_subparsers(
        dest="action", required=True
    )
    convert = data.add_parser("convert", help="Convert a source dataset into registered LLaMA-Factory data.")
    sources = convert.add_subparsers(dest="source", required=True)
    for converter in CONVERTERS.values():
        converter.add_arguments(sources.add_parser(converter.name, help=converter.help))

    convert.set_defaults(func=_convert)
    make_demo = data.add_parser("make-demo", help="Draw the embedded demo set (fea_demo, fea_demo_test); register it.")
    make_demo.add_argument("--output-dir", default="data_registry", help="Dataset folder (with dataset_info.json).")
    make_demo.set_defaults(func=_make_demo)
    validate = data.add_parser("validate", help="Check registered FEA datasets row by row; exit 1 on any problem.")
    add_validate_arguments(validate)
    validate.set_defaults(func=_validate)
    register = data.add_parser(
        "register", help="Copy FEA datasets into your own dataset_info.json (images by absolute path)."
    )
    add_register_arguments(register)
    register.set_defaults(func=_register)
    pairs = data.add_parser(
        "pairs", help="Entity-edited preference pairs (EMPO) from a labelled dataset; register them."
    )
    add_pairs_arguments(pairs)
    pairs.set_defaults(func=_pairs)
    misleading = data.add_parser(
        "misleading", help="A test set whose questions assert a false emotion or AU (eval --misleading); register it."
    )
    add_misleading_arguments(misleading)
    misleading.set_defaults(func=_misleading)
    evaluate = commands.add_parser("eval", help="Score predictions on a benchmark; write JSON, Markdown, PNG reports.")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=_eval)
    loop = commands.add_parser("loop", help="Run the Facial-R1 rounds (SFT, GRPO, synthesis) from a loop YAML.")
    loop.add_argument("config", help="The loop YAML, e.g. examples/fea_loop.yaml.")
    loop.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys: sft_args.max_steps=10).")
    loop.set_defaults(func=_loop)
    plan = commands.add_parser("plan", help="Print every stage's resolved settings of a training or loop YAML.")
    plan.add_argument("config", help="A training YAML or a loop YAML, e.g. examples/paper/loop_later.yaml.")
    plan.add_argument("overrides", nargs="*", help="key=value overrides, as for llamafactory-cli train or loop.")
    plan.add_argument("--processes", type=int, default=None, help="Processes (GPUs) of the run (NPROC_PER_NODE).")
    plan.set_defaults(func=_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run a `llamafactory-fea` subcommand; a bad input file is one line and exit status 1."""
    from .data.files import RecordError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RecordError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
