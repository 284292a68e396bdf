r"""The FEA-20K converter: good records, every kind of bad record, counts, exit policy and atomic outputs."""

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from llamafactory_fea.cli import build_parser
from llamafactory_fea.data.converters import CONVERTERS
from llamafactory_fea.data.converters.base import ConversionReport
from llamafactory_fea.data.validate import validate_datasets
from llamafactory_fea.fea import parse_completion
from llamafactory_fea.fea.prompts import FEAPrompts

from .conftest import run_cli
from .test_demo_data import assert_trainable, load_sft_dataset


def make_record(record_id: str = "r1", **fields: Any) -> dict[str, Any]:
    r"""A good FEA-20K record (image `images/face.png`); keyword arguments replace or add fields."""
    record = {
        "id": record_id,
        "dataset": "RAF-DB",
        "image": "images/face.png",
        "question": "<image>What emotion does this face show?",
        "AUs": ["AU4", "AU1", "AU15"],
        "labels": ["Sad"],
        "description": "The inner brows are raised (AU1) and drawn together (AU4); the lip corners drop (AU15).",
        "meta_info": {"source_id": 7},
    }
    record.update(fields)
    return record


def write_lines(path: Path, lines: list[Any]) -> Path:
    r"""Write records (dicts) or raw text lines (str) as a JSONL file."""
    path.write_text("".join(f"{line if isinstance(line, str) else json.dumps(line)}\n" for line in lines))
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    r"""A source folder with good, corrupt and truncated images."""
    folder = tmp_path / "src"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (48, 48), (200, 150, 120)).save(folder / "images" / "face.png")
    Image.new("RGB", (48, 48), (90, 60, 40)).save(folder / "images" / "face2.png")
    (folder / "images" / "garbage.png").write_bytes(b"this is not an image")
    (folder / "images" / "truncated.png").write_bytes((folder / "images" / "face.png").read_bytes()[:60])
    return folder


def convert(dataset_dir: Path, *options: str) -> ConversionReport:
    r"""Run the converter as the CLI would, with parsed options."""
    args = build_parser().parse_args(["data", "convert", "fea20k", "--dataset-dir", str(dataset_dir), *options])
    return CONVERTERS["fea20k"].run(args)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_good_records_convert_and_validate(src: Path, tmp_path: Path) -> None:
    train = write_lines(src / "train.jsonl", [make_record("r1"), make_record(2, image="images/face2.png")])
    test = write_lines(
        src / "test.jsonl",
        [
            make_record(
                "t1", labels=["surprised"], AUs=["AU1", "AU2"], description="Both brows fly up (AU1, AU2) in surprise."
            )
        ],
    )
    registry = tmp_path / "registry"
    report = convert(registry, "--train", str(train), "--test", str(test))
    assert (report.read, report.written, report.rejected) == (3, {"train": 2, "test": 1}, [])
    assert report.registered == ["fea20k_train", "fea20k_test"]

    rows = read_rows(registry / "fea20k" / "train.jsonl")
    assert [row["id"] for row in rows] == ["r1", "2"]
    assert (rows[0]["emotion"], rows[0]["aus"], rows[0]["source"]) == ("sadness", [1, 4, 15], "RAF-DB")
    assert rows[0]["images"] == [str(src / "images" / "face.png")]  # outside the dataset dir: absolute
    assert rows[0]["messages"][0]["content"] == "<image>" + FEAPrompts().question()
    parsed = parse_completion(rows[0]["messages"][1]["content"])
    assert (parsed.problems, parsed.emotion) == ((), "sadness")
    assert parsed.reasoning.startswith("The inner brows")

    info = json.loads((registry / "dataset_info.json").read_text())
    assert info["fea20k_train"]["file_name"] == "fea20k/train.jsonl"
    assert info["fea20k_test"]["file_name"] == "fea20k/test.jsonl"
    reports = validate_datasets(registry, ["fea20k_train", "fea20k_test"])
    assert [(r.rows, r.valid, r.problems) for r in reports] == [(2, 2, []), (1, 1, [])]


