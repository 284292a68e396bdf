r"""The embedded demo set: regenerated it equals what is committed, every row validates, drawings follow labels."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from llamafactory_fea.data.validate import validate_datasets
from llamafactory_fea.demo.data import DEMO_FACES, TEST_FILE, TRAIN_FILE, draw_face, make_demo, reasoning
from llamafactory_fea.fea import parse_completion
from llamafactory_fea.fea.emotions import BASIC_EMOTIONS

from .conftest import DATA_REGISTRY, run_cli


MOUTH = (120, 30, 40)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r"""The demo set generated afresh into a temporary dataset folder."""
    output_dir = tmp_path_factory.mktemp("registry")
    make_demo(output_dir)
    return output_dir


@pytest.mark.parametrize("file_name", [TRAIN_FILE, TEST_FILE])
def test_regenerated_jsonl_equals_committed(regenerated: Path, file_name: str) -> None:
    assert (regenerated / file_name).read_bytes() == (DATA_REGISTRY / file_name).read_bytes()


def test_regenerated_images_equal_committed(regenerated: Path) -> None:
    images = sorted(p.relative_to(regenerated) for p in (regenerated / "demo" / "images").iterdir())
    committed = sorted(p.relative_to(DATA_REGISTRY) for p in (DATA_REGISTRY / "demo" / "images").iterdir())
    assert images == committed
    for relative in images:
        assert np.array_equal(_pixels(regenerated / relative), _pixels(DATA_REGISTRY / relative)), relative


def test_registered_entries_equal_committed(regenerated: Path) -> None:
    fresh = json.loads((regenerated / "dataset_info.json").read_text(encoding="utf-8"))
    committed = json.loads((DATA_REGISTRY / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(fresh) == {"fea_demo", "fea_demo_test"}
    assert {name: committed[name] for name in fresh} == fresh
    assert committed["fea20k_train"]["file_name"] == "fea20k/train.jsonl"
    assert committed["fea20k_test"]["file_name"] == "fea20k/test.jsonl"


def test_committed_demo_validates() -> None:
    reports = validate_datasets(DATA_REGISTRY, ["fea_demo", "fea_demo_test"])
    assert [(r.rows, r.valid, r.problems) for r in reports] == [(22, 22, []), (7, 7, [])]


def test_splits_cover_every_emotion_and_ids_are_unique() -> None:
    train, test = _rows(DATA_REGISTRY / TRAIN_FILE), _rows(DATA_REGISTRY / TEST_FILE)
    assert {row["emotion"] for row in test} == set(BASIC_EMOTIONS)
    assert {row["emotion"] for row in train} == set(BASIC_EMOTIONS)
    ids = [row["id"] for row in train + test]
    assert len(ids) == len(set(ids)) == 29
    astronaut = next(row for row in train if row["id"] == "demo_astronaut")
    assert (astronaut["emotion"], astronaut["aus"]) == ("happiness", [6, 12])


def test_targets_name_exactly_the_labelled_aus() -> None:
    for row in _rows(DATA_REGISTRY / TRAIN_FILE) + _rows(DATA_REGISTRY / TEST_FILE):
        parsed = parse_completion(row["messages"][-1]["content"])
        assert parsed.ok, (row["id"], parsed.problems)
        assert (parsed.emotion, sorted(parsed.aus)) == (row["emotion"], row["aus"]), row["id"]


def test_demo_is_small() -> None:
    sizes = [p.stat().st_size for p in (DATA_REGISTRY / "demo").rglob("*") if p.is_file()]
    assert sum(sizes) < 400_000
    assert max(sizes) < 60_000


def test_reasoning_names_each_au_in_parentheses() -> None:
    text = reasoning((1, 4, 15), "sadness")
    assert text.index("(AU1)") < text.index("(AU4)") < text.index("(AU15)")  # index() raises if one is missing


def _count(image: Image.Image, colour: tuple[int, int, int]) -> int:
    return int(np.all(np.asarray(image) == colour, axis=-1).sum())


def test_drawn_mouth_opens_with_jaw_aus() -> None:
    closed, parted, dropped, stretched = (_count(draw_face(aus, 0), MOUTH) for aus in [(), (25,), (26,), (27,)])
    assert closed == 0 < parted < dropped < stretched


def test_drawn_eyes_close_with_au43_and_widen_with_au5() -> None:
    white = (250, 250, 250)
    assert _count(draw_face((43,), 0), white) == 0
    assert _count(draw_face((5,), 0), white) > _count(draw_face((), 0), white) > _count(draw_face((7,), 0), white)


def test_every_demo_face_differs_from_its_neutral_look() -> None:
    for aus in (aus for variants in DEMO_FACES.values() for aus in variants):
        assert not np.array_equal(np.asarray(draw_face(aus, 3)), np.asarray(draw_face((), 3))), aus


def test_make_demo_cli(tmp_path: Path) -> None:
    result = run_cli(["llamafactory-fea", "data", "make-demo", "--output-dir", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert "fea_demo" in result.stdout
    assert (tmp_path / TRAIN_FILE).read_bytes() == (DATA_REGISTRY / TRAIN_FILE).read_bytes()


def load_sft_dataset(model: Path, dataset_dir: Path, dataset: str, output_dir: Path) -> tuple[Any, Any]:
    r"""Load a registered dataset through LLaMA-Factory's SFT pipeline; return the train split and the tokenizer."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(
        dict(
            model_name_or_path=str(model),
            stage="sft",
            do_train=True,
            finetuning_type="lora",
            dataset=dataset,
            dataset_dir=str(dataset_dir),
            template="qwen2_vl",
            cutoff_len=2048,
            output_dir=str(output_dir),
            overwrite_cache=True,
            report_to="none",
        )
    )
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    dataset_module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    return dataset_module["train_dataset"], tokenizer_module["tokenizer"]


def assert_trainable(train: Any, tokenizer: Any) -> None:
    r"""Every row holds the image's tokens and a supervised assistant target."""
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert all(image_pad in row["input_ids"] for row in train)
    assert all(any(label != -100 for label in row["labels"]) for row in train)


def test_fea_demo_loads_in_llamafactory(tiny_model: Path, tmp_path: Path) -> None:
    train, tokenizer = load_sft_dataset(tiny_model, DATA_REGISTRY, "fea_demo", tmp_path / "out")
    assert len(train) == 22
    assert_trainable(train, tokenizer)
