r"""The dataset validator: each kind of bad row is found and located as file:line:id; the CLI's exit code."""

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from llamafactory_fea.data.records import FEARecord, register_dataset
from llamafactory_fea.data.validate import RowChecker, image_problem, row_problems, validate_datasets

from .conftest import DATA_REGISTRY, run_cli


def good_row(record_id: str = "r1") -> dict[str, Any]:
    r"""A valid FEA row whose image is `faces/face.png` under the dataset folder."""
    reasoning = "The inner brows are raised (AU1) and the lip corners are pulled down (AU15)."
    return FEARecord(record_id, "faces/face.png", "sadness", [1, 15], reasoning).to_row()


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    r"""A dataset folder with one good image, a corrupt one and an empty one."""
    (tmp_path / "faces").mkdir()
    Image.new("RGB", (40, 40), (210, 170, 140)).save(tmp_path / "faces" / "face.png")
    (tmp_path / "faces" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "faces" / "empty.png").write_bytes(b"")
    return tmp_path


def write_dataset(registry: Path, name: str, lines: list[Any]) -> Path:
    r"""Write rows (dicts) or raw lines (str) as `<name>.jsonl` and register it."""
    path = registry / f"{name}.jsonl"
    path.write_text("".join(f"{line if isinstance(line, str) else json.dumps(line)}\n" for line in lines))
    register_dataset(registry, name, path.name)
    return path


def edited(**changes: Any) -> dict[str, Any]:
    r"""A good row with some columns replaced."""
    return {**good_row("bad"), **changes}


def target(text: str) -> list[dict[str, str]]:
    r"""Messages with the given assistant target."""
    return [good_row()["messages"][0], {"role": "assistant", "content": text}]


BAD_ROWS = [
    ("not an object", ["row"], "must be a JSON object"),
    ("no id", {k: v for k, v in good_row().items() if k != "id"}, "'id' must be a non-empty string"),
    ("messages missing", edited(messages=None), "'messages' must be a list"),
    ("roles", edited(messages=list(reversed(good_row()["messages"]))), "roles must alternate"),
    (
        "content type",
        edited(messages=[{"role": "user", "content": 1}, {"role": "assistant", "content": "x"}]),
        "string 'content'",
    ),
    ("two images", edited(images=["faces/face.png", "faces/face.png"]), "one image path"),
    (
        "no image token",
        edited(messages=[{"role": "user", "content": "Q"}, good_row()["messages"][1]]),
        "exactly one <image>",
    ),
    ("missing image", edited(images=["faces/none.png"]), "does not exist"),
    ("corrupt image", edited(images=["faces/corrupt.png"]), "cannot be read"),
    ("empty image", edited(images=["faces/empty.png"]), "cannot be read"),
    ("emotion not normalised", edited(emotion="Sad"), "'emotion' must be a normalised emotion"),
    ("aus not ints", edited(aus=["AU1", "AU15"]), "'aus' must be a list of AU numbers"),
    ("aus unsorted", edited(aus=[15, 1]), "'aus' must be sorted"),
    ("aus repeated", edited(aus=[1, 1, 15]), "'aus' must be sorted"),
    ("AU outside catalogue", edited(aus=[1, 3, 15]), "AU3 not in the AU catalogue"),
    ("target names other AUs", edited(aus=[1, 4]), "must name exactly the labelled AUs"),
    ("target answers another emotion", edited(emotion="anger"), "the label is 'anger'"),
    (
        "label-only target disagrees",
        edited(messages=target("<answer>anger</answer>")),
        "a label-only target must be '<answer>sadness</answer>'",
    ),
    (
        "neither label nor a labelled answer",
        edited(emotion=None, aus=None, messages=target("<think>The face is still and calm.</think><answer></answer>")),
        "no label: 'emotion' and 'aus' are both null",
    ),
    (
        "label-only target without labels",
        edited(emotion=None, aus=None, messages=target("<answer></answer>")),
        "no label",
    ),
    ("aus not a list", edited(aus="AU1"), "or null when not labelled"),
    ("labelled no AU but the reasoning names one", edited(aus=[]), "the labels are none"),
    (
        "target with two answers",
        edited(messages=target("<think>Brows up (AU1), corners down (AU15).</think><answer>sad or angry</answer>")),
        "several emotions",
    ),
]


