r"""Interpreter start-up cost of the plugin's `.pth` hook: `python -c pass` and `import llamafactory.train.tuner`.

    .venv/bin/python bench/bench_startup.py [--runs 20]

Prints the median wall time of each with the plugin on and switched off (LLAMAFACTORY_FEA_DISABLE=1; the hook stays
then, to name plugin stages and keys), and the self times of `llamafactory_fea._bootstrap` (every start) and
`llamafactory_fea.seam` (imported by the hook on the first `llamafactory.*` import, on or off) from
`python -X importtime`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time


def _median_seconds(code: str, runs: int, **env: str) -> float:
    r"""Median wall time of a fresh interpreter running `code`."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True, capture_output=True)
        times.append(time.perf_counter() - start)

    return statistics.median(times)


def _import_self_us(code: str, module: str, runs: int) -> float:
    r"""Median self time in microseconds of importing `module` while running `code`, as `-X importtime` reports it."""
    times = []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
        for line in result.stderr.splitlines():
            if line.rstrip().endswith(f" {module}"):
                times.append(int(line.split("|")[0].split(":")[1]))

    return statistics.median(times) if times else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for label, code, runs in (
        ("python -c pass", "pass", args.runs),
        ("import tuner", "import llamafactory.train.tuner", 3),
    ):
        on = _median_seconds(code, runs, LLAMAFACTORY_FEA_DISABLE="0")
        off = _median_seconds(code, runs, LLAMAFACTORY_FEA_DISABLE="1")
        print(
            f"{label:<16} plugin on {on * 1000:8.1f} ms   off {off * 1000:8.1f} ms   cost {(on - off) * 1000:+7.1f} ms"
        )

    bootstrap_us = _import_self_us("pass", "llamafactory_fea._bootstrap", args.runs)
    print(f"bootstrap import self time (median of {args.runs}): {bootstrap_us:.0f} us")
    seam_us = _import_self_us("import llamafactory.extras.env", "llamafactory_fea.seam", 3)
    print(f"seam import self time, on the first llamafactory.* import (median of 3): {seam_us:.0f} us")


if __name__ == "__main__":
    main()
