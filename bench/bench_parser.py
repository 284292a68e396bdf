r"""Parser and reward cost on adversarial, tag-heavy text (milliseconds per call, by input size).

    .venv/bin/python bench/bench_parser.py [--sizes 64K,256K,1M] [--limit 5] [--repeat 3] [--only fea_format,...]

Times every registered reward (one completion, labelled `sadness` and AUs 4 and 15), `parse_completion`,
`clean_answer` and `label_aus` on text of each shape below, at each size. A call that runs past `--limit` seconds
is interrupted and shown as `>limit`, and that subject skips the larger sizes of that shape. The goal (issue 11):
every reward under 100 ms on 1 MB. No assertion: the figures are for the reader.
"""

import argparse
import signal
import time
from collections.abc import Callable


# each shape: a unit repeated to the size, between an optional head and tail
SHAPES: dict[str, tuple[str, str, str]] = {
    "<think> run": ("", "<think>", ""),
    "<THINK> run": ("", "<THINK>", ""),
    "<answer> run": ("", "<answer>", ""),
    "</answer> run": ("", "</answer>", ""),
    "<think><answer> run": ("", "<think><answer>", ""),
    "</think> <answer> run": ("<think>", "</think> <answer>", ""),
    "closed blocks": ("", "<think>x</think><answer>y</answer>", ""),
    "AU mentions": ("<think>", "brows (AU4) ", "</think><answer>sadness</answer>"),
    "lines": ("<answer>", "sad\n \r\n\n", "</answer>"),
    "spaces": ("<think>(AU4)</think>", " ", ""),
}


def make_text(shape: str, size: int) -> str:
    head, unit, tail = SHAPES[shape]
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


def subjects() -> dict[str, Callable[[str], object]]:
    from llamafactory_fea.fea.labels import clean_answer, label_aus
    from llamafactory_fea.fea.parsing import parse_completion
    from llamafactory_fea.rewards import REWARDS

    def reward(func: Callable) -> Callable[[str], object]:
        return lambda text: func([text], emotion=["sadness"], aus=[[4, 15]])

    return {
        **{name: reward(func) for name, func in REWARDS.items()},
        "parse_completion": parse_completion,
        "clean_answer": clean_answer,
        "label_aus": label_aus,
    }


def _interrupt(signum, frame) -> None:
    raise TimeoutError


def timed(call: Callable[[str], object], text: str, limit: float, repeat: int) -> float | None:
    r"""Best wall time of `repeat` calls in seconds; None when a call runs past `limit` (the regex engine is interrupted)."""
    best = None
    for _ in range(repeat):
        signal.setitimer(signal.ITIMER_REAL, limit)
        start = time.perf_counter()
        try:
            call(text)
        except TimeoutError:
            return None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
        if elapsed > 1:
            break

    return best


def parse_size(value: str) -> int:
    units = {"K": 1024, "M": 1024 * 1024}
    return int(value[:-1]) * units[value[-1].upper()] if value[-1].upper() in units else int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64K,256K,1M")
    parser.add_argument("--limit", type=float, default=5.0, help="seconds before a call is interrupted")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated subjects (default: all)")
    args = parser.parse_args()

    sizes = [parse_size(size) for size in args.sizes.split(",")]
    signal.signal(signal.SIGALRM, _interrupt)
    chosen = {name: call for name, call in subjects().items() if not args.only or name in args.only.split(",")}
    header = f"{'subject':<22}{'shape':<24}" + "".join(f"{label:>12}" for label in args.sizes.split(","))
    print(header)
    print("-" * len(header))
    worst: dict[str, float | None] = {}
    for name, call in chosen.items():
        for shape in SHAPES:
            cells, over = [], False
            for size in sizes:
                seconds = None if over else timed(call, make_text(shape, size), args.limit, args.repeat)
                over = seconds is None
                cells.append(f">{args.limit:g}s" if over else f"{seconds * 1000:.1f}")
                if size == sizes[-1]:
                    worst[name] = None if over or worst.get(name, 0) is None else max(worst.get(name, 0), seconds)

            print(f"{name:<22}{shape:<24}" + "".join(f"{cell:>12}" for cell in cells), flush=True)

    print(f"\nworst case per subject at {args.sizes.split(',')[-1]} (ms; goal: every reward under 100 ms on 1M):")
    for name, seconds in worst.items():
        print(f"  {name:<22}{'>' + format(args.limit, 'g') + 's' if seconds is None else f'{seconds * 1000:.1f}':>10}")


if __name__ == "__main__":
    main()