@pytest.mark.parametrize(("row", "reason"), [case[1:] for case in BAD_ROWS], ids=[case[0] for case in BAD_ROWS])
def test_each_bad_row_is_found(registry: Path, row: Any, reason: str) -> None:
    path = write_dataset(registry, "data", [good_row("g1"), row, good_row("g2")])
    (report,) = validate_datasets(registry, ["data"])
    assert (report.rows, report.valid) == (3, 2)
    assert [str(problem).startswith(f"{path}:2") for problem in report.problems] == [True] * len(report.problems)
    assert any(reason in str(problem) for problem in report.problems), report.summary()


def test_label_only_rows_of_benchmarks_are_valid(registry: Path) -> None:
    emotion_only = edited(id="e", aus=None, messages=target("<answer>sadness</answer>"))
    no_au = edited(id="n", aus=[], messages=target("<answer>sadness</answer>"))
    au_only = edited(id="a", emotion=None, aus=[1, 4], messages=target("<answer></answer>"))
    write_dataset(registry, "data", [emotion_only, no_au, au_only])
    (report,) = validate_datasets(registry, ["data"])
    assert (report.rows, report.valid) == (3, 3), report.summary()


def test_partially_labelled_rows_with_reasoning_are_valid(registry: Path) -> None:
    reasoning = "The inner brows are raised (AU1) and the lip corners are pulled down (AU15)."
    rows = [
        edited(id="emotion-only", aus=None),  # the reasoning's AUs are not checked against a label
        edited(id="au-only", emotion=None),  # the answer is not graded
        edited(
            id="au-only, any answer", emotion=None, messages=target(f"<think>{reasoning}</think><answer></answer>")
        ),
        edited(
            id="no AU",
            aus=[],
            messages=target("<think>The face is relaxed and still.</think><answer>sadness</answer>"),
        ),
        edited(id="from the answer", emotion=None, aus=None),  # neither column: the reference answer labels it
    ]
    write_dataset(registry, "data", rows)
    (report,) = validate_datasets(registry, ["data"])
    assert (report.rows, report.valid) == (5, 5), report.summary()


def test_location_names_file_line_and_id(registry: Path) -> None:
    path = write_dataset(registry, "data", [good_row("g1"), "", edited(emotion="Sad")])
    (report,) = validate_datasets(registry, ["data"])
    assert [str(problem).split(": ", 1)[0] for problem in report.problems] == [f"{path}:3:bad"]


def test_broken_json_and_duplicate_ids_across_files(registry: Path) -> None:
    first = write_dataset(registry, "first", [good_row("a"), "{not json"])
    second = write_dataset(registry, "second", [good_row("b"), good_row("a")])
    reports = validate_datasets(registry, ["first", "second"])
    assert [(r.rows, r.valid) for r in reports] == [(2, 1), (2, 1)]
    assert str(reports[0].problems[0]).startswith(f"{first}:2: broken JSON")
    assert (
        str(reports[1].problems[0])
        == f"{second}:2:a: duplicate id 'a' (first at {first}:1): give each record its own id."
    )


def test_unregistered_dataset_and_missing_file(registry: Path) -> None:
    register_dataset(registry, "ghost", "ghost.jsonl")
    reports = validate_datasets(registry, ["nope", "ghost"])
    assert "'nope' is not registered (known: ghost)" in str(reports[0].problems[0])
    assert "file not found" in str(reports[1].problems[0])


