r"""Shared fixtures: a tiny offline Qwen-VL model built once per session, the demo data, CLI runners."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamafactory_fea.demo.run import OFFLINE_ENV


ROOT = Path(__file__).resolve().parents[1]
DATA_REGISTRY = ROOT / "data_registry"
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r"""A tiny random-weight Qwen2-VL folder (model, tokenizer, processor)."""
    from llamafactory_fea.demo.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2_vl", arch="qwen2_vl")


def cli_env(**overrides: str) -> dict[str, str]:
    r"""An environment for CPU, offline subprocess runs of `llamafactory-cli`."""
    return {**os.environ, **OFFLINE_ENV, "DISABLE_VERSION_CHECK": "1", **overrides}


def python_path() -> str:
    r"""The repository first, then the caller's PYTHONPATH (LLaMA-Factory main's src/, a target dir with ray, ...)."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    r"""Run a command of this venv (`llamafactory-cli ...`, `llamafactory-fea ...`) and capture its output."""
    command = [str(BIN / args[0]), *args[1:]]
    return subprocess.run(command, cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout)
