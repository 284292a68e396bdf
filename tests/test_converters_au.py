r"""Converters of the AU benchmarks (DISFA, BP4D, RAF-AU, FABA-Instruct) on small fabricated files."""

import json
from pathlib import Path

from PIL import Image

from llamafactory_fea.cli import main


def face(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (180, 140, 110)).save(path)
    return path


def rows(dataset_dir: Path, name: str) -> list[dict]:
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    return [json.loads(line) for line in (dataset_dir / info[name]["file_name"]).read_text().splitlines()]


def convert(*args: str) -> int:
    return main(["data", "convert", *args])


def make_disfa(root: Path, frames: Path, subjects: dict[str, dict[int, list[int]]]) -> None:
    r"""subjects: subject -> AU -> intensity per frame (frames 1..n); every other DISFA AU is 0."""
    for subject, intensities in subjects.items():
        count = len(next(iter(intensities.values())))
        folder = root / "ActionUnit_Labels" / subject
        folder.mkdir(parents=True)
        for au in (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26):
            values = intensities.get(au, [0] * count)
            (folder / f"{subject}_au{au}.txt").write_text("".join(f"{i},{v}\n" for i, v in enumerate(values, 1)))

        for frame in range(1, count + 1):
            face(frames / subject / f"{frame}.png")


def test_disfa_threshold_and_fold(tmp_path: Path) -> None:
    root, frames, out = tmp_path / "DISFA", tmp_path / "frames", tmp_path / "registry"
    make_disfa(root, frames, {"SN003": {1: [0, 1, 2, 5], 12: [3, 0, 0, 2], 15: [4, 4, 4, 4]}, "SN002": {4: [2, 2]}})
    assert convert("disfa", str(root), "--frames-dir", str(frames), "--dataset-dir", str(out)) == 0
    test = rows(out, "disfa_test")  # fold 1 holds out part 3, which has SN003
    assert [row["aus"] for row in test] == [[12], [], [1], [1, 12]]  # AU15 is not among the 8 benchmark AUs
    assert test[0]["emotion"] is None
    assert test[0]["au_labelled"] is True
    assert test[1]["au_intensity"]["1"] == 1
    assert [row["aus"] for row in rows(out, "disfa_train")] == [[4], [4]]

    assert (
        convert(
            "disfa",
            str(root),
            "--frames-dir",
            str(frames),
            "--dataset-dir",
            str(out),
            "--au-threshold",
            "1",
            "--aus",
            "all",
        )
        == 0
    )
    assert [row["aus"] for row in rows(out, "disfa_test")] == [[12, 15], [1, 15], [1, 15], [1, 12, 15]]


def test_disfa_missing_frame_and_bad_line(tmp_path: Path, capsys) -> None:
    root, frames, out = tmp_path / "DISFA", tmp_path / "frames", tmp_path / "registry"
    make_disfa(root, frames, {"SN001": {1: [0, 3, 3]}})
    (frames / "SN001" / "2.png").unlink()
    assert convert("disfa", str(root), "--frames-dir", str(frames), "--dataset-dir", str(out), "--allow-rejects") == 0
    assert "SN001 frame 2: image" in capsys.readouterr().out
    assert [row["id"] for row in rows(out, "disfa_train")] == ["disfa_SN001_00001", "disfa_SN001_00003"]

    (root / "ActionUnit_Labels" / "SN001" / "SN001_au2.txt").write_text("1,0\n2,x\n")
    assert convert("disfa", str(root), "--frames-dir", str(frames), "--dataset-dir", str(out)) == 1
    assert "SN001_au2.txt:2: expected 'frame,intensity 0-5'" in capsys.readouterr().out


def make_bp4d(root: Path, name: str, header: list[str], lines: list[list[int]]) -> None:
    folder = root / "AUCoding" / "AU_OCC"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text(",".join(header) + "\n" + "".join(",".join(map(str, l)) + "\n" for l in lines))
    subject, task = name.split("_")
    for line in lines:
        face(root / "BP4D-training" / subject / task / f"{line[0]}.jpg")


