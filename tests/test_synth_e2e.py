r"""Synthesis end to end through `llamafactory-cli` / `llamafactory-fea` on the tiny model (CPU, offline).

The random-weight tiny model almost never writes valid tags, so the runs that must keep samples (the dataset is
registered and a following SFT loads it; the loop) use the scripted `tests.test_synth.hint_following_engine`
through `synth_backend`; the kill-and-resume run uses the real HF engine with the tiny model and a LoRA adapter.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from llamafactory_fea.data.files import write_jsonl
from llamafactory_fea.data.records import FEARecord, register_dataset
from llamafactory_fea.train.synth.job import Journal

from .conftest import BIN, EXAMPLES, ROOT, cli_env, run_cli


pytestmark = pytest.mark.e2e

EMOTIONS = ("anger", "sadness", "happiness", "surprise", "fear")
AUS = {"anger": [4, 7, 23], "sadness": [1, 4, 15], "happiness": [6, 12], "surprise": [1, 2, 26], "fear": [1, 2, 4]}
FAST = {"OMP_NUM_THREADS": "1"}  # the CPU is shared: one thread per process is faster than two fighting


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    r"""A random LoRA adapter of the tiny model (base plus adapter is what the synth stage loads)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_model)
    path = tmp_path_factory.mktemp("adapter") / "lora"
    get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])).save_pretrained(path)
    return path


def face_labels(i: int, partial: bool) -> tuple[str | None, list[int] | None]:
    r"""The labels of face i: both, or with `partial` by thirds both, emotion only (no AU label), AUs only."""
    emotion = EMOTIONS[i % len(EMOTIONS)]
    if partial and i % 3 == 1:
        return emotion, None

    if partial and i % 3 == 2:
        return None, AUS[emotion]

    return emotion, AUS[emotion]


def make_labelled_set(folder: Path, count: int, partial: bool = False) -> str:
    r"""`fea_labelled` in `folder`: `count` faces, one corrupt image, one record without labels; `fea_clean`: the faces.

    With `partial`, a third of the faces has an emotion only and a third AUs only (`face_labels`).
    """
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(count):
        emotion, aus = face_labels(i, partial)
        Image.new("RGB", (40 + i, 48), (30 * (i % 8), 120, 200 - 5 * i)).save(folder / "images" / f"{i}.png")
        rows.append(FEARecord(f"face_{i}", f"images/{i}.png", emotion, aus, "seen (AU4)", "demo").to_row())

    write_jsonl(folder / "clean.jsonl", rows)
    register_dataset(folder, "fea_clean", "clean.jsonl")
    (folder / "images" / "corrupt.png").write_bytes(b"\x89PNG broken")
    rows.append(FEARecord("face_corrupt", "images/corrupt.png", "anger", [4], "seen (AU4)", "demo").to_row())
    rows.append(FEARecord("face_unlabelled", "images/0.png", None, None, None, "demo").to_row())
    write_jsonl(folder / "labelled.jsonl", rows)
    register_dataset(folder, "fea_labelled", "labelled.jsonl")
    return "fea_labelled"


def synth_command(model: Path, data: Path, output: Path, *overrides: str) -> list[str]:
    return [
        "llamafactory-cli",
        "train",
        str(EXAMPLES / "fea_synth.yaml"),
        f"model_name_or_path={model}",
        "adapter_name_or_path=null",
        f"dataset_dir={data}",
        "dataset=fea_labelled",
        f"output_dir={output}",
        f"synth_dataset_dir={output / 'registry'}",
        "synth_dataset_name=fea_synth_e2e",
        "max_new_tokens=8",
        "bf16=false",
        "preprocessing_num_workers=1",
        "overwrite_cache=false",
        *overrides,
    ]


def journal_keys(output: Path) -> list[str]:
    return [entry["key"] for path in sorted(output.glob("synth_journal.rank*.jsonl")) for entry in Journal.read(path)]


