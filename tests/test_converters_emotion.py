r"""Converters of the emotion benchmarks (RAF-DB, AffectNet, FER2013, FERPlus) on small fabricated files."""

import json
from pathlib import Path

import pytest
from PIL import Image

from llamafactory_fea.cli import main
from llamafactory_fea.data.converters.ferplus import majority


def face(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 150, 120)).save(path)
    return path


def rows(dataset_dir: Path, name: str) -> list[dict]:
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    path = dataset_dir / info[name]["file_name"]
    return [json.loads(line) for line in path.read_text().splitlines()]


def convert(*args: str) -> int:
    return main(["data", "convert", *args])


@pytest.fixture
def rafdb(tmp_path: Path) -> Path:
    root = tmp_path / "basic"
    lines = ["train_00001.jpg 5", "train_00002.jpg 4", "test_0001.jpg 7", "test_0002.jpg 1"]
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        face(root / "Image" / "aligned" / f"{Path(line.split()[0]).stem}_aligned.jpg")

    return root


def test_rafdb_maps_labels_and_registers_splits(rafdb: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "registry"
    assert convert("rafdb", str(rafdb), "--dataset-dir", str(out)) == 0
    train, test = rows(out, "rafdb_train"), rows(out, "rafdb_test")
    assert [row["emotion"] for row in train] == ["sadness", "happiness"]
    assert [row["emotion"] for row in test] == ["neutral", "surprise"]
    assert test[0]["messages"][1]["content"] == "<answer>neutral</answer>"  # label-only: the answer alone
    assert test[0]["aus"] is None  # emotion-only: AUs not labelled (null), not "no active AU"
    assert test[0]["au_labelled"] is False
    assert Path(test[0]["images"][0]).is_file()
    assert "rafdb: read 4, written train 2, test 2, rejected 0." in capsys.readouterr().out
    assert not list(out.rglob("*.tmp"))


def test_rafdb_rejects_bad_lines_and_writes_nothing_without_allow_rejects(rafdb: Path, tmp_path: Path, capsys) -> None:
    label_file = rafdb / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text(label_file.read_text() + "train_00009.jpg 9\ntrain_00010.jpg 2\n")  # bad label, no image
    (rafdb / "Image" / "aligned" / "train_00002_aligned.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "registry"
    assert convert("rafdb", str(rafdb), "--dataset-dir", str(out)) == 1
    printed = capsys.readouterr().out
    assert f"{label_file}:5: unknown emotion label 9" in printed
    assert f"{label_file}:6: image" in printed
    assert "does not exist" in printed
    assert f"{label_file}:2: image" in printed
    assert "cannot be read" in printed
    assert "Nothing written" in printed
    assert not (out / "dataset_info.json").exists()

    assert convert("rafdb", str(rafdb), "--dataset-dir", str(out), "--allow-rejects") == 0
    assert len(rows(out, "rafdb_train")) == 1


def test_rafdb_missing_label_file_is_reported(tmp_path: Path, capsys) -> None:
    assert convert("rafdb", str(tmp_path / "nowhere"), "--dataset-dir", str(tmp_path / "out")) == 1
    assert "list_patition_label.txt" in capsys.readouterr().out


def test_affectnet_csv_layout_excludes_non_emotions(tmp_path: Path, capsys) -> None:
    root = tmp_path / "AffectNet"
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    train = [("1/a.jpg", 1), ("1/b.jpg", 7), ("2/c.jpg", 8), ("2/d.jpg", 10), ("2/e.jpg", 6)]
    (lists / "training.csv").write_text(header + "".join(f"{p},0,0,16,16,1;2,{e},0.1,0.2\n" for p, e in train))
    (lists / "validation.csv").write_text(header + "3/f.jpg,0,0,16,16,1;2,0,0,0\n")
    for path, _ in [*train, ("3/f.jpg", 0)]:
        face(root / "Manually_Annotated_Images" / path)

    out = tmp_path / "registry"
    assert convert("affectnet", str(root), "--dataset-dir", str(out)) == 0
    assert [row["emotion"] for row in rows(out, "affectnet_train")] == ["happiness", "contempt", "anger"]
    assert [row["emotion"] for row in rows(out, "affectnet_test")] == ["neutral"]
    printed = capsys.readouterr().out
    assert "excluded 1 by rule: expression 8 (none) is not an emotion" in printed
    assert "excluded 1 by rule: expression 10 (non-face) is not an emotion" in printed
    assert "contempt" in rows(out, "affectnet_train")[0]["messages"][0]["content"]  # the 8-class question

    assert convert("affectnet", str(root), "--dataset-dir", str(out), "--classes", "7") == 0
    assert [row["emotion"] for row in rows(out, "affectnet_train")] == ["happiness", "anger"]


def test_affectnet_npy_layout(tmp_path: Path) -> None:
    import numpy as np

    root = tmp_path / "AffectNet"
    for folder, key, code in (("train_set", "0", "3"), ("train_set", "1", "5"), ("val_set", "7", "4")):
        (root / folder / "annotations").mkdir(parents=True, exist_ok=True)
        np.save(root / folder / "annotations" / f"{key}_exp.npy", np.array(code))
        face(root / folder / "images" / f"{key}.jpg")

    out = tmp_path / "registry"
    assert convert("affectnet", str(root), "--dataset-dir", str(out)) == 0
    assert [row["emotion"] for row in rows(out, "affectnet_train")] == ["surprise", "disgust"]
    assert [row["emotion"] for row in rows(out, "affectnet_test")] == ["fear"]


def pixels(value: int) -> str:
    return " ".join([str(value)] * 48 * 48)


def test_fer2013_writes_png_images(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "fer2013.csv"
    lines = [
        f"0,{pixels(10)},Training",
        f"3,{pixels(200)},PrivateTest",
        f"6,{pixels(90)},PublicTest",
        "9,1 2,Training",
    ]
    csv.write_text("emotion,pixels,Usage\n" + "\n".join(lines) + "\n")
    out = tmp_path / "registry"
    assert convert("fer2013", str(tmp_path), "--dataset-dir", str(out), "--allow-rejects") == 0
    train, test, val = rows(out, "fer2013_train"), rows(out, "fer2013_test"), rows(out, "fer2013_val")
    assert (train[0]["emotion"], test[0]["emotion"], val[0]["emotion"]) == ("anger", "happiness", "neutral")
    image = Image.open(out / test[0]["images"][0])
    assert image.size == (48, 48)
    assert image.mode == "L"
    assert image.getpixel((3, 3)) == 200
    assert f"{csv}:5: emotion '9' is not a FER2013 label 0-6." in capsys.readouterr().out


def test_ferplus_majority_rule() -> None:
    votes = dict.fromkeys(("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"), 0)
    assert majority({**votes, "contempt": 0, "unknown": 0, "NF": 0, "happiness": 6, "surprise": 4}) == "happiness"
    assert majority({**votes, "happiness": 5, "surprise": 5}) is None  # a tie is no majority
    assert majority({**votes, "happiness": 4, "surprise": 3, "fear": 1, "anger": 1, "sadness": 1}) == "happiness"
    assert majority({**votes, "unknown": 8, "happiness": 2}) is None
    assert majority({**votes, "NF": 10}) is None


def test_ferplus_pairs_votes_with_pixels(tmp_path: Path, capsys) -> None:
    (tmp_path / "fer2013.csv").write_text(
        "emotion,pixels,Usage\n"
        + "\n".join(
            f"0,{pixels(i)},{usage}" for i, usage in enumerate(["Training", "Training", "PrivateTest", "Training"])
        )
        + "\n"
    )
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    (tmp_path / "fer2013new.csv").write_text(
        header
        + "Training,fer0000000.png,0,9,0,0,0,0,0,1,0,0\n"
        + "Training,,0,0,0,0,0,0,0,0,0,10\n"
        + "PrivateTest,fer0000002.png,0,0,0,0,0,0,0,8,2,0\n"
        + "Training,fer0000003.png,5,5,0,0,0,0,0,0,0,0\n"
    )
    out = tmp_path / "registry"
    assert convert("ferplus", str(tmp_path), "--dataset-dir", str(out)) == 0
    assert [(row["id"], row["emotion"]) for row in rows(out, "ferplus_train")] == [("ferplus_fer0000000", "happiness")]
    assert rows(out, "ferplus_test")[0]["emotion"] == "contempt"
    assert rows(out, "ferplus_test")[0]["images"] == ["ferplus/images/FER2013Test/fer0000002.png"]
    printed = capsys.readouterr().out
    assert "excluded 1 by rule: no image name" in printed
    assert "excluded 1 by rule: no majority" in printed


def test_ferplus_refuses_mismatched_files(tmp_path: Path, capsys) -> None:
    (tmp_path / "fer2013.csv").write_text(f"emotion,pixels,Usage\n0,{pixels(1)},Training\n")
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    (tmp_path / "fer2013new.csv").write_text(header + "Training,a.png,10,0,0,0,0,0,0,0,0,0\n" * 2)
    assert convert("ferplus", str(tmp_path), "--dataset-dir", str(tmp_path / "out")) == 1
    assert "2 rows but" in capsys.readouterr().out
