r"""The seam on LLaMA-Factory's main branch (the snapshot in ../shared/vendor); `scripts/test_main.sh` runs the rest."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import ROOT, cli_env


TARBALL = ROOT.parent / "shared" / "vendor" / "llamafactory-main-ff6d4d1.tar.gz"

PROBE = """
import importlib, json
from llamafactory.extras.env import VERSION
from llamafactory_fea import seam
from llamafactory_fea.train.plugin import STAGES, split_plugin_args

missing, unpatched = [], []
for patch in seam.PATCHES:
    target = importlib.import_module(patch.module)
    for part in patch.name.split("."):
        target = getattr(target, part, None)
    if target is None:
        missing.append(f"{patch.module}.{patch.name}")
    elif patch.when == "import" and callable(target) and not hasattr(target, "__wrapped__"):
        unpatched.append(f"{patch.module}.{patch.name}")

from llamafactory.extras.constants import TRAINING_STAGES
import llamafactory

_, rest = split_plugin_args(STAGES["grpo"], {"stage": "grpo", "num_generations": 2, "lora_rank": 8})
print(json.dumps({
    "file": llamafactory.__file__, "version": VERSION, "off": seam.off_reason(), "missing": missing,
    "unpatched": unpatched, "grpo": TRAINING_STAGES.get("GRPO"), "rest": rest, "routes": seam.host_env_routes(),
}))
"""


@pytest.fixture(scope="module")
def main_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r"""LLaMA-Factory main's `src/`, unpacked from the vendored snapshot."""
    if not TARBALL.is_file():
        pytest.skip(f"{TARBALL} (LLaMA-Factory main's snapshot) is absent")

    folder = tmp_path_factory.mktemp("llamafactory_main")
    with tarfile.open(TARBALL) as tar:
        tar.extractall(folder, filter="data")

    return folder / "LLaMA-Factory-ff6d4d1" / "src"


def test_seam_is_on_and_every_row_is_applied_on_llamafactory_main(main_src: Path):
    env = cli_env(PYTHONPATH=str(main_src))
    env.pop("LLAMAFACTORY_FEA_FORCE", None)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["file"].startswith(str(main_src))
    assert probe["version"] == "0.9.6.dev0"
    assert probe["off"] is None
    assert "switched off" not in result.stderr
    assert probe["missing"] == probe["unpatched"] == []
    assert probe["grpo"] == "grpo"
    assert probe["rest"] == {"stage": "sft", "lora_rank": 8}
    assert probe["routes"] == ["USE_MCA", "USE_MEGATRON_BRIDGE"]
