r"""Hostile inputs to the converters, the validator and eval (issue 11, items 5-9): all or nothing, one-line errors,
counts that lose nothing, file modes, a bounded rejection list."""

import json
import os
import re
import stat
from pathlib import Path

import pytest

from llamafactory_fea.cli import build_parser, main
from llamafactory_fea.data.converters import CONVERTERS
from llamafactory_fea.data.converters.base import ConversionReport
from llamafactory_fea.data.files import atomic_write
from llamafactory_fea.data.records import register_dataset
from llamafactory_fea.demo.data import make_demo
from tests.demo_predictions import make_demo_predictions

from .test_converters_au import faba_entry, face, make_bp4d, make_disfa
from .test_converters_emotion import pixels
from .test_fea20k_converter import make_record, write_lines


LATIN1 = "café".encode("latin-1")  # b"caf\xe9": not UTF-8
BOM = b"\xef\xbb\xbf"


def cli(capsys, *argv: str) -> tuple[int, str]:
    r"""Run `llamafactory-fea` in-process: exit code and everything printed (stdout, then stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code

    captured = capsys.readouterr()
    return code, captured.out + captured.err


def one_line(output: str) -> str:
    r"""The output, asserted to be one line without a traceback."""
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def run_converter(*argv: str) -> ConversionReport:
    r"""Run a converter as the CLI does and return its report."""
    args = build_parser().parse_args(["data", "convert", *argv])
    return CONVERTERS[args.source].run(args)


def balanced(report: ConversionReport) -> bool:
    r"""Every record read is written, rejected or excluded by rule, exactly once."""
    excluded = sum(getattr(report, "excluded", {}).values())
    return report.read == sum(report.written.values()) + len(report.rejected) + excluded


def make_rafdb(root: Path, lines: list[str], data: bytes | None = None) -> Path:
    r"""A RAF-DB folder: the label list (or raw bytes) and an aligned image per listed name."""
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_bytes(data if data is not None else ("\n".join(lines) + "\n").encode())
    for line in lines:
        face(root / "Image" / "aligned" / f"{Path(line.split()[0]).stem}_aligned.jpg")

    return label_file


RAFDB_LINES = ["train_00001.jpg 5", "train_00002.jpg 4", "test_0001.jpg 7", "test_0002.jpg 1"]


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# item 5: all or nothing


def test_a_failure_between_splits_changes_nothing_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    make_rafdb(root, RAFDB_LINES)
    assert main(["data", "convert", "rafdb", str(root), "--dataset-dir", str(out)]) == 0
    before = snapshot(out)

    make_rafdb(root, ["train_00001.jpg 6", *RAFDB_LINES[1:]])  # a new train split
    calls, fsync = [], os.fsync

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second file written: the test split
            raise OSError(28, "No space left on device")

        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        run_converter("rafdb", str(root), "--dataset-dir", str(out))

    monkeypatch.setattr(os, "fsync", fsync)
    assert snapshot(out) == before  # the old train beside the old test, the old registry
    assert not list(out.rglob("*.tmp"))


def test_broken_registry_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    make_rafdb(root, RAFDB_LINES)
    out.mkdir()
    (out / "dataset_info.json").write_text('{"mine": {"file_name": "mine.json"},')
    code, output = cli(capsys, "data", "convert", "rafdb", str(root), "--dataset-dir", str(out))
    assert code == 1
    assert f"{out / 'dataset_info.json'}:1: broken JSON" in one_line(output)
    assert [path.name for path in out.iterdir()] == ["dataset_info.json"]  # no rafdb/train.jsonl beside it


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    make_rafdb(root, RAFDB_LINES)
    (out / "rafdb").mkdir(parents=True)
    stale = [out / "rafdb" / ".train.jsonl.k9x2ab7q.tmp", out / ".dataset_info.json.3fz0qmle.tmp"]
    for path in stale:
        path.write_text("half a file")

    other = out / "rafdb" / ".notes.tmp"  # not a temporary of ours
    other.write_text("keep me")
    assert run_converter("rafdb", str(root), "--dataset-dir", str(out)).written == {"train": 2, "test": 2}
    assert [path.exists() for path in stale] == [False, False]
    assert other.exists()


def test_fer2013_images_are_written_only_with_the_splits(tmp_path: Path) -> None:
    csv = tmp_path / "fer2013.csv"
    csv.write_text(f"emotion,pixels,Usage\n0,{pixels(10)},Training\n9,{pixels(20)},Training\n")
    out = tmp_path / "registry"
    report = run_converter("fer2013", str(csv), "--dataset-dir", str(out))
    assert (report.written, len(report.rejected)) == ({}, 1)
    assert not out.exists()  # no PNG of a run that wrote nothing

    assert run_converter("fer2013", str(csv), "--dataset-dir", str(out), "--allow-rejects").written == {"train": 1}
    assert [path.name for path in (out / "fer2013" / "images" / "Training").iterdir()] == ["00000.png"]


# item 6: one line, not a traceback


def test_non_utf8_lines_are_rejected_with_their_location(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    label_file = make_rafdb(root, RAFDB_LINES, b"train_00001.jpg 5\n" + LATIN1 + b" 4\ntest_0001.jpg 7\n")
    code, output = cli(capsys, "data", "convert", "rafdb", str(root), "--dataset-dir", str(out), "--allow-rejects")
    assert code == 0
    assert f"{label_file}:2: not UTF-8 (byte 0xe9 at column 4): save the file as UTF-8" in output
    assert "read 3, written train 1, test 1, rejected 1." in output


@pytest.mark.parametrize("source", ["fer2013", "affectnet", "bp4d", "disfa", "raf_au", "ferplus", "fea20k"])
def test_non_utf8_input_of_every_converter_is_a_message(source: str, tmp_path: Path, capsys) -> None:
    out, argv = tmp_path / "registry", []
    if source == "fer2013":
        bad = tmp_path / "fer2013.csv"
        bad.write_bytes(f"emotion,pixels,Usage\n0,{pixels(1)},Training\n".encode() + LATIN1 + b",1,Training\n")
        argv = [str(bad)]
    elif source == "ferplus":
        (tmp_path / "fer2013.csv").write_text(f"emotion,pixels,Usage\n0,{pixels(1)},Training\n")
        bad = tmp_path / "fer2013new.csv"
        header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
        bad.write_bytes(header.encode() + b"Training," + LATIN1 + b".png,10,0,0,0,0,0,0,0,0,0\n")
        argv = [str(tmp_path)]
    elif source == "affectnet":
        lists = tmp_path / "AffectNet" / "Manually_Annotated_file_lists"
        lists.mkdir(parents=True)
        bad = lists / "training.csv"
        bad.write_bytes(b"subDirectory_filePath,expression\n1/" + LATIN1 + b".jpg,1\n")
        (lists / "validation.csv").write_text("subDirectory_filePath,expression\n")
        argv = [str(tmp_path / "AffectNet")]
    elif source == "bp4d":
        root = tmp_path / "BP4D"
        make_bp4d(root, "F001_T1", ["0", "1", "2", "4", "6", "7", "10", "12", "14", "15", "17", "23", "24"], [])
        (root / "BP4D-training").mkdir()
        bad = root / "AUCoding" / "AU_OCC" / "F001_T1.csv"
        bad.write_bytes(bad.read_bytes() + b"1," + LATIN1 + b"\n")
        argv = [str(root)]
    elif source == "disfa":
        root, frames = tmp_path / "DISFA", tmp_path / "frames"
        make_disfa(root, frames, {"SN001": {1: [0, 3]}})
        bad = root / "ActionUnit_Labels" / "SN001" / "SN001_au2.txt"
        bad.write_bytes(b"1,0\n" + LATIN1 + b"\n")
        argv = [str(root), "--frames-dir", str(frames)]
    elif source == "raf_au":
        root = tmp_path / "RAF-AU"
        root.mkdir()
        bad = root / "RAFAU_label.txt"
        bad.write_bytes(LATIN1 + b".jpg 1+2\n")
        argv = [str(root)]
    else:
        bad = tmp_path / "train.jsonl"
        bad.write_bytes(json.dumps(make_record()).encode().replace(b"Sad", LATIN1) + b"\n")
        argv = ["--train", str(bad)]

    code, output = cli(capsys, "data", "convert", source, *argv, "--dataset-dir", str(out))
    assert code == 1
    assert "Traceback" not in output
    assert f"{bad}:" in output
    assert "not UTF-8" in output
    assert "save the file as UTF-8" in output


def test_byte_order_marks_are_read(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    make_rafdb(root, RAFDB_LINES, BOM + ("\n".join(RAFDB_LINES) + "\n").encode())
    assert run_converter("rafdb", str(root), "--dataset-dir", str(out)).written == {"train": 2, "test": 2}

    csv = tmp_path / "fer2013.csv"
    csv.write_bytes(BOM + f"emotion,pixels,Usage\n0,{pixels(10)},Training\n".encode())
    assert run_converter("fer2013", str(csv), "--dataset-dir", str(out)).written == {"train": 1}

    (out / "dataset_info.json").write_bytes(BOM + (out / "dataset_info.json").read_bytes())
    assert run_converter("rafdb", str(root), "--dataset-dir", str(out)).written == {"train": 2, "test": 2}
    assert not (out / "dataset_info.json").read_bytes().startswith(BOM)  # LLaMA-Factory's reader refuses one


def test_faba_json_that_is_not_utf8_is_one_line(tmp_path: Path, capsys) -> None:
    root = tmp_path / "FABAInstruct"
    (root / "train").mkdir(parents=True)
    bad = root / "train" / "train_emotion_anno.json"
    bad.write_bytes(b'[{"image": "x.jpg",\n "label": "' + LATIN1 + b'"}]')
    code, output = cli(capsys, "data", "convert", "faba", str(root), "--dataset-dir", str(tmp_path / "out"))
    assert code == 1
    assert f"{bad}:2: not UTF-8" in one_line(output)


def test_label_file_that_is_a_folder(tmp_path: Path, capsys) -> None:
    root = tmp_path / "RAF-AU"
    root.mkdir()
    (root / "RAFAU_label.txt").write_text("0001.jpg 1\n")
    face(root / "aligned" / "0001_aligned.jpg")
    (tmp_path / "distribution").mkdir()
    argv = ["data", "convert", "raf_au", str(root), "--dataset-dir", str(tmp_path / "out")]
    code, output = cli(capsys, *argv, "--emotion-file", str(tmp_path / "distribution"))
    assert code == 1
    assert f"{tmp_path / 'distribution'}: is a folder" in one_line(output)

    (root / "RAFAU_label.txt").unlink()
    (root / "RAFAU_label.txt").mkdir()
    code, output = cli(capsys, *argv)
    assert code == 1
    assert f"{root / 'RAFAU_label.txt'}" in one_line(output)


def test_dataset_dir_that_is_a_file(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    make_rafdb(root, RAFDB_LINES)
    out.write_text("not a folder")
    code, output = cli(capsys, "data", "convert", "rafdb", str(root), "--dataset-dir", str(out))
    assert code == 1
    assert f"{out}: is a file, not a folder" in one_line(output)
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize(("content", "reason"), [('{"a": ', "broken JSON"), ("[1, 2]", "expected a JSON object")])
def test_broken_or_non_object_registry_everywhere(content: str, reason: str, tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    make_rafdb(root, RAFDB_LINES)
    out.mkdir()
    info = out / "dataset_info.json"
    info.write_text(content)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text('{"predict": "<answer>anger</answer>", "label": "<answer>anger</answer>"}\n')
    for argv in (
        ["data", "convert", "rafdb", str(root), "--dataset-dir", str(out)],
        ["data", "convert", "fea20k", "--train", str(tmp_path / "none.jsonl"), "--dataset-dir", str(out)],
        ["data", "validate", "--dataset-dir", str(out), "--dataset", "rafdb_test"],
        ["eval", str(predictions), "--dataset-dir", str(out), "--dataset", "x", "--output-dir", str(tmp_path / "r")],
    ):
        code, output = cli(capsys, *argv)
        assert code == 1, argv
        assert f"{info}" in one_line(output)
        assert reason in output

    assert info.read_text() == content


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--frame-pattern", "{subj}/{frame}.png", "argument --frame-pattern: unknown field {subj}"),
        ("--frame-pattern", "{frame:q}.png", "argument --frame-pattern:"),
        ("--stride", "0", "argument --stride: 0 is not a whole number >= 1"),
        ("--au-threshold", "6", "argument --au-threshold: 6 is not a whole number from 1 to 5"),
        ("--au-threshold", "-1", "argument --au-threshold: -1 is not a whole number from 1 to 5"),
        ("--fold", "4", "argument --fold: invalid choice"),
    ],
)
def test_disfa_options_are_checked(option: str, value: str, message: str, tmp_path: Path, capsys) -> None:
    root, frames = tmp_path / "DISFA", tmp_path / "frames"
    make_disfa(root, frames, {"SN001": {1: [0, 3]}})
    argv = ["data", "convert", "disfa", str(root), "--frames-dir", str(frames), "--dataset-dir", str(tmp_path / "o")]
    code, output = cli(capsys, *argv, option, value)
    assert code == 1
    assert message in one_line(output)


def test_bp4d_and_raf_au_options_are_checked(tmp_path: Path, capsys) -> None:
    code, output = cli(capsys, "data", "convert", "bp4d", str(tmp_path), "--stride", "0")
    assert (code, "argument --stride" in one_line(output)) == (1, True)
    code, output = cli(capsys, "data", "convert", "bp4d", str(tmp_path), "--frame-pattern", "{frame}{x}.jpg")
    assert (code, "argument --frame-pattern: unknown field {x}" in one_line(output)) == (1, True)
    code, output = cli(capsys, "data", "convert", "raf_au", str(tmp_path), "--test-fraction", "1.5")
    assert (code, "argument --test-fraction: 1.5 is not a number from 0 to 1" in one_line(output)) == (1, True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("demo")
    make_demo(root / "registry")
    return root / "registry", make_demo_predictions(root / "registry", root / "generated_predictions.jsonl")


def test_eval_refuses_an_output_dir_that_is_a_file_before_scoring(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    (tmp_path / "out").write_text("a file")
    argv = ["eval", str(predictions), "--dataset-dir", str(registry), "--dataset", "fea_demo_test"]
    code, output = cli(capsys, *argv, "--output-dir", str(tmp_path / "out" / "rafdb"))
    assert code == 1
    assert f"{tmp_path / 'out'}: is a file, not a folder" in one_line(output)
    assert "--output-dir" in output


def test_eval_refuses_max_samples_below_one(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    argv = ["eval", str(predictions), "--dataset-dir", str(registry), "--dataset", "fea_demo_test"]
    code, output = cli(capsys, *argv, "--output-dir", str(tmp_path), "--max-samples", "-1")
    assert code == 1
    assert "argument --max-samples: -1 is not a whole number >= 1" in one_line(output)


def test_eval_and_validate_read_non_utf8_and_bom_files(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    argv = ["--dataset-dir", str(registry), "--dataset", "fea_demo_test", "--output-dir", str(tmp_path / "out")]
    bommed = tmp_path / "bom.jsonl"
    bommed.write_bytes(BOM + predictions.read_bytes())
    code, output = cli(capsys, "eval", str(bommed), *argv)
    assert code == 0, output

    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(predictions.read_bytes().replace(b"<answer>", b"<answer>\xe9", 1))
    code, output = cli(capsys, "eval", str(broken), *argv)
    assert code == 1
    assert f"{broken}:1: not UTF-8 (byte 0xe9" in one_line(output)

    data = tmp_path / "data"
    data.mkdir()
    (data / "rows.jsonl").write_bytes(LATIN1 + b"\n")
    register_dataset(data, "rows", "rows.jsonl")
    code, output = cli(capsys, "data", "validate", "--dataset-dir", str(data), "--dataset", "rows")
    assert code == 1
    assert "Traceback" not in output
    assert f"{data / 'rows.jsonl'}:1: not UTF-8" in output


# item 7: counts that lose nothing


def test_disfa_bad_line_rejects_its_frame_not_its_subject(tmp_path: Path) -> None:
    root, frames, out = tmp_path / "DISFA", tmp_path / "frames", tmp_path / "registry"
    make_disfa(root, frames, {"SN001": {1: [0, 3, 3]}, "SN002": {4: [2, 2]}})
    au2 = root / "ActionUnit_Labels" / "SN001" / "SN001_au2.txt"
    au2.write_text("1,0\n2,x\n3,0\ngarbage\n")
    report = run_converter(
        "disfa", str(root), "--frames-dir", str(frames), "--dataset-dir", str(out), "--allow-rejects"
    )
    assert (report.read, report.written, len(report.rejected)) == (6, {"train": 4}, 2)
    assert sorted(message.split(": expected")[0] for message in report.rejected) == [f"{au2}:2", f"{au2}:4"]
    ids = [json.loads(line)["id"] for line in (out / "disfa" / "train.jsonl").read_text().splitlines()]
    assert ids == ["disfa_SN001_00001", "disfa_SN001_00003", "disfa_SN002_00001", "disfa_SN002_00002"]


def converter_runs(tmp_path: Path) -> dict[str, list[str]]:
    r"""For every converter, arguments over a fixture with good, rejected and excluded records."""
    runs = {}
    root = tmp_path / "basic"
    make_rafdb(root, [*RAFDB_LINES, "train_00009.jpg 9"])
    (root / "Image" / "aligned" / "test_0002_aligned.jpg").unlink()
    runs["rafdb"] = [str(root)]

    root = tmp_path / "AffectNet"
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    entries = [("1/a.jpg", "1"), ("1/b.jpg", "8"), ("1/c.jpg", "x"), ("1/d.jpg", "7")]
    (lists / "training.csv").write_text(
        "subDirectory_filePath,expression\n" + "".join(f"{p},{e}\n" for p, e in entries)
    )
    (lists / "validation.csv").write_text("subDirectory_filePath,expression\n2/e.jpg,0\n")
    for path in ("1/a.jpg", "1/d.jpg", "2/e.jpg"):
        face(root / "Manually_Annotated_Images" / path)
    runs["affectnet"] = [str(root), "--classes", "7"]

    folder = tmp_path / "fer"
    folder.mkdir()
    usages = ["Training", "PublicTest", "PrivateTest", "Elsewhere"]
    (folder / "fer2013.csv").write_text(
        "emotion,pixels,Usage\n" + "".join(f"{i},{pixels(i)},{usage}\n" for i, usage in enumerate(usages))
    )
    runs["fer2013"] = [str(folder), "--public-test", "skip"]

    folder = tmp_path / "ferplus"
    folder.mkdir()
    usages = ["Training", "Training", "PrivateTest", "Training"]
    (folder / "fer2013.csv").write_text(
        "emotion,pixels,Usage\n" + "".join(f"0,{pixels(i)},{usage}\n" for i, usage in enumerate(usages))
    )
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    (folder / "fer2013new.csv").write_text(
        header
        + "Training,a.png,0,9,0,0,0,0,0,1,0,0\n"
        + "Training,,0,0,0,0,0,0,0,0,0,10\n"
        + "PrivateTest,c.png,0,0,0,0,0,0,0,8,x,0\n"
        + "Training,d.png,5,5,0,0,0,0,0,0,0,0\n"
    )
    runs["ferplus"] = [str(folder)]

    root, frames = tmp_path / "DISFA", tmp_path / "frames"
    make_disfa(root, frames, {"SN001": {1: [0, 3, 3]}, "SN003": {4: [2, 2]}, "SN004": {1: [1]}})
    (root / "ActionUnit_Labels" / "SN001" / "SN001_au2.txt").write_text("1,0\n2,x\n3,0\nnonsense\n")
    (root / "ActionUnit_Labels" / "SN004" / "SN004_au9.txt").unlink()
    runs["disfa"] = [str(root), "--frames-dir", str(frames)]

    root = tmp_path / "BP4D"
    header = ["0", "1", "2", "4", "6", "7", "10", "12", "14", "15", "17", "23", "24"]
    make_bp4d(root, "F007_T1", header, [[10, *[0] * 12], [11, 9, *[0] * 11], [12, 5, *[0] * 11]])
    make_bp4d(root, "F001_T2", ["0", "1", "2"], [[5, 0, 1], [6, 1, 1]])
    runs["bp4d"] = [str(root)]

    root = tmp_path / "RAF-AU"
    root.mkdir()
    (root / "RAFAU_label.txt").write_text("0001.jpg 1+2\n0002.jpg null\n0003.jpg 4 5\n0004.jpg 1+x\n")
    for stem in ("0001", "0002", "0003", "0004"):
        face(root / "aligned" / f"{stem}_aligned.jpg")
    (tmp_path / "distribution.txt").write_text("0001.jpg 0.1 0 0 0.8 0.1 0\n0002.jpg 0.5 0.5 0 0 0 0\nbroken\n")
    runs["raf_au"] = [str(root), "--emotion-file", str(tmp_path / "distribution.txt")]

    root = tmp_path / "data" / "FABAInstruct"
    text = [{"from": "gpt", "value": "Brows drawn together (AU4)."}]
    files = {
        "train/train_au_anno.json": [faba_entry("train", "a", conversations=text), faba_entry("train", "b", label=[])],
        "train/train_emotion_anno.json": [
            faba_entry("train", "a", label=1),
            faba_entry("train", "b", label=9),
            faba_entry("train", "c", label=0),
            "not an object",
        ],
        "eval/eval_emotion_anno.json": [faba_entry("eval", "d", label=2)],
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(content))
    for split, key in (("train", "a"), ("train", "b"), ("eval", "d")):
        face(root / split / "images" / f"{key}.jpg")
    runs["faba"] = [str(root)]

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    face(src / "images" / "face.png")
    train = write_lines(src / "train.jsonl", [make_record("g1"), make_record("b1", labels=["Bored"]), "{"])
    runs["fea20k"] = ["--train", str(train), "--test", str(src / "absent.jsonl")]
    return runs


def test_every_converter_counts_every_record_once(tmp_path: Path) -> None:
    runs = converter_runs(tmp_path)
    assert set(runs) == set(CONVERTERS)
    for name, argv in runs.items():
        report = run_converter(name, *argv, "--dataset-dir", str(tmp_path / "registry"), "--allow-rejects")
        assert report.rejected, name  # each fixture has bad records
        assert report.written, name
        assert balanced(report), f"{name}: {report.summary()}"


# item 8: file modes


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask_and_keep_existing_modes(umask: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        registry = tmp_path / "registry"
        atomic_write(registry / "new.txt", "x")
        register_dataset(registry, "a", "a.jsonl")
        assert stat.S_IMODE((registry / "new.txt").stat().st_mode) == 0o666 & ~umask
        assert stat.S_IMODE((registry / "dataset_info.json").stat().st_mode) == 0o666 & ~umask

        (registry / "dataset_info.json").chmod(0o644)
        register_dataset(registry, "b", "b.jsonl")
        assert stat.S_IMODE((registry / "dataset_info.json").stat().st_mode) == 0o644
        (registry / "new.txt").chmod(0o640)
        atomic_write(registry / "new.txt", "y")
        assert stat.S_IMODE((registry / "new.txt").stat().st_mode) == 0o640
    finally:
        os.umask(previous)


# item 9: a bounded rejection list, the full one in a file


def test_long_rejection_list_is_cut_and_written_in_full(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "basic", tmp_path / "registry"
    make_rafdb(
        root, RAFDB_LINES, ("\n".join(RAFDB_LINES + [f"train_{i:05d}.jpg 9" for i in range(45)]) + "\n").encode()
    )
    code, output = cli(capsys, "data", "convert", "rafdb", str(root), "--dataset-dir", str(out))
    assert code == 1
    printed = [line for line in output.splitlines() if line.startswith("  rejected ")]
    assert len(printed) == 20
    listing = out / "rafdb" / "rejected.txt"
    assert f"... and 25 more rejected: every one is listed in {listing}" in output
    assert len(listing.read_text().splitlines()) == 45
    assert not (out / "dataset_info.json").exists()  # the list is a report, not an output

    make_rafdb(root, RAFDB_LINES)
    code, output = cli(capsys, "data", "convert", "rafdb", str(root), "--dataset-dir", str(out))
    assert code == 0
    assert not listing.exists()  # no stale list beside a clean conversion


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("stage: grpo\nreward_funcs: [\n", ":3: broken YAML"),
        ("- a\n", ": expected a mapping"),
        (None, ": file not found"),
    ],
)
def test_loop_and_plan_read_a_bad_yaml_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, text, reason):
    from llamafactory_fea.cli import main

    config = tmp_path / "config.yaml"
    if text is not None:
        config.write_text(text, encoding="utf-8")

    for command in ("loop", "plan"):
        assert main([command, str(config)]) == 1
        captured = capsys.readouterr()
        (line,) = (captured.out + captured.err).strip().splitlines()
        assert re.search(rf"{re.escape(str(config))}{reason}", line), line