def test_media_dir_resolves_relative_images(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("other")
    write_dataset(other, "data", [good_row()])
    assert validate_datasets(other, ["data"])[0].valid == 0
    assert validate_datasets(other, ["data"], media_dir=registry)[0].problems == []


def test_good_row_has_no_problem_and_checker_remembers_ids(registry: Path) -> None:
    assert row_problems(good_row(), registry) == []
    assert image_problem(registry / "faces" / "face.png") is None
    checker = RowChecker(registry)
    assert checker.check(good_row("x"), "f.jsonl", 1) == []
    assert [error.where for error in checker.check(good_row("x"), "f.jsonl", 5)] == ["5:x"]


def test_cli_exit_codes(registry: Path) -> None:
    ok = run_cli(
        [
            "llamafactory-fea",
            "data",
            "validate",
            "--dataset-dir",
            str(DATA_REGISTRY),
            "--dataset",
            "fea_demo",
            "--dataset",
            "fea_demo_test",
        ]
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "fea_demo (" in ok.stdout
    assert "22 rows, 22 valid, 0 problems" in ok.stdout

    path = write_dataset(registry, "data", [good_row("g1"), edited(aus=[15, 1])])
    bad = run_cli(["llamafactory-fea", "data", "validate", "--dataset-dir", str(registry), "--dataset", "data"])
    assert bad.returncode == 1
    assert "2 rows, 1 valid, 1 problems" in bad.stdout
    assert f"{path}:2:bad: 'aus' must be sorted" in bad.stdout


def test_missing_converter_output_names_the_convert_command(registry: Path) -> None:
    register_dataset(registry, "fea20k_train", "fea20k/train.jsonl")
    problem = str(validate_datasets(registry, ["fea20k_train"])[0].problems[0])
    assert f"file not found: run `llamafactory-fea data convert fea20k ... --dataset-dir {registry}`" in problem


def test_json_array_is_read_as_llamafactory_reads_it(registry: Path) -> None:
    (registry / "data.json").write_text(json.dumps([good_row("a"), edited(id="b", emotion="joy")]))
    register_dataset(registry, "data", "data.json")
    report = validate_datasets(registry, ["data"])[0]
    assert (report.rows, report.valid) == (2, 1)
    assert "data.json:2:b: 'emotion' must be a normalised emotion" in str(report.problems[0])
    (registry / "data.json").write_text("[{")
    assert "LLaMA-Factory cannot read it" in str(validate_datasets(registry, ["data"])[0].problems[0])


def test_a_column_first_valued_after_the_first_block_is_found(registry: Path, monkeypatch) -> None:
    from datasets import load_dataset

    from llamafactory_fea.data import validate
    from llamafactory_fea.data.validate import first_block_lines, untyped_column_problems

    emotion_only = [edited(id=f"e{i}", aus=None, messages=target("<answer>sadness</answer>")) for i in range(3)]
    au_only = edited(id="a", emotion=None, aus=[1, 4], messages=target("<answer></answer>"))
    path = write_dataset(registry, "data", [*emotion_only, au_only])
    lines = path.read_text().splitlines()
    block = len(lines[0]) + 1  # datasets reads the block, then on to the end of the next line: rows 1-2
    assert first_block_lines(path, block) == 2
    rows = list(enumerate((json.loads(line) for line in lines), start=1))
    ((line, record_id, reason),) = untyped_column_problems(rows, 2)
    assert (line, record_id) == (4, "a")
    assert "column 'aus' has its first value here" in reason
    with pytest.raises(Exception, match="generating the dataset"):  # what LLaMA-Factory would meet (as the oracle)
        load_dataset("json", data_files=str(path), split="train", chunksize=block, cache_dir=str(registry / "c"))

    assert untyped_column_problems(rows, first_block_lines(path)) == []  # a small file is one block
    monkeypatch.setattr(validate, "JSON_BLOCK", block)
    (report,) = validate_datasets(registry, ["data"])
    assert (report.rows, report.valid) == (4, 3)
    assert str(report.problems[0]).startswith(f"{path}:4:a: column 'aus' has its first value here")
    reordered = [row for _, row in [rows[3], *rows[:3]]]
    assert untyped_column_problems(list(enumerate(reordered, start=1)), 2) == []  # the AU row first: typed
