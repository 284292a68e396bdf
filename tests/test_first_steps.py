r"""A LLaMA-Factory user's first steps: FEA data registered into their own dataset_info.json, the shipped folders."""

import argparse
import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from llamafactory_fea.cli import build_parser
from llamafactory_fea.data.files import RecordError
from llamafactory_fea.data.register import register_datasets
from llamafactory_fea.resources import data_registry_dir, examples_dir

from .conftest import DATA_REGISTRY, EXAMPLES, ROOT, cli_env, run_cli
from .test_demo_data import assert_trainable, load_sft_dataset


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    r"""A user's own dataset folder: one sharegpt row with its image relative to the folder, registered as my_data."""
    folder = tmp_path / "my_data"
    (folder / "pics").mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 160, 130)).save(folder / "pics" / "me.png")
    row = {
        "messages": [
            {"role": "user", "content": "<image>How does this face feel?"},
            {"role": "assistant", "content": "<answer>neutral</answer>"},
        ],
        "images": ["pics/me.png"],
    }
    (folder / "mine.json").write_text(json.dumps([row]))
    entry = {
        "file_name": "mine.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    }
    (folder / "dataset_info.json").write_text(json.dumps({"my_data": entry}))
    return folder


def test_shipped_folders_are_the_checkouts() -> None:
    assert data_registry_dir() == DATA_REGISTRY
    assert examples_dir() == EXAMPLES


def test_registered_fea_data_mixes_with_the_users_own(
    user_dir: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_cli(["llamafactory-fea", "data", "register", "--into", str(user_dir), "--dataset", "fea_demo"])
    assert result.returncode == 0, result.stdout
    assert "Registered fea_demo" in result.stdout
    info = json.loads((user_dir / "dataset_info.json").read_text())
    assert set(info) == {"my_data", "fea_demo"}
    assert info["fea_demo"]["file_name"] == "fea/fea_demo.jsonl"
    monkeypatch.chdir(tmp_path)  # neither the FEA registry nor the user's folder: every path resolves by itself
    train, tokenizer = load_sft_dataset(tiny_model, user_dir, "my_data,fea_demo", tmp_path / "out")
    assert len(train) == 1 + 22
    assert_trainable(train, tokenizer)


def test_register_refuses_a_different_entry_unless_forced(user_dir: Path) -> None:
    assert register_datasets(user_dir) == ["fea_demo", "fea_demo_test"]  # every FEA dataset whose file is present
    before = (user_dir / "dataset_info.json").read_text()
    assert register_datasets(user_dir, ["fea_demo"]) == ["fea_demo"]  # the same entry again: nothing changes
    assert (user_dir / "dataset_info.json").read_text() == before
    info = json.loads(before)
    info["fea_demo"]["file_name"] = "elsewhere.jsonl"
    (user_dir / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(RecordError, match="already has a different entry 'fea_demo'.*--force"):
        register_datasets(user_dir, ["fea_demo", "fea_demo_test"])

    assert json.loads((user_dir / "dataset_info.json").read_text())["fea_demo"]["file_name"] == "elsewhere.jsonl"
    register_datasets(user_dir, ["fea_demo"], force=True)
    assert json.loads((user_dir / "dataset_info.json").read_text())["fea_demo"]["file_name"] == "fea/fea_demo.jsonl"


def test_register_of_an_unconverted_dataset_names_the_convert_command(user_dir: Path) -> None:
    result = run_cli(["llamafactory-fea", "data", "register", "--into", str(user_dir), "--dataset", "fea20k_train"])
    assert result.returncode == 1
    assert "file not found: run `llamafactory-fea data convert fea20k" in result.stdout
    assert not (user_dir / "fea").exists()


@pytest.mark.e2e
def test_wheel_carries_the_demo_data_and_the_examples_and_the_demo_learns(tmp_path: Path) -> None:
    r"""`pip install .` as a user does it: the wheel in a fresh venv (this venv's packages beside it), run elsewhere."""
    python = Path(sys.executable)
    build = [str(python), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp_path)]
    subprocess.run(build, check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next(venv.glob("lib/python*/site-packages"))
    (site_packages / "host.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n")  # torch, llamafactory, ...
    wheel = next(tmp_path.glob("llamafactory_fea-*.whl"))
    install = [str(python), "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=elsewhere, env=cli_env(), capture_output=True, text=True, timeout=timeout)

    found = run(str(venv / "bin" / "python"), "-c", FOLDERS)
    assert found.returncode == 0, found.stderr
    registry, examples = map(Path, found.stdout.split())
    assert registry == site_packages / "llamafactory_fea" / "data_registry"
    assert (examples / "fea_grpo.yaml").is_file()
    board = run(str(venv / "bin" / "llamafactory-fea"), "webui", "--help")
    assert board.returncode == 0, board.stderr
    checked = run(str(venv / "bin" / "llamafactory-fea"), "data", "validate", "--dataset-dir", str(registry),
                  "--dataset", "fea_demo", "--dataset", "fea_demo_test")  # fmt: skip
    assert checked.returncode == 0, checked.stdout
    assert_the_demo_learns(
        run(str(venv / "bin" / "llamafactory-fea"), "demo", timeout=1800), elsewhere / "outputs/demo"
    )


def assert_the_demo_learns(demo: subprocess.CompletedProcess, output_dir: Path) -> None:
    r"""What the issue asks of the demo, read back from the logs its runs wrote (not from what it printed)."""
    from llamafactory_fea.demo.figures import CURVES, DemoFigures

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    figures = DemoFigures.read(output_dir / "sft", output_dir / "grpo", output_dir / "synth")
    assert figures.sft_loss[-1][1] < figures.sft_loss[0][1] / 10
    rates = [rate for _, rate in figures.format_rate]
    assert len(rates) == 6  # a checkpoint every 10 epochs, sampled at temperature 1
    assert rates[-1] > rates[0] + 0.3, rates
    assert sorted(figures.rewards) == ["fea_au_f1", "fea_emotion", "fea_format", "total"]
    assert all(len(series) == 6 for series in figures.rewards.values())
    (synthesis_pass,) = figures.passes
    assert synthesis_pass.kept > 0, synthesis_pass
    for line in figures.summary():  # the printed summary is the logs' figures
        assert line in demo.stdout

    assert (output_dir / CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


FOLDERS = "from llamafactory_fea.resources import data_registry_dir, examples_dir; print(data_registry_dir(), examples_dir())"


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    r"""Every subcommand's parser by its words (`("data", "convert", "fea20k")`)."""
    commands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not commands:
        return {path: parser}

    return {
        leaf: found
        for name, child in commands[0].choices.items()
        for leaf, found in _leaf_parsers(child, (*path, name)).items()
    }


def test_help_lists_every_subcommand_and_shows_defaults() -> None:
    parser = build_parser()
    leaves = _leaf_parsers(parser)
    top = parser.format_help()
    for words in leaves:
        assert " ".join(words[:2]) in top, words  # `data convert` stands for its converters

    for words, leaf in leaves.items():
        options = [action for action in leaf._actions if action.option_strings and action.dest != "help"]
        assert all(action.help for action in options), words
        assert leaf.format_help().count("(default:") >= len(options), words


def test_stock_sft_on_a_registered_unconverted_fea_dataset_names_the_convert_command(tiny_model: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    registry.mkdir()
    info = json.loads((DATA_REGISTRY / "dataset_info.json").read_text())
    (registry / "dataset_info.json").write_text(json.dumps({"fea20k_train": info["fea20k_train"]}))
    with pytest.raises(
        ValueError, match=r"train.jsonl not found\. It is an FEA dataset .* `llamafactory-fea data convert fea20k"
    ):
        load_sft_dataset(tiny_model, registry, "fea20k_train", tmp_path / "out")

    (registry / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine/train.jsonl"}}))
    with pytest.raises(ValueError, match=r"^File .*mine/train.jsonl not found\.$"):  # not ours: the stock error
        load_sft_dataset(tiny_model, registry, "mine", tmp_path / "out")