def test_converted_rows_load_in_llamafactory(src: Path, tmp_path: Path, tiny_model: Path) -> None:
    (src / "registry" / "faces").mkdir(parents=True)
    Image.new("RGB", (48, 48), (230, 190, 160)).save(src / "registry" / "faces" / "inside.png")
    records = [make_record("outside"), make_record("inside", image="registry/faces/inside.png")]
    report = convert(src / "registry", "--train", str(write_lines(src / "train.jsonl", records)))
    assert report.written == {"train": 2}
    images = [row["images"][0] for row in read_rows(src / "registry" / "fea20k" / "train.jsonl")]
    assert images == [str(src / "images" / "face.png"), "faces/inside.png"]  # absolute outside, relative inside
    train, tokenizer = load_sft_dataset(tiny_model, src / "registry", "fea20k_train", tmp_path / "out")
    assert len(train) == 2
    assert_trainable(train, tokenizer)


def test_images_under_the_dataset_dir_are_relative(src: Path) -> None:
    train = write_lines(src / "train.jsonl", [make_record()])
    report = convert(src, "--train", str(train))
    assert report.written == {"train": 1}
    assert read_rows(src / "fea20k" / "train.jsonl")[0]["images"] == ["images/face.png"]


def test_image_dir_and_keep_question(src: Path, tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.jsonl", [make_record(image="face.png")])
    report = convert(
        tmp_path / "registry", "--train", str(train), "--image-dir", str(src / "images"), "--keep-question"
    )
    assert report.rejected == []
    row = read_rows(tmp_path / "registry" / "fea20k" / "train.jsonl")[0]
    assert row["images"] == [str(src / "images" / "face.png")]
    assert row["messages"][0]["content"] == "<image>What emotion does this face show?"


def test_test_split_alone(src: Path, tmp_path: Path) -> None:
    test = write_lines(src / "test.jsonl", [make_record()])
    registry = tmp_path / "registry"
    report = convert(registry, "--test", str(test))
    assert report.written == {"test": 1}
    assert not (registry / "fea20k" / "train.jsonl").exists()
    assert set(json.loads((registry / "dataset_info.json").read_text())) == {"fea20k_test"}


BAD_RECORDS = [
    ("missing image", make_record("b1", image="images/nowhere.png"), "b1", "does not exist"),
    ("garbage image", make_record("b1", image="images/garbage.png"), "b1", "cannot be read"),
    ("truncated image", make_record("b1", image="images/truncated.png"), "b1", "cannot be read"),
    ("unknown emotion", make_record("b1", labels=["Bored"]), "b1", "unknown emotion 'Bored'"),
    ("contempt outside FEA-20K", make_record("b1", labels=["contempt"]), "b1", "not in this label space"),
    ("two emotions", make_record("b1", labels=["Sad", "Angry"]), "b1", "exactly one emotion"),
    ("AU outside catalogue", make_record("b1", AUs=["AU1", "AU3"]), "b1", "AU3 is not in the catalogue"),
    ("not an AU", make_record("b1", AUs=["brow"]), "b1", "is not an AU"),
    (
        "missing field",
        {k: v for k, v in make_record("b1").items() if k != "description"},
        "b1",
        "missing field 'description'",
    ),
    ("AUs wrong type", make_record("b1", AUs="AU1"), "b1", "field 'AUs' must be list"),
    ("labels wrong item type", make_record("b1", labels=[3]), "b1", "'labels' must be a list of emotion words"),
    ("id wrong type", make_record(["x"]), None, "field 'id' must be str or int"),
    ("not an object", ["a", "list"], None, "must be a JSON object"),
    ("broken JSON", '{"id": "b1", "image": ', None, "broken JSON"),
    ("reasoning names other AUs", make_record("b1", AUs=["AU1", "AU4"]), "b1", "must name exactly the labelled AUs"),
    (
        "reasoning names no AU",
        make_record("b1", description="The face looks quite sad to me."),
        "b1",
        "names no action unit",
    ),
    ("empty description", make_record("b1", description="  "), "b1", "is empty"),
    (
        "two image tokens",
        make_record("b1", description="x <image> brows (AU1) (AU4) (AU15) drop."),
        "b1",
        "exactly one <image>",
    ),
]


@pytest.mark.parametrize(
    ("bad", "record_id", "reason"), [case[1:] for case in BAD_RECORDS], ids=[c[0] for c in BAD_RECORDS]
)
def test_each_bad_record_is_rejected_with_location(
    src: Path, tmp_path: Path, bad: Any, record_id: Any, reason: str
) -> None:
    train = write_lines(src / "train.jsonl", [make_record("g1"), bad, make_record("g2")])
    report = convert(tmp_path / "registry", "--train", str(train))
    assert (report.read, report.written, len(report.rejected)) == (3, {}, 1)
    location = f"{train}:2:{record_id}: " if record_id else f"{train}:2: "
    assert report.rejected[0].startswith(location), report.rejected[0]
    assert reason in report.rejected[0]
    assert not (tmp_path / "registry").exists()  # nothing written without --allow-rejects
    assert f"rejected {location}" in report.summary()


def test_duplicate_ids_within_and_across_splits(src: Path, tmp_path: Path) -> None:
    train = write_lines(src / "train.jsonl", [make_record("a"), make_record("b"), make_record("a")])
    test = write_lines(src / "test.jsonl", [make_record("b"), make_record("c")])
    report = convert(tmp_path / "registry", "--train", str(train), "--test", str(test), "--allow-rejects")
    assert (report.read, report.written) == (5, {"train": 2, "test": 1})
    assert report.rejected == [
        f"{train}:3:a: duplicate id 'a' (first at {train}:1): give each record its own id.",
        f"{test}:1:b: duplicate id 'b' (first at {train}:2): give each record its own id.",
    ]


def test_allow_rejects_writes_the_good_records(src: Path, tmp_path: Path) -> None:
    lines = [make_record("g1"), make_record("b1", labels=["Bored"]), "", "not json", make_record("g2")]
    train = write_lines(src / "train.jsonl", lines)
    report = convert(tmp_path / "registry", "--train", str(train), "--allow-rejects")
    assert (report.read, report.written, len(report.rejected)) == (4, {"train": 2}, 2)
    assert report.read == report.written["train"] + len(report.rejected)  # nothing dropped silently
    assert [row["id"] for row in read_rows(tmp_path / "registry" / "fea20k" / "train.jsonl")] == ["g1", "g2"]


def test_failing_run_leaves_previous_outputs_intact(src: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    train = write_lines(src / "train.jsonl", [make_record("g1")])
    test = write_lines(src / "test.jsonl", [make_record("g2")])
    assert convert(registry, "--train", str(train), "--test", str(test)).written == {"train": 1, "test": 1}
    before = {p: p.read_bytes() for p in registry.rglob("*") if p.is_file()}

    bad = write_lines(src / "bad.jsonl", [make_record("g9"), make_record("b1", AUs=["AU99"])])
    report = convert(registry, "--train", str(bad), "--test", str(test))
    assert (report.written, len(report.rejected)) == ({}, 1)
    assert {p: p.read_bytes() for p in registry.rglob("*") if p.is_file()} == before


def test_all_rejected_writes_nothing_even_when_allowed(src: Path, tmp_path: Path) -> None:
    train = write_lines(src / "train.jsonl", [make_record("b1", labels=["Bored"])])
    report = convert(tmp_path / "registry", "--train", str(train), "--allow-rejects")
    assert (report.written, len(report.rejected)) == ({}, 1)
    assert "Nothing written" in report.summary()


def test_missing_input_file_is_reported(tmp_path: Path) -> None:
    report = convert(tmp_path / "registry", "--train", str(tmp_path / "absent.jsonl"))
    assert report.written == {}
    assert report.rejected == [f"{tmp_path / 'absent.jsonl'}: file not found: fix the --train/--test path."]


def test_cli_exit_codes_and_output(src: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    bad = write_lines(src / "bad.jsonl", [make_record("g1"), make_record("b1", image="images/nowhere.png")])
    command = ["llamafactory-fea", "data", "convert", "fea20k", "--train", str(bad), "--dataset-dir", str(registry)]
    failed = run_cli(command)
    assert failed.returncode == 1
    assert f"{bad}:2:b1: image" in failed.stdout
    assert "read 2, written none, rejected 1" in failed.stdout

    allowed = run_cli([*command, "--allow-rejects"])
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "written train 1, rejected 1" in allowed.stdout

    help_text = run_cli(["llamafactory-fea", "data", "convert", "fea20k", "--help"]).stdout
    assert "Exit status" in help_text
    assert "--allow-rejects" in help_text