def test_bp4d_occurrence_and_unknown_codes(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "BP4D", tmp_path / "registry"
    header = ["0", "1", "2", "4", "6", "7", "10", "12", "14", "15", "17", "23", "24", "33"]
    make_bp4d(
        root,
        "F007_T1",
        header,
        [[10, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1], [11, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]],
    )
    make_bp4d(root, "F001_T2", header, [[5, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]])
    assert convert("bp4d", str(root), "--dataset-dir", str(out)) == 0
    assert [(row["id"], row["aus"]) for row in rows(out, "bp4d_test")] == [("bp4d_F007_T1_00010", [1, 6, 12])]
    assert [row["aus"] for row in rows(out, "bp4d_train")] == [[4, 23, 24]]
    assert "excluded 1 by rule: an AU coded 9 (unknown) in the frame" in capsys.readouterr().out

    assert convert("bp4d", str(root), "--dataset-dir", str(out), "--unknown", "absent") == 0
    assert [row["aus"] for row in rows(out, "bp4d_test")] == [[1, 6, 12], []]


def test_bp4d_refuses_a_file_without_a_benchmark_au(tmp_path: Path, capsys) -> None:
    root = tmp_path / "BP4D"
    make_bp4d(root, "F001_T1", ["0", "1", "2"], [[1, 0, 1]])
    assert convert("bp4d", str(root), "--dataset-dir", str(tmp_path / "out")) == 1
    assert "F001_T1.csv:1: no column for AU4" in capsys.readouterr().out


def test_raf_au_codes_null_sides_and_outside_catalogue(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "RAF-AU", tmp_path / "registry"
    lines = ["0001.jpg 1+2+L12+R12", "0002.jpg null", "0003.jpg 4+39", "0004.jpg 1+x"]
    root.mkdir()
    (root / "RAFAU_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        face(root / "aligned" / f"{line[:4]}_aligned.jpg")

    (tmp_path / "test_ids.txt").write_text("0002.jpg\n")
    (tmp_path / "distribution.txt").write_text("0001.jpg 0.1 0.0 0.0 0.8 0.1 0.0\n0003.jpg 0.5 0.5 0 0 0 0\n")
    args = ["--dataset-dir", str(out), "--test-ids", str(tmp_path / "test_ids.txt"), "--allow-rejects"]
    assert convert("raf_au", str(root), *args, "--emotion-file", str(tmp_path / "distribution.txt")) == 0
    train = rows(out, "raf_au_train")
    assert [(row["aus"], row["emotion"]) for row in train] == [([1, 2, 12], "happiness"), ([4], None)]
    assert rows(out, "raf_au_test")[0]["aus"] == []
    assert rows(out, "raf_au_test")[0]["au_labelled"] is True
    printed = capsys.readouterr().out
    assert "removed AU39 from 1 label sets" in printed
    assert "RAFAU_label.txt:4: 'x' is not an AU code" in printed
    assert "neutral" not in train[0]["messages"][0]["content"]  # RAF-AU's label space has no neutral

    assert convert("raf_au", str(root), *args, "--strict-aus") == 0
    assert [row["aus"] for row in rows(out, "raf_au_train")] == [[1, 2, 12]]


def test_raf_au_hash_split_is_deterministic(tmp_path: Path) -> None:
    from llamafactory_fea.data.converters.base import hash_split

    keys = [f"{i:04d}" for i in range(400)]
    first = [hash_split(key, 0.2) for key in keys]
    assert first == [hash_split(key, 0.2) for key in keys]
    assert 40 < first.count("test") < 120
    assert first != [hash_split(key, 0.2, seed=1) for key in keys]


def faba_entry(split: str, key: str, **fields) -> dict:
    return {"source": "AffectNet", "image": f"FABAInstruct/{split}/images/{key}.jpg", "id": key, **fields}


def test_faba_merges_au_and_emotion_annotations(tmp_path: Path, capsys) -> None:
    root, out = tmp_path / "data" / "FABAInstruct", tmp_path / "registry"
    au_text = "AU4 - Brow Lowerer: the brows are drawn together. AU15 - Lip Corner Depressor: corners down."
    conversation = [{"from": "human", "value": "<image>What AUs?"}, {"from": "gpt", "value": au_text}]
    files = {
        "train/train_au_anno.json": [faba_entry("train", "a", conversations=conversation)],
        "train/train_emotion_anno.json": [
            faba_entry("train", "a", conversations=[{"from": "gpt", "value": "The person looks sad and tired."}]),
            faba_entry("train", "b", conversations=[{"from": "gpt", "value": "A calm and neutral face."}]),
        ],
        "eval/eval_au_anno.json": [faba_entry("eval", "c", label="1, 2, 43", gpt4="AU1 and AU2 raised, AU43 closed.")],
        "eval/eval_emotion_anno.json": [faba_entry("eval", "c", label=2, gpt4="Surprised face.")],
    }
    for name, entries in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(entries))

    for split, key in (("train", "a"), ("train", "b"), ("eval", "c")):
        face(root / split / "images" / f"{key}.jpg")

    assert convert("faba", str(root), "--dataset-dir", str(out)) == 1  # 'b' has no label and no --infer-emotion
    assert "no emotion label; pass --infer-emotion" in capsys.readouterr().out

    assert convert("faba", str(root), "--dataset-dir", str(out), "--infer-emotion") == 0
    train, test = rows(out, "faba_train"), rows(out, "faba_test")
    assert [(row["emotion"], row["aus"], row["au_labelled"]) for row in train] == [
        ("sadness", [4, 15], True),
        ("neutral", None, False),
    ]
    assert train[0]["messages"][1]["content"].startswith(f"<think>{au_text}")
    assert (test[0]["emotion"], test[0]["aus"]) == ("surprise", [1, 2, 43])  # label 2 = surprise in FABA's order
    assert test[0]["reference_au"] == "AU1 and AU2 raised, AU43 closed."


def test_faba_broken_json_is_located(tmp_path: Path, capsys) -> None:
    root = tmp_path / "FABAInstruct"
    (root / "train").mkdir(parents=True)
    (root / "train" / "train_emotion_anno.json").write_text('[{"image": "x.jpg",\n "label": }]')
    assert convert("faba", str(root), "--dataset-dir", str(tmp_path / "out")) == 1
    assert "train_emotion_anno.json:2: broken JSON" in capsys.readouterr().out
