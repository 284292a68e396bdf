r"""GRPO datasets: prompts rendered by LLaMA-Factory's template, images with its pixel limits, labels kept or parsed."""

import json
from pathlib import Path

import pytest

from llamafactory_fea.data.files import write_jsonl
from llamafactory_fea.data.records import FEARecord, register_dataset
from llamafactory_fea.fea.labels import extract_labels
from llamafactory_fea.rewards import au_frequency_weights
from llamafactory_fea.train.grpo.args import GRPOArguments
from llamafactory_fea.train.grpo.data import get_grpo_dataset

from .conftest import DATA_REGISTRY


DEMO_ROWS = [json.loads(line) for line in (DATA_REGISTRY / "demo" / "fea_demo.jsonl").read_text().splitlines()]


def load(tiny_model: Path, tmp_path: Path, grpo_args: GRPOArguments | None = None, **overrides):
    r"""Parse LLaMA-Factory arguments as the stage does and build the GRPO datasets."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = dict(
        stage="sft",
        model_name_or_path=str(tiny_model),
        dataset="fea_demo",
        dataset_dir=str(DATA_REGISTRY),
        template="qwen2_vl",
        output_dir=str(tmp_path / "out"),
        do_train=True,
        overwrite_cache=True,
        preprocessing_num_workers=1,
        report_to="none",
    )
    model_args, data_args, training_args, _, _ = get_train_args({**args, **overrides})
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    grpo_args = grpo_args or GRPOArguments()
    return get_grpo_dataset(template, model_args, data_args, training_args, grpo_args, **tokenizer_module)


def test_demo_rows_keep_their_labels_and_images(tiny_model: Path, tmp_path: Path):
    train = load(tiny_model, tmp_path)["train_dataset"]
    assert len(train) == len(DEMO_ROWS)
    for row, source in zip(train, DEMO_ROWS):
        assert (row["emotion"], row["aus"]) == (source["emotion"], source["aus"])
        assert row["solution"] == source["messages"][1]["content"]
        prompt = row["prompt"]
        assert prompt.startswith("<|im_start|>system\n")
        assert prompt.endswith("<|im_start|>assistant\n")
        assert prompt.count("<|image_pad|>") == 1
        assert "<image>" not in prompt
        assert source["messages"][0]["content"].removeprefix("<image>") in prompt
        assert source["messages"][1]["content"] not in prompt
        assert len(row["images"]) == 1
        assert row["images"][0].mode == "RGB"


def test_image_pixel_limits_are_applied(tiny_model: Path, tmp_path: Path):
    train = load(tiny_model, tmp_path, image_max_pixels=1024)["train_dataset"]
    assert all(row["images"][0].width * row["images"][0].height <= 1024 for row in train)
    assert any(min(row["images"][0].size) >= 28 for row in train)  # Qwen2-VL's own lower bound stays


def test_max_samples_lists_and_evaluation_splits(tiny_model: Path, tmp_path: Path):
    assert len(load(tiny_model, tmp_path, max_samples=5)["train_dataset"]) == 5
    assert len(load(tiny_model, tmp_path, dataset="fea_demo,fea_demo")["train_dataset"]) == 2 * len(DEMO_ROWS)
    split = load(tiny_model, tmp_path, val_size=0.25)
    assert len(split["train_dataset"]) + len(split["eval_dataset"]) == len(DEMO_ROWS)
    separate = load(tiny_model, tmp_path, eval_dataset="fea_demo_test")
    assert len(separate["eval_dataset"]) == 7
    assert separate["eval_dataset"][0]["images"]


def test_au_frequency_weights_are_a_column(tiny_model: Path, tmp_path: Path):
    train = load(tiny_model, tmp_path, GRPOArguments(au_frequency_weighting="reference"))["train_dataset"]
    assert train["au_weight"] == pytest.approx(au_frequency_weights([row["aus"] for row in DEMO_ROWS], "reference"))
    assert "au_weight" not in load(tiny_model, tmp_path)["train_dataset"].column_names


def test_plain_sharegpt_data_gets_labels_from_its_reference_answer(tiny_model: Path, tmp_path: Path):
    from PIL import Image

    data_dir = tmp_path / "data"
    (data_dir / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), "gray").save(data_dir / "images" / "face.png")
    records = [
        FEARecord("a", "images/face.png", "happiness", [6, 12], "Cheeks raised (AU6) and lip corners up (AU12)."),
        FEARecord("b", "images/face.png", "surprise", [1, 2, 26], "Brows up (AU1) (AU2), jaw dropped (AU26)."),
    ]
    rows = []
    for record in records:
        row = record.to_row()
        del row["emotion"], row["aus"]  # an ordinary sharegpt dataset: no label columns
        rows.append(row)

    write_jsonl(data_dir / "plain.jsonl", rows)
    register_dataset(data_dir, "plain", "plain.jsonl")
    train = load(tiny_model, tmp_path, dataset="plain", dataset_dir=str(data_dir))["train_dataset"]
    assert [(row["emotion"], row["aus"]) for row in train] == [("happiness", [6, 12]), ("surprise", [1, 2, 26])]
    assert train[0]["images"][0].size == (64, 48)


def test_a_mix_of_emotion_only_and_au_only_rows_keeps_what_each_row_lacks(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    import logging

    from PIL import Image

    data_dir = tmp_path / "mix"
    (data_dir / "images").mkdir(parents=True)
    Image.new("RGB", (64, 48), "gray").save(data_dir / "images" / "face.png")
    records = [
        FEARecord("fer", "images/face.png", "sadness", None, "Brows down (AU4).", "fer2013"),  # emotion source
        FEARecord("disfa", "images/face.png", None, [1, 4], "Brows up (AU1) and down (AU4).", "disfa"),  # AU source
        FEARecord("still", "images/face.png", None, [], "A still face.", "disfa"),  # labelled: no active AU
        FEARecord("both", "images/face.png", "happiness", [6, 12], "Cheeks up (AU6) (AU12).", "rafdb"),
    ]
    write_jsonl(data_dir / "mix.jsonl", [record.to_row() for record in records])
    register_dataset(data_dir, "mix", "mix.jsonl")
    logger = logging.getLogger("llamafactory_fea")
    logger.addHandler(caplog.handler)
    try:
        train = load(tiny_model, tmp_path, dataset="mix", dataset_dir=str(data_dir))["train_dataset"]
    finally:
        logger.removeHandler(caplog.handler)

    assert [(row["emotion"], row["aus"]) for row in train] == [
        ("sadness", None),
        (None, [1, 4]),
        (None, []),
        ("happiness", [6, 12]),
    ]
    assert "4 prompts, 2 with an emotion label, 3 with AU labels" in caplog.text


def test_text_only_alpaca_data_has_no_images_column(tiny_model: Path, tmp_path: Path):
    data_dir = tmp_path / "text"
    answer = "<think>The lip corners are pulled up (AU12).</think><answer>Happy</answer>"
    write_jsonl(data_dir / "text.jsonl", [{"instruction": "How does a smile look?", "input": "", "output": answer}])
    (data_dir / "dataset_info.json").write_text(json.dumps({"text": {"file_name": "text.jsonl"}}))
    train = load(tiny_model, tmp_path, dataset="text", dataset_dir=str(data_dir))["train_dataset"]
    assert "images" not in train.column_names
    assert "image_paths" not in train.column_names
    assert (train[0]["emotion"], train[0]["aus"], train[0]["solution"]) == ("happiness", [12], answer)


def test_ranking_data_is_refused(tiny_model: Path, tmp_path: Path):
    data_dir = tmp_path / "pairs"
    write_jsonl(data_dir / "pairs.jsonl", [{"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}])
    info = {
        "pairs": {"file_name": "pairs.jsonl", "ranking": True, "columns": {"chosen": "chosen", "rejected": "rejected"}}
    }
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="ranking"):
        load(tiny_model, tmp_path, dataset="pairs", dataset_dir=str(data_dir))


def test_label_extraction_prefers_columns():
    response = "<think>Brows together (AU4).</think><answer>anger</answer>"
    assert extract_labels({"emotion": "Sad", "aus": [1, 15]}, response) == {"emotion": "sadness", "aus": [1, 15]}
    assert extract_labels({"labels": ["Sadness"], "AUs": ["AU1", "AU4"]}, "") == {"emotion": "sadness", "aus": [1, 4]}
    assert extract_labels({"emotion": None, "aus": None}, response) == {"emotion": "anger", "aus": [4]}
    assert extract_labels({}, "no tags at all") == {"emotion": None, "aus": None}  # None: not labelled (issue 10)


def test_missing_image_names_the_dataset_and_record(tiny_model: Path, tmp_path: Path):
    rows = [json.loads(line) for line in (DATA_REGISTRY / "demo" / "fea_demo.jsonl").read_text().splitlines()[:2]]
    rows[0]["images"] = [str(DATA_REGISTRY / rows[0]["images"][0])]
    rows[1]["images"] = [str(tmp_path / "gone.png")]
    write_jsonl(tmp_path / "faces.jsonl", rows)
    register_dataset(tmp_path, "faces", "faces.jsonl")
    with pytest.raises(ValueError, match=rf"Dataset faces, record {rows[1]['id']}: image .*gone.png does not exist"):
        load(tiny_model, tmp_path, dataset="faces", dataset_dir=str(tmp_path))


def test_corrupt_image_names_the_dataset_record_and_path_at_load_time(tiny_model: Path, tmp_path: Path):
    rows = [json.loads(line) for line in (DATA_REGISTRY / "demo" / "fea_demo.jsonl").read_text().splitlines()[:4]]
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image at all")
    for row in rows:
        row["images"] = [str(DATA_REGISTRY / row["images"][0])]
    rows[2]["images"] = ["corrupt.png"]  # relative to the dataset folder
    del rows[3]["id"]
    rows[3]["images"] = [str(tmp_path)]  # a folder
    write_jsonl(tmp_path / "faces.jsonl", rows[:3])
    write_jsonl(tmp_path / "folder.jsonl", rows[3:])
    register_dataset(tmp_path, "faces", "faces.jsonl")
    register_dataset(tmp_path, "folder", "folder.jsonl")
    with pytest.raises(
        ValueError,
        match=rf"Dataset faces, record {rows[2]['id']}: image .*corrupt.png cannot be read "
        r"as an image \(UnidentifiedImageError: .*\)\. Replace the file or remove the record\.",
    ):
        load(tiny_model, tmp_path, dataset="faces", dataset_dir=str(tmp_path), preprocessing_num_workers=2)
    with pytest.raises(ValueError, match=r"Dataset folder, record at row 0 \(no id\): image .* is not a file"):
        load(tiny_model, tmp_path, dataset="folder", dataset_dir=str(tmp_path))


def test_a_dataset_without_any_label_the_rewards_read_is_refused(tiny_model: Path, tmp_path: Path):
    data_dir = tmp_path / "text"
    rows = [{"instruction": "How does a smile look?", "input": "", "output": "Happy, I think."}] * 3
    write_jsonl(data_dir / "text.jsonl", rows)
    (data_dir / "dataset_info.json").write_text(json.dumps({"text": {"file_name": "text.jsonl"}}))
    kwargs = dict(dataset="text", dataset_dir=str(data_dir))
    with pytest.raises(
        ValueError,
        match=r"Dataset text: none of its 3 rows has a label that the rewards fea_emotion \(emotion\), fea_au_f1 "
        r"\(aus\) read.*choose rewards that read no label \(fea_format, fea_strict_format, fea_consistency\)",
    ):
        load(tiny_model, tmp_path, **kwargs)
    with pytest.raises(ValueError, match=r"the rewards fea_strict_au_f1 \(aus\) read"):
        load(tiny_model, tmp_path, GRPOArguments(reward_funcs="fea_format,fea_strict_au_f1"), **kwargs)

    assert (
        len(
            load(tiny_model, tmp_path, GRPOArguments(reward_funcs="fea_format,fea_consistency"), **kwargs)[
                "train_dataset"
            ]
        )
        == 3
    )
    user = GRPOArguments(reward_funcs="fea_emotion,tests.test_grpo_trainer.user_reward")  # what it reads is unknown
    assert len(load(tiny_model, tmp_path, user, **kwargs)["train_dataset"]) == 3
