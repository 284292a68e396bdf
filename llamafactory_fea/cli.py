r"""The `llamafactory-fea` command: data conversion and validation, tiny models, the demo."""

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    r"""An argument parser whose errors are one line naming the option and what it accepts, with exit code 1."""

    def error(self, message: str) -> NoReturn:
        r"""Print `<command>: error: <message>` (no usage block) and exit 1, as every other bad input does."""
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


def _make_tiny_model(args: argparse.Namespace) -> int:
    from .demo.tiny_model import make_tiny_model

    path = make_tiny_model(args.output_dir, arch=args.arch, seed=args.seed)
    print(f"Tiny {args.arch} model written to {path}")
    return 0


def _webui(args: argparse.Namespace) -> int:
    from .webui import launch_board

    return launch_board(args.data_dir)


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    return run_demo(args.output_dir)


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


def _loop(args: argparse.Namespace) -> int:
    from .loop import run_loop

    return run_loop(args.config, args.overrides)


def build_parser() -> argparse.ArgumentParser:
    r"""The command-line parser with every subcommand."""
    from .data.converters import CONVERTERS
    from .data.validate import add_arguments as add_validate_arguments
    from .demo.tiny_model import ARCHITECTURES
    from .eval.runner import add_eval_arguments

    parser = OneLineParser(prog="llamafactory-fea", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("make-tiny-model", help="Write a tiny random-weight Qwen-VL model (offline).")
    tiny.add_argument("output_dir")
    tiny.add_argument("--arch", choices=ARCHITECTURES, default="qwen2_vl")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_make_tiny_model)

    board = commands.add_parser("webui", help="Launch LLaMA Board with the FEA datasets (data_registry) as data dir.")
    board.add_argument("--data-dir", default=None, help="The board's default data dir (default: data_registry).")
    board.set_defaults(func=_webui)

    demo = commands.add_parser("demo", help="Run every Facial-R1 stage on the demo data with a tiny offline model.")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.set_defaults(func=_demo)

    data = commands.add_parser("data", help="Convert and validate FEA datasets.").add_subparsers(
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
    evaluate = commands.add_parser("eval", help="Score predictions on a benchmark; write JSON, Markdown, PNG reports.")
    add_eval_arguments(evaluate)
    evaluate.set_defaults(func=_eval)
    loop = commands.add_parser("loop", help="Run the Facial-R1 rounds (SFT, GRPO, synthesis) from a loop YAML.")
    loop.add_argument("config", help="The loop YAML, e.g. examples/fea_loop.yaml.")
    loop.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys: sft_args.max_steps=10).")
    loop.set_defaults(func=_loop)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run a `llamafactory-fea` subcommand."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
