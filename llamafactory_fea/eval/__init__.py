r"""Evaluation of FEA predictions: the paper's benchmarks, metrics, the judge, and reports (JSON, Markdown, PNG)."""

from .benchmarks import BENCHMARKS, Benchmark, register_benchmark


__all__ = ["BENCHMARKS", "Benchmark", "register_benchmark"]
