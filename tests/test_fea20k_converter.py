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
from llamafactory_fea.fea.emotions import LABEL_SPACES
from llamafactory_fea.fea.prompts import FEAPrompts, load_prompt_set

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
    assert rows[0]["dataset"] == "rafdb"  # the source's key: its label space downstream
    assert rows[0]["images"] == [str(src / "images" / "face.png")]  # outside the dataset dir: absolute
    own = "What emotion does this face show?"
    assert rows[0]["messages"][0]["content"] == f"<image>{own}\n\n{FEAPrompts().question()}"  # own question first
    parsed = parse_completion(rows[0]["messages"][1]["content"])
    assert (parsed.problems, parsed.emotion) == ((), "sadness")
    assert parsed.reasoning.startswith("The inner brows")

    info = json.loads((registry / "dataset_info.json").read_text())
    assert info["fea20k_train"]["file_name"] == "fea20k/train.jsonl"
    assert info["fea20k_test"]["file_name"] == "fea20k/test.jsonl"
    reports = validate_datasets(registry, ["fea20k_train", "fea20k_test"])
    assert [(r.rows, r.valid, r.problems) for r in reports] == [(2, 2, []), (1, 1, [])]


def test_converted_rows_load_in_llamafactory(src: Path, release: Path, tmp_path: Path, tiny_model: Path) -> None:
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

    convert_release(release, src / "registry", "--allow-rejects")  # null labels, empty answers, two stages
    names = "fea20k_train,fea20k_test,fea20k_stage2_train"
    train, tokenizer = load_sft_dataset(tiny_model, src / "registry", names, tmp_path / "out2")
    assert len(train) == 5 + 1 + 2
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


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--question", "fea"], "<image>" + FEAPrompts().question()),
        (["--question", "record"], "<image>What emotion does this face show?"),
        (
            ["--prompts", "reference"],
            "<image>"
            + load_prompt_set("reference").question(LABEL_SPACES["rafdb"], "What emotion does this face show?"),
        ),
    ],
    ids=["fea", "record", "framed by the reference set"],
)
def test_question_options(src: Path, tmp_path: Path, options: list[str], expected: str) -> None:
    train = write_lines(src / "train.jsonl", [make_record()])
    assert convert(tmp_path / "registry", "--train", str(train), *options).rejected == []
    assert read_rows(tmp_path / "registry" / "fea20k" / "train.jsonl")[0]["messages"][0]["content"] == expected


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
        {k: v for k, v in make_record("b1").items() if k != "labels"},
        "b1",
        "missing field 'labels'",
    ),
    ("no label", make_record("b1", labels=[], AUs=[]), "b1", "no label: 'labels' is empty"),
    (
        "malformed tagged description",
        make_record("b1", description="<think>Brows up (AU1) (AU4) (AU15).</think>"),
        "b1",
        "not one <think>...</think><answer>...</answer> completion",
    ),
    (
        "tagged description answers another emotion",
        make_record("b1", description="<think>Brows (AU1), (AU4), corners down (AU15).</think><answer>anger</answer>"),
        "b1",
        "the label is 'sadness'",
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
    assert report.rejected == [f"{tmp_path / 'absent.jsonl'}: file not found: fix the path."]
    (tmp_path / "empty").mkdir()
    assert "no *.jsonl file in this folder" in convert(tmp_path / "registry", str(tmp_path / "empty")).rejected[0]


def test_a_record_without_description_is_label_only(src: Path, tmp_path: Path) -> None:
    records = [make_record("a", description=None), make_record("b", description="  ", dataset="DISFA", labels=[])]
    report = convert(tmp_path / "registry", "--train", str(write_lines(src / "train.jsonl", records)))
    assert report.rejected == []
    rows = read_rows(tmp_path / "registry" / "fea20k" / "train.jsonl")
    assert [(r["emotion"], r["aus"], r["messages"][1]["content"]) for r in rows] == [
        ("sadness", [1, 4, 15], "<answer>sadness</answer>"),
        (None, [1, 4, 15], "<answer></answer>"),
    ]


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


# ---- the published layout: files per source and per stage, sources with different label sets ----
TAGGED = "<think>The lip corner is pulled up on one side (AU14).</think><answer>Contempt</answer>"
NESTED = "<think>Brows up (AU1).<think>Corners down (AU15).</think></think><answer>sadness</answer>"
SAD = "The inner brows rise (AU1) and the lip corners drop (AU15)."


def published(record_id: str, source: str, image: str, labels: list[str], aus: list[str], **fields: Any) -> dict:
    r"""A record as the release writes it: no meta change, `question` with its image token."""
    return make_record(record_id, dataset=source, image=image, labels=labels, AUs=aus, **fields)


@pytest.fixture
def release(tmp_path: Path) -> Path:
    r"""A release folder: stage1/stage2 files per source, images under images/<source>/ (DISFA's elsewhere)."""
    root = tmp_path / "FEA-20K"
    for folder in ("images/AffectNet", "images/RAF-DB", "images/FER2013", "disfa_frames"):
        (root / folder).mkdir(parents=True)

    for name in ("AffectNet/a1", "AffectNet/a2", "AffectNet/a3", "RAF-DB/r1", "RAF-DB/r2", "RAF-DB/r3", "FER2013/f1"):
        Image.new("RGB", (40, 40), (180, 140, 120)).save(root / "images" / f"{name}.png")

    for name in ("d1", "d2"):
        Image.new("RGB", (40, 40), (120, 120, 120)).save(root / "disfa_frames" / f"{name}.png")

    stage1, stage2 = root / "stage1", root / "stage2"
    stage1.mkdir()
    stage2.mkdir()
    write_lines(
        stage1 / "AffectNet-Train-stage1.jsonl",
        [
            published("a1", "AffectNet", "AffectNet/a1.png", ["Contempt"], [], description=TAGGED),  # tagged, as is
            published("a2", "AffectNet", "AffectNet/a2.png", ["Sadness"], [], description=SAD),  # plain: wrapped
            published("a3", "AffectNet", "AffectNet/a3.png", ["Sadness"], [], description=NESTED),  # malformed
        ],
    )
    write_lines(
        stage1 / "DISFA-Train-stage1.jsonl",
        [
            published("d1", "DISFA", "d1.png", [], ["AU1", "AU15"], description=SAD),  # AU-only
            published("d2", "DISFA", "d2.png", [], [], description="The face is relaxed and still."),  # no active AU
        ],
    )
    write_lines(
        stage1 / "RAF-DB-Train-stage1.jsonl",
        [
            published(
                "r1",
                "RAF-DB",
                "RAF-DB/r1.png",
                ["sad"],
                [],
                description=f"<think>{SAD}</think><answer>sadness</answer>",
            ),
            published("r2", "RAF-DB", "RAF-DB/r2.png", ["Contempt"], [], description=SAD),  # not in RAF-DB's labels
            published("a1", "RAF-DB", "RAF-DB/r3.png", ["Sadness"], [], description=SAD),  # a1 is AffectNet's
        ],
    )
    write_lines(stage1 / "RAF-DB-Test-stage1.jsonl", [published("t1", "RAF-DB", "RAF-DB/r3.png", ["Sadness"], [])])
    write_lines(
        stage2 / "RAF-DB-Train-stage2.jsonl",
        [published("r1", "RAF-DB", "RAF-DB/r1.png", ["Sadness"], [], description="")],  # stage 2 may repeat an id
    )
    write_lines(
        stage2 / "FER2013-Train-stage2.jsonl",
        [published("f1", "FER2013", "FER2013/f1.png", ["Happy"], [], description=None)],
    )
    return root


def convert_release(release: Path, registry: Path, *options: str) -> ConversionReport:
    images = ["--image-dir", str(release / "images"), "--image-dir", f"DISFA={release / 'disfa_frames'}"]
    return convert(registry, str(release), *images, *options)


def test_published_layout_converts_per_source_and_stage(release: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    report = convert_release(release, registry, "--allow-rejects")
    counts = {
        source: (c.read, c.converted, c.emotions, c.aus, dict(c.rejected)) for source, c in report.sources.items()
    }
    assert counts == {
        "AffectNet": (3, 2, 2, 0, {"malformed tagged description": 1}),
        "DISFA": (2, 2, 0, 2, {}),
        "FER2013": (1, 1, 1, 0, {}),
        "RAF-DB": (5, 3, 3, 0, {"unknown emotion": 1, "duplicate id": 1}),
    }
    assert report.read == 11
    assert report.written == {"train": 5, "test": 1, "stage2_train": 2}  # stage 1 is FEA-20K itself
    assert report.registered == ["fea20k_train", "fea20k_test", "fea20k_stage2_train"]
    summary = report.summary()
    assert "AffectNet: read 3, good 2 (2 with an emotion, 0 with AUs), written 2, rejected 1 (malformed" in summary
    assert (
        "RAF-DB: read 5, good 3 (3 with an emotion, 0 with AUs), written 3, rejected 2 (duplicate id 1, un" in summary
    )
    rejected = "\n".join(report.rejected)
    assert (
        f"{release / 'stage1' / 'RAF-DB-Train-stage1.jsonl'}:2:r2: source RAF-DB: emotion 'contempt' is not in"
        in rejected
    )
    assert f":3:a1: duplicate id 'a1' (first at {release / 'stage1' / 'AffectNet-Train-stage1.jsonl'}:1)" in rejected

    rows = {row["id"]: row for row in read_rows(registry / "fea20k" / "train.jsonl")}
    labels = {key: (row["dataset"], row["source"], row["emotion"], row["aus"]) for key, row in rows.items()}
    assert labels == {
        "a1": ("affectnet", "AffectNet", "contempt", None),  # emotion-only source: [] is not a label
        "a2": ("affectnet", "AffectNet", "sadness", None),
        "d1": ("disfa", "DISFA", None, [1, 15]),  # AU-only source: no emotion
        "d2": ("disfa", "DISFA", None, []),  # a source that codes AUs: [] is "no active AU"
        "r1": ("rafdb", "RAF-DB", "sadness", None),
    }
    targets = {key: row["messages"][1]["content"] for key, row in rows.items()}
    assert targets["a1"] == TAGGED  # used as it is
    assert targets["a2"] == f"<think>{SAD}</think><answer>sadness</answer>"
    assert targets["d1"] == f"<think>{SAD}</think><answer></answer>"
    assert targets["r1"] == f"<think>{SAD}</think><answer>sadness</answer>"  # not wrapped again
    for target in targets.values():
        assert all(target.count(tag) == 1 for tag in ("<think>", "</think>", "<answer>", "</answer>"))
    assert "contempt" in rows["a1"]["messages"][0]["content"]  # AffectNet's choices
    assert "contempt" not in rows["r1"]["messages"][0]["content"]
    order = [row["id"] for row in read_rows(registry / "fea20k" / "train.jsonl")]
    assert order == ["a1", "d1", "a2", "d2", "r1"]  # the first with an emotion and the first with AUs lead

    stage2 = read_rows(registry / "fea20k" / "stage2_train.jsonl")
    assert [(r["id"], r["emotion"], r["aus"], r["messages"][1]["content"]) for r in stage2] == [
        ("f1", "happiness", None, "<answer>happiness</answer>"),
        ("r1", "sadness", None, "<answer>sadness</answer>"),
    ]
    reports = [  # ids are unique within a stage (`data validate` checks the datasets it is given together)
        *validate_datasets(registry, ["fea20k_train", "fea20k_test"]),
        *validate_datasets(registry, ["fea20k_stage2_train"]),
    ]
    assert [(r.rows, r.valid) for r in reports] == [(5, 5), (1, 1), (2, 2)], [r.summary() for r in reports]


def test_published_layout_writes_nothing_when_a_record_is_rejected(release: Path, tmp_path: Path) -> None:
    report = convert_release(release, tmp_path / "registry")
    assert (report.written, len(report.rejected)) == ({}, 3)
    assert "AffectNet: read 3, good 2 (2 with an emotion, 0 with AUs), written 0, rejected 1" in report.summary()
    assert not (tmp_path / "registry").exists()


def test_au_sources_option_and_label_types_survive_the_json_reader(release: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    registry = tmp_path / "registry"
    report = convert_release(release, registry, "--allow-rejects", "--au-sources", "DISFA,fer-2013")
    assert report.sources["FER2013"].aus == 1  # its [] now reads as "no active AU"
    assert read_rows(registry / "fea20k" / "stage2_train.jsonl")[0]["aus"] == []

    # `datasets` (LLaMA-Factory's JSON reader) types each column from its first block (10 MB) and fails on a column
    # null throughout it; blocks of two rows stand for that here (it reads a block, then on to the end of the next
    # line); in input order, AffectNet's two rows have no AUs
    path = registry / "fea20k" / "train.jsonl"
    convert_release(release, registry, "--allow-rejects")
    block = len(path.read_text().splitlines()[0]) + 1
    loaded = load_dataset("json", data_files=str(path), split="train", chunksize=block, cache_dir=str(tmp_path / "c"))
    assert [(row["emotion"], row["aus"]) for row in loaded] == [
        (row["emotion"], row["aus"]) for row in read_rows(path)
    ]


def test_converted_labels_survive_the_label_column(release: Path, tmp_path: Path) -> None:
    from llamafactory_fea.train.labelled_data import LabelMixin, decode_labels

    class Aligned:  # what a stock LLaMA-Factory converter returns, reduced to the reference answer
        def __call__(self, example: dict[str, Any]) -> dict[str, Any]:
            return {"_response": [{"role": "assistant", "content": example["messages"][1]["content"]}]}

    class Converter(LabelMixin, Aligned):
        data_args = None  # no prompt set: rows as stored

    convert_release(release, tmp_path / "registry", "--allow-rejects")
    rows = read_rows(tmp_path / "registry" / "fea20k" / "train.jsonl")
    decoded = [decode_labels(Converter()(row)) for row in rows]
    assert [(d["id"], d["emotion"], d["aus"]) for d in decoded] == [(r["id"], r["emotion"], r["aus"]) for r in rows]
    assert {(d["emotion"] is None, d["aus"] is None, d["aus"] == []) for d in decoded} == {
        (False, True, False),  # emotion-only
        (True, False, False),  # AU-only
        (True, False, True),  # AU-only, no active AU
    }