def test_synth_stage_is_killed_and_resumes_without_loss_or_duplicate(tiny_model: Path, adapter: Path, tmp_path: Path):
    data, output = tmp_path / "data", tmp_path / "out"
    make_labelled_set(data, 30, partial=True)  # the tiny model's prompts carry only the hints each face has
    command = synth_command(
        tiny_model,
        data,
        output,
        f"adapter_name_or_path={adapter}",
        "finetuning_type=lora",
        "synth_batch_size=2",
        "synth_max_retries=1",
    )
    process = subprocess.Popen(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        env=cli_env(**FAST),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    journal = output / "synth_journal.rank0.jsonl"
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= 3:
            os.killpg(process.pid, signal.SIGKILL)  # the group this test started
            break

        time.sleep(0.05)

    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    before = journal_keys(output)
    assert 3 <= len(before) < 32
    assert not (output / "synth_report.json").exists()

    result = run_cli(command, **FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Resuming synthesis" in result.stdout + result.stderr
    keys = journal_keys(output)
    expected = {f"fea_labelled/face_{i}" for i in range(30)} | {
        "fea_labelled/face_corrupt",
        "fea_labelled/face_unlabelled",
    }
    assert sorted(keys) == sorted(expected)  # every sample exactly once
    assert keys[: len(before)] == before  # the first run's lines are kept as they were

    (synthesis_pass,) = json.loads((output / "synth_report.json").read_text())["passes"]
    assert synthesis_pass["complete"]
    assert synthesis_pass["processed"] == 32
    assert synthesis_pass["skipped"] == {"unreadable_image": 1, "no_labels": 1}
    assert synthesis_pass["generated"] == synthesis_pass["kept"] + sum(synthesis_pass["rejected"].values()) == 30
    assert {kind: counts["generated"] for kind, counts in synthesis_pass["labels"].items()} == {
        "both": 10,
        "emotion": 10,
        "aus": 10,
    }
    # max_new_tokens=8: the random model is cut at the limit unless it happens to emit a stop token first
    entries = [entry for path in sorted(output.glob("synth_journal.rank*.jsonl")) for entry in Journal.read(path)]
    assert synthesis_pass["completions"] == sum(entry["attempts"] for entry in entries) >= 30
    assert 0 < synthesis_pass["truncated"] == sum(entry["truncated"] for entry in entries)
    report = (output / "synth_report.md").read_text()
    assert "Synthesis pass 'fea_synth_e2e'" in report
    assert f"truncated: {synthesis_pass['truncated']} of {synthesis_pass['completions']} completions" in report


def test_synthesized_dataset_is_registered_and_loads_in_sft(tiny_model: Path, tmp_path: Path):
    data, output = tmp_path / "data", tmp_path / "out"
    make_labelled_set(data, 10, partial=True)
    command = synth_command(
        tiny_model, data, output, "synth_backend=tests.test_synth.hint_following_engine", "synth_max_retries=1"
    )
    first = run_cli([*command, "synth_stop_after=4"], **FAST)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert len(journal_keys(output)) == 4

    second = run_cli(command, **FAST)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert len(journal_keys(output)) == 12

    registry = output / "registry"
    info = json.loads((registry / "dataset_info.json").read_text())
    assert info["fea_synth_e2e"]["file_name"] == "fea_synth_e2e.jsonl"
    rows = [json.loads(line) for line in (registry / "fea_synth_e2e.jsonl").read_text().splitlines()]
    # the scripted engine never tags a face hinted as surprise; a face without an emotion label is hinted none
    labels = {f"face_{i}": face_labels(i, partial=True) for i in range(10)}
    assert [row["id"] for row in rows] == [key for key, (emotion, _) in labels.items() if emotion != "surprise"]
    assert any(emotion is None for emotion, _ in labels.values())
    assert any(aus is None for _, aus in labels.values())
    for row in rows:
        assert "Hints" not in row["messages"][0]["content"]
        assert row["messages"][0]["content"].startswith("<image>")
        assert Path(row["images"][0]).is_file()
        assert (row["emotion"], row["aus"]) == labels[row["id"]]  # null where the face has no label
        answer = row["emotion"] or "neutral"  # the model's own answer where no emotion is labelled
        assert f"<answer>{answer}</answer>" in row["messages"][1]["content"]
    (synthesis_pass,) = json.loads((output / "synth_report.json").read_text())["passes"]
    assert synthesis_pass["labels"] == {
        "aus": {"generated": 3, "kept": 3},
        "both": {"generated": 4, "kept": 3},
        "emotion": {"generated": 3, "kept": 3},
    }

    sft = run_cli(
        [
            "llamafactory-cli",
            "train",
            str(EXAMPLES / "fea_sft.yaml"),
            f"model_name_or_path={tiny_model}",
            f"dataset_dir={registry}",
            "dataset=fea_synth_e2e",
            f"output_dir={tmp_path / 'sft'}",
            "deepspeed=null",
            "bf16=false",
            "max_steps=1",
            "per_device_train_batch_size=2",
            "gradient_accumulation_steps=1",
            "preprocessing_num_workers=1",
            "dataloader_num_workers=0",
        ],
        **FAST,
    )
    assert sft.returncode == 0, sft.stdout[-3000:] + sft.stderr[-3000:]
    assert "fea_synth_e2e.jsonl" in sft.stdout + sft.stderr
    assert (tmp_path / "sft" / "adapter_model.safetensors").is_file()


def test_synthesis_callback_runs_every_epoch_and_at_the_end_of_sft(tiny_model: Path, tmp_path: Path):
    data, output = tmp_path / "data", tmp_path / "sft"
    make_labelled_set(data, 4)
    result = run_cli(
        [
            "llamafactory-cli",
            "train",
            str(EXAMPLES / "fea_sft.yaml"),
            f"model_name_or_path={tiny_model}",
            f"dataset_dir={data}",
            "dataset=fea_clean",
            f"output_dir={output}",
            "deepspeed=null",
            "bf16=false",
            "num_train_epochs=2",
            "per_device_train_batch_size=2",
            "gradient_accumulation_steps=1",
            "preprocessing_num_workers=1",
            "dataloader_num_workers=0",
            "synth_callback=true",
            "synth_callback_dataset=fea_labelled",
            "synth_callback_every_n_epochs=1",
            "synth_max_retries=1",
            "max_new_tokens=8",
        ],
        **FAST,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passes = json.loads((output / "synthesis" / "synth_report.json").read_text())["passes"]
    assert [p["name"] for p in passes] == ["fea_synth_epoch1", "fea_synth"]  # epoch 2 is the end: one pass
    for synthesis_pass in passes:
        assert synthesis_pass["complete"]
        assert synthesis_pass["processed"] == 6
        assert synthesis_pass["skipped"] == {"unreadable_image": 1, "no_labels": 1}

    assert len(journal_keys(output / "synthesis" / "fea_synth")) == 6


def test_loop_runs_sft_grpo_and_synthesis_rounds(tiny_model: Path, tmp_path: Path):
    data, output = tmp_path / "data", tmp_path / "loop"
    make_labelled_set(data, 6)
    config = tmp_path / "loop.yaml"
    config.write_text(
        f"""
output_dir: {output}
rounds: 2
min_improvement: -1.0
dataset_dir: {data}
seed_dataset: fea_clean
sft: {EXAMPLES / "fea_sft.yaml"}
grpo: {EXAMPLES / "fea_grpo.yaml"}
synth: {EXAMPLES / "fea_synth.yaml"}
common_args: {{model_name_or_path: {tiny_model}, bf16: false, preprocessing_num_workers: 1, dataloader_num_workers: 0}}
sft_args: {{deepspeed: null, max_steps: 1, per_device_train_batch_size: 2, gradient_accumulation_steps: 1}}
grpo_args: {{max_steps: 1, num_generations: 2, per_device_train_batch_size: 2, gradient_accumulation_steps: 1,
            max_completion_length: 8}}
synth_args: {{dataset: fea_labelled, max_new_tokens: 8, synth_max_retries: 1,
             synth_backend: tests.test_synth.hint_following_engine}}
"""
    )
    result = run_cli(["llamafactory-fea", "loop", str(config)], **FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((output / "loop_report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert [r["synth_dataset"] for r in report["rounds"]] == ["fea_synth_round1", "fea_synth_round2"]
    assert all(r["acceptance_rate"] == pytest.approx(5 / 6) for r in report["rounds"])  # 1 of 6 is surprise
    assert report["rounds"][1]["sft_datasets"] == ["fea_clean", "fea_synth_round1"]
    assert report["rounds"][1]["model"]["adapter_name_or_path"] == f"{output}/round_2/sft,{output}/round_2/grpo"
    for step in ("sft", "grpo", "synth"):
        assert (output / "round_2" / f"{step}.yaml").is_file()

    assert "fea_synth_round1.jsonl" in (output / "round_2" / "sft.log").read_text()
    registry = json.loads((output / "data" / "dataset_info.json").read_text())
    assert registry["fea_synth_round2"]["file_name"] == "../round_2/synth/fea_synth_round2.jsonl"
    assert not (data / "fea_synth_round1.jsonl").exists()  # the user's registry is not written

    again = run_cli(["llamafactory-fea", "loop", str(config)], **FAST)  # a finished loop: every step is skipped
    assert again.returncode == 0
    assert again.stdout.count("done before, skipped") == 6


def test_torchrun_ranks_take_their_shards_and_rank0_merges_in_source_order(tiny_model: Path, tmp_path: Path):
    data, output = tmp_path / "data", tmp_path / "out"
    make_labelled_set(data, 10)
    command = synth_command(
        tiny_model,
        data,
        output,
        "synth_backend=tests.test_synth.hint_following_engine",
        "synth_max_retries=1",
        "synth_keep_rule=reference",  # same kept set: the untagged surprise answers fail its emotion check too
        "synth_retry_feedback=history",
    )
    result = run_cli(command, FORCE_TORCHRUN="1", NPROC_PER_NODE="2", PATH=f"{BIN}:{os.environ['PATH']}", **FAST)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    order = [f"fea_labelled/face_{i}" for i in range(10)] + [
        "fea_labelled/face_corrupt",
        "fea_labelled/face_unlabelled",
    ]
    for rank in (0, 1):
        entries = Journal.read(output / f"synth_journal.rank{rank}.jsonl")
        assert sorted(entry["key"] for entry in entries) == sorted(order[rank::2])

    rows = [json.loads(line) for line in (output / "registry" / "fea_synth_e2e.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"face_{i}" for i in range(10) if EMOTIONS[i % 5] != "surprise"]
