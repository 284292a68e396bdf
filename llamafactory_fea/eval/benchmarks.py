r"""The benchmarks of the paper: what each one scores, its AU set and label space, and the paper's numbers."""

from dataclasses import dataclass, field

from ..fea.emotions import BASIC_EMOTIONS, LABEL_SPACES
from ..registry import Registry


@dataclass(frozen=True)
class Benchmark:
    r"""A benchmark: its table, label space, coded AUs and the published numbers (percent; the judge on 1-10)."""

    name: str
    title: str
    label_space: tuple[str, ...] = BASIC_EMOTIONS
    aus: tuple[int, ...] | None = None  # AUs the dataset codes; None: the AUs that occur in the labels
    paper: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> metric -> value


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")

FACIAL_R1, ZERO_SHOT = "Facial-R1 (paper)", "Qwen2.5-VL-7B zero-shot (paper)"
TABLES: dict[str, tuple[str, ...]] = {  # the paper's tables: their columns, in order
    "au": ("disfa", "bp4d", "raf_au", "faba"),
    "emotion": ("fer2013", "affectnet", "rafdb", "faba"),
    "reasoning": ("fea20k",),
}
# the 12 AUs FABA-Instruct's authors (EmoLA) average for the recognition part of REGE
FABA_REGE_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 10, 12, 17, 24, 25, 26, 43)


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    r"""Register a benchmark under its name; duplicates are refused."""
    return BENCHMARKS.register(benchmark.name, benchmark)


def _au(facial_r1: float, zero_shot: float) -> dict[str, dict[str, float]]:
    return {FACIAL_R1: {"au_f1": facial_r1}, ZERO_SHOT: {"au_f1": zero_shot}}


register_benchmark(Benchmark("disfa", "DISFA", aus=(1, 2, 4, 6, 9, 12, 25, 26), paper=_au(73.1, 22.1)))
register_benchmark(Benchmark("bp4d", "BP4D", aus=(1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24), paper=_au(67.4, 16.9)))
register_benchmark(Benchmark("raf_au", "RAF-AU", LABEL_SPACES["raf_au"], paper=_au(70.2, 20.7)))
register_benchmark(
    Benchmark(
        "faba",
        "FABA-Instruct",
        LABEL_SPACES["faba"],
        paper={FACIAL_R1: {"au_f1": 68.3, "accuracy": 67.8}, ZERO_SHOT: {"au_f1": 26.3}},
    )
)
register_benchmark(Benchmark("fer2013", "FER2013", paper={FACIAL_R1: {"accuracy": 69.8}}))
register_benchmark(
    Benchmark("affectnet", "AffectNet", LABEL_SPACES["affectnet"], paper={FACIAL_R1: {"accuracy": 65.2}})
)
register_benchmark(Benchmark("rafdb", "RAF-DB", paper={FACIAL_R1: {"accuracy": 92.1}}))
register_benchmark(Benchmark("fea20k", "FEA-20K", paper={FACIAL_R1: {"rouge_l": 37.3, "judge_score": 6.09}}))
register_benchmark(Benchmark("ferplus", "FERPlus", LABEL_SPACES["ferplus"]))
register_benchmark(Benchmark("demo", "FEA demo set"))
register_benchmark(Benchmark("generic", "Any FEA data", LABEL_SPACES["affectnet"]))


def benchmark_for(dataset: str | None) -> str:
    r"""Guess the benchmark from a registered dataset name (`rafdb_test` -> rafdb, `fea_demo_test` -> demo)."""
    if dataset:
        for name in sorted(BENCHMARKS, key=len, reverse=True):
            if dataset == name or dataset.startswith(f"{name}_"):
                return name

        if dataset.startswith("fea_demo"):
            return "demo"

    return "generic"
