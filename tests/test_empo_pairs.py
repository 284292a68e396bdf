r"""`llamafactory-fea data pairs`: each edit changes exactly its entity, read back through the labels module."""

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from llamafactory_fea.cli import main
from llamafactory_fea.data.pairs import EDITS, REGION_ROWS, au_region, claimed_labels
from llamafactory_fea.fea.labels import extract_labels

from .conftest import DATA_REGISTRY, EXAMPLES


def registry_copy(root: Path) -> Path:
    r"""A dataset folder with the demo set registered (the edited images are written there)."""
    shutil.copytree(DATA_REGISTRY / "demo", root / "demo")
    shutil.copy(DATA_REGISTRY / "dataset_info.json", root / "dataset_info.json")
    return root


def make_pairs(dataset_dir: Path, *options: str, name: str = "demo_pairs") -> int:
    return main(
        ["data", "pairs", "--dataset", "fea_demo", "--name", name, "--dataset-dir", str(dataset_dir), *options]
    )


def read_pairs(dataset_dir: Path, name: str = "demo_pairs") -> list[dict]:
    lines = (dataset_dir / "pairs" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    dataset_dir = registry_copy(tmp_path_factory.mktemp("pairs"))
    assert make_pairs(dataset_dir, "--pairs-per-row", "3") == 0
    return dataset_dir, read_pairs(dataset_dir)


def labels_of(response: str) -> dict:
    return extract_labels({}, response)  # plain data: the labels the response itself gives


def test_every_edit_is_made(pairs):
    _, rows = pairs
    made = {(row["pair_kind"], json.loads(row["edit"])["type"]) for row in rows}
    assert made == {(kind, edit) for kind, edits in EDITS.items() for edit in edits}


def test_response_pairs_differ_in_the_edited_entity_only(pairs):
    _, rows = pairs
    for row in (row for row in rows if row["pair_kind"] == "response"):
        edit = json.loads(row["edit"])
        chosen, rejected = labels_of(row["chosen"]["content"]), labels_of(row["rejected"]["content"])
        assert chosen == {"emotion": row["emotion"], "aus": row["aus"]}
        assert (row["rejected_messages"], row["rejected_images"]) == (row["messages"], row["images"])
        if edit["type"] == "emotion_swap":
            assert (edit["from"], edit["to"]) == (row["emotion"], rejected["emotion"])
            assert edit["to"] != edit["from"]
            assert rejected["aus"] == chosen["aus"]
        elif edit["type"] == "au_swap":
            assert edit["from"] in chosen["aus"]
            assert edit["to"] not in chosen["aus"]
            assert set(rejected["aus"]) == set(chosen["aus"]) - {edit["from"]} | {edit["to"]}
            assert rejected["emotion"] == chosen["emotion"]
        else:
            assert set(rejected["aus"] or ()) == set(chosen["aus"]) - {edit["au"]}
            assert rejected["emotion"] == chosen["emotion"]


def test_au_swap_writes_name_and_number():
    from llamafactory_fea.data.pairs import swap_au

    assert swap_au("<think>Brows down (AU4).</think>", 4, 12) == "<think>Brows down (AU12 lip corner puller).</think>"
    assert swap_au("Brows down (AU4, AU43).", 4, 6, with_name=False) == "Brows down (AU6, AU43)."
    assert swap_au("Eyes closed (AU43).", 4, 6) is None  # AU43 is not AU4


def test_instruction_pairs_differ_in_the_claim_only(pairs):
    _, rows = pairs
    for row in (row for row in rows if row["pair_kind"] == "instruction"):
        edit = json.loads(row["edit"])
        chosen_q, rejected_q = row["messages"][-1]["content"], row["rejected_messages"][-1]["content"]
        assert row["chosen"] == row["rejected"]
        assert row["images"] == row["rejected_images"]
        assert chosen_q.rsplit("\n", 1)[0] == rejected_q.rsplit("\n", 1)[0]  # the question before the claim
        chosen, rejected = claimed_labels(chosen_q), claimed_labels(rejected_q)
        if edit["type"] == "false_emotion":
            assert chosen == {"emotion": row["emotion"], "aus": None}
            assert rejected["emotion"] == edit["claim"] != row["emotion"]
            assert rejected["aus"] is None
        else:
            assert chosen == {"emotion": None, "aus": [edit["true"]]}
            assert edit["true"] in row["aus"]
            assert rejected == {"emotion": None, "aus": [edit["claim"]]}
            assert edit["claim"] not in row["aus"]


def test_instruction_chosen_plain(tmp_path):
    dataset_dir = registry_copy(tmp_path)
    assert make_pairs(dataset_dir, "--kinds", "instruction", "--instruction-chosen", "plain") == 0
    source = {json.loads(line)["id"]: json.loads(line) for line in (dataset_dir / "demo" / "fea_demo.jsonl").open()}
    for row in read_pairs(dataset_dir):
        assert row["messages"] == source[row["source_id"]]["messages"][:-1]
        assert claimed_labels(row["rejected_messages"][-1]["content"]) != {"emotion": None, "aus": None}


def test_image_pairs_differ_in_the_image_only(pairs):
    dataset_dir, rows = pairs
    emotions = {Path(row["images"][0]).name: row["emotion"] for row in rows}
    for row in (row for row in rows if row["pair_kind"] == "image"):
        edit = json.loads(row["edit"])
        assert row["chosen"] == row["rejected"]
        assert row["messages"] == row["rejected_messages"]
        chosen = Image.open(dataset_dir / row["images"][0]).convert("RGB")
        rejected = Image.open(dataset_dir / row["rejected_images"][0]).convert("RGB")
        if edit["type"] == "other_face":
            assert emotions[Path(row["rejected_images"][0]).name] == edit["emotion"] != row["emotion"]
            continue

        assert edit["au"] in row["aus"]
        assert edit["region"] == au_region(edit["au"])
        top, bottom = (round(share * chosen.height) for share in REGION_ROWS[edit["region"]])
        difference = ImageChops.difference(chosen, rejected)
        assert difference.getbbox() is not None
        assert top <= difference.getbbox()[1]
        assert difference.getbbox()[3] <= bottom
        assert len(set(rejected.crop((0, top, rejected.width, bottom)).getdata())) == 1  # the region is hidden


def test_same_seed_same_output_other_seed_other_output(tmp_path):
    outputs = []
    for folder, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        dataset_dir = registry_copy(tmp_path / folder)
        assert make_pairs(dataset_dir, "--seed", seed, "--pairs-per-row", "2") == 0
        images = sorted((dataset_dir / "pairs" / "demo_pairs_images").iterdir())
        outputs.append(((dataset_dir / "pairs" / "demo_pairs.jsonl").read_bytes(), [p.read_bytes() for p in images]))

    assert outputs[0] == outputs[1]
    assert outputs[0][0] != outputs[2][0]


def test_response_subset_and_registry(pairs):
    dataset_dir, rows = pairs
    info = json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["demo_pairs"]["ranking"]
    assert info["demo_pairs_response"]["ranking"]
    subset = read_pairs(dataset_dir, "demo_pairs_response")
    assert subset == [row for row in rows if row["pair_kind"] == "response"]
    assert "fea_demo" in info  # the source entry is kept


def test_rows_that_cannot_give_pairs_are_counted(tmp_path, capsys):
    dataset_dir = registry_copy(tmp_path)
    source = dataset_dir / "demo" / "fea_demo.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()][:3]
    rows[0]["messages"][1]["content"] = "<answer>anger</answer>"  # no reasoning
    rows[1]["messages"][1]["content"] = rows[1]["messages"][1]["content"].replace("<answer>anger", "<answer>fear")
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert make_pairs(dataset_dir, "--kinds", "response") == 0
    out = capsys.readouterr().out
    assert "row: no reasoning (<think>) in the response x1" in out
    assert "row: the <answer> does not name the labelled emotion x1" in out
    assert {row["source_id"] for row in read_pairs(dataset_dir)} == {rows[2]["id"]}


def test_refuses_to_replace_a_different_entry(tmp_path, capsys):
    dataset_dir = registry_copy(tmp_path)
    assert make_pairs(dataset_dir, name="fea_demo_test") == 1
    assert "already has a different entry 'fea_demo_test'" in capsys.readouterr().out
    assert not (dataset_dir / "pairs").exists()  # nothing written


def eval_sample(sample_id: str, completion: str, emotion: str | None, aus: set[int] | None):
    from llamafactory_fea.eval.predictions import EvalSample
    from llamafactory_fea.fea.parsing import parse_completion

    labels = None if aus is None else frozenset(aus)
    return EvalSample(0, sample_id, completion, parse_completion(completion), emotion, labels)


def test_au_hallucination_by_hand():
    from llamafactory_fea.eval.hallucination import au_hallucination

    samples = [
        eval_sample("a", "<think>(AU4) (AU12)</think><answer>anger</answer>", "anger", {4}),  # AU12 hallucinated
        eval_sample("b", "<think>(AU4)</think><answer>anger</answer>", "anger", {4, 7}),  # none (AU7 missed)
        eval_sample("c", "<think>(AU6) (AU12) (AU25)</think><answer>happy</answer>", "happiness", set()),  # 3
        eval_sample("d", "<think>(AU12)</think><answer>happy</answer>", "happiness", None),  # not AU-labelled
    ]
    result = au_hallucination(samples)
    assert result["responses"] == 3
    assert result["response_rate"] == pytest.approx(2 / 3)
    assert result["claim_rate"] == pytest.approx(4 / 6)  # 6 AUs claimed, 4 of them not labelled
    assert result["mean_per_response"] == pytest.approx(4 / 3)
    assert result["per_au"]["AU12"] == {"rate": 2 / 3, "claimed": 2, "unlabelled": 3}  # a, b, c lack it; a, c claim it
    assert result["per_au"]["AU4"] == {"rate": 0.0, "claimed": 0, "unlabelled": 1}
    assert au_hallucination(samples[3:]) is None


def test_misleading_questions_and_robustness_by_hand(tmp_path):
    from llamafactory_fea.data.files import RecordError
    from llamafactory_fea.data.pairs import claimed_labels, read_source
    from llamafactory_fea.eval.hallucination import (
        images_in_pairs,
        make_misleading_set,
        misleading_robustness,
        misleading_rows,
    )

    dataset_dir = registry_copy(tmp_path)
    rows, _ = read_source(dataset_dir, "fea_demo_test")
    misled, skipped = misleading_rows(rows, seed=0)
    assert len(misled) == len(rows)
    assert not skipped
    assert misleading_rows(rows, seed=0)[0] == misled  # deterministic
    for row, source in zip(misled, rows):
        edit = json.loads(row["edit"])
        claimed = claimed_labels(row["messages"][-2]["content"])
        if edit["type"] == "false_emotion":
            assert claimed["emotion"] == edit["claim"] != source.emotion
        else:
            assert claimed["aus"] == [edit["claim"]]
            assert edit["claim"] not in source.aus

    assert make_pairs(dataset_dir) == 0  # pairs of the training set share no image with the test set
    assert images_in_pairs(rows, dataset_dir, ["demo_pairs"]) == set()
    assert make_misleading_set(dataset_dir, "fea_demo_test", "demo_misleading", pairs=["demo_pairs"])[0] == len(rows)
    assert "demo_misleading" in json.loads((dataset_dir / "dataset_info.json").read_text(encoding="utf-8"))
    with pytest.raises(RecordError, match="make the pairs from a training split only"):
        make_misleading_set(dataset_dir, "fea_demo", "demo_misleading_train", pairs=["demo_pairs"])
    test_images = images_in_pairs(read_source(dataset_dir, "fea_demo")[0], dataset_dir, ["demo_pairs"])
    assert test_images  # the check finds the training images themselves

    claims = {
        "a:m": {"source_id": "a", "edit": json.dumps({"type": "false_emotion", "claim": "fear"})},
        "b:m": {"source_id": "b", "edit": json.dumps({"type": "false_emotion", "claim": "disgust"})},
        "c:m": {"source_id": "c", "edit": json.dumps({"type": "false_au", "claim": 12})},
    }
    plain = [
        eval_sample("a", "<answer>anger</answer>", "anger", None),
        eval_sample("b", "<answer>sad</answer>", "sadness", None),
        eval_sample("c", "<answer>neutral</answer>", "sadness", {1}),
    ]
    misleading = [
        eval_sample("a:m", "<answer>fear</answer>", "anger", None),  # follows the false emotion
        eval_sample("b:m", "<answer>sad</answer>", "sadness", None),
        eval_sample("c:m", "<think>(AU12)</think><answer>sad</answer>", "sadness", {1}),  # claims the false AU
    ]
    result = misleading_robustness(plain, misleading, claims)
    assert result["samples"] == 3
    assert result["plain_accuracy"] == pytest.approx(2 / 3)
    assert result["misleading_accuracy"] == pytest.approx(2 / 3)
    assert result["accuracy_drop"] == pytest.approx(0.0)
    assert result["follows_false_emotion"] == pytest.approx(1 / 2)
    assert result["claims_false_au"] == pytest.approx(1.0)


def test_loop_empo_step_makes_pairs_from_the_round_data(tmp_path, monkeypatch):
    from llamafactory_fea.loop import Loop, LoopArguments, ModelChain

    args = LoopArguments(
        output_dir=str(tmp_path / "loop"),
        seed_dataset="fea_demo",
        dataset_dir=str(DATA_REGISTRY),
        empo=str(EXAMPLES / "fea_empo.yaml"),
        empo_args={"max_steps": 1},
        empo_pairs={"kinds": "response,image", "pairs_per_row": 2},
    )
    loop = Loop(args)
    loop.prepare_registry()
    steps = []
    monkeypatch.setattr(Loop, "run_step", lambda self, round_dir, step, config: steps.append((step, config)))
    round_dir = loop.output_dir / "round_1"
    chain = ModelChain("base", ["round_1/sft", "round_1/grpo"])
    after, dataset = loop.run_empo(round_dir, 1, chain, ["fea_demo"])

    assert dataset == "fea_demo_pairs_round1"
    ((step, config),) = steps
    assert (step, config["stage"], config["dataset"], config["max_steps"]) == ("empo", "empo", dataset, 1)
    assert config["adapter_name_or_path"] == "round_1/sft,round_1/grpo"
    assert (config["dataset_dir"], config["media_dir"]) == (str(loop.registry), str(DATA_REGISTRY.absolute()))
    assert after.adapters == ["round_1/sft", "round_1/grpo", str(round_dir / "empo")]  # create_new_adapter
    rows = read_pairs(loop.registry, dataset)
    assert {row["pair_kind"] for row in rows} == {"response", "image"}
    assert max(Counter(row["source_id"] for row in rows if row["pair_kind"] == "response").values()) == 2
    for row in rows:  # LLaMA-Factory finds every image: under media_dir, else by its (absolute) path
        for image in row["images"] + row["rejected_images"]:
            assert (DATA_REGISTRY / image).is_file()

    assert not (DATA_REGISTRY / "pairs").exists()  # the user's registry is not written
    assert loop.args.pair_options(1).seed == 1  # each round draws its own pairs

    loop.state["done"].append("round_1/empo")  # a finished step: its pairs are not made again
    monkeypatch.setattr(Loop, "make_pairs", lambda *args: pytest.fail("pairs made again"))
    assert loop.run_empo(round_dir, 1, chain, ["fea_demo"])[1] == dataset
    named = Loop(LoopArguments(**{**vars(args), "empo_args": {"dataset": "mine"}, "output_dir": str(tmp_path / "b")}))
    assert named.run_empo(round_dir, 1, chain, ["fea_demo"])[1] == "mine"
    with pytest.raises(ValueError, match="unknown `empo_pairs` keys"):
        LoopArguments(**{**vars(args), "empo_pairs": {"pairs": 2}})


def test_eval_reports_hallucination_and_misleading_questions(tmp_path, capsys):
    from llamafactory_fea.data.records import register_dataset

    def row(name: str, emotion: str | None, aus: list[int] | None) -> dict:
        answer = f"<think>Seen.</think><answer>{emotion or 'neutral'}</answer>"
        messages = [{"role": "user", "content": "<image>Which emotion?"}, {"role": "assistant", "content": answer}]
        return {"id": name, "messages": messages, "images": [f"faces/{name}.png"], "emotion": emotion, "aus": aus}

    test_rows = [row("a", "anger", None), row("b", "happiness", None), row("c", "sadness", None)]
    test_rows += [row("d", None, [4]), row("e", None, [])]  # AU-only rows; e: labelled, no active AU
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows), encoding="utf-8")
    register_dataset(tmp_path, "t", "test.jsonl")
    data = ["--dataset-dir", str(tmp_path)]
    assert main(["data", "misleading", "--dataset", "t", "--name", "t_misleading", *data]) == 0
    assert "4 misleading questions" in capsys.readouterr().out  # e has nothing to claim against
    misleading_rows = [json.loads(line) for line in (tmp_path / "misleading" / "t_misleading.jsonl").open()]
    claims = {r["source_id"]: json.loads(r["edit"]) for r in misleading_rows}
    assert [claims[name]["type"] for name in "abcd"] == ["false_emotion"] * 3 + ["false_au"]

    def predictions(path: Path, rows: list[dict], answers: list[str]) -> str:
        lines = [{"prompt": "", "predict": p, "label": r["messages"][-1]["content"]} for r, p in zip(rows, answers)]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        return str(path)

    plain = predictions(
        tmp_path / "plain.jsonl",
        test_rows,
        [
            "<answer>anger</answer>",
            "<answer>happiness</answer>",
            "<answer>neutral</answer>",  # wrong on the plain question
            "<think>(AU4) (AU12)</think><answer>anger</answer>",  # AU12 hallucinated
            "<think>none</think><answer>neutral</answer>",
        ],
    )
    misled = predictions(
        tmp_path / "misled.jsonl",
        misleading_rows,
        [
            f"<answer>{claims['a']['claim']}</answer>",  # follows the false emotion
            "<answer>happiness</answer>",
            f"<answer>{next(e for e in ('anger', 'fear') if e != claims['c']['claim'])}</answer>",  # wrong, not misled
            "<think>(AU4)</think><answer>anger</answer>",  # d has no emotion label: not in the accuracy
        ],
    )
    output = tmp_path / "eval"
    command = ["eval", plain, "--dataset", "t", *data, "--output-dir", str(output), "--misleading", misled]
    assert main(command) == 1
    assert "--misleading-dataset together" in capsys.readouterr().out
    assert main([*command, "--misleading-dataset", "t_misleading"]) == 0
    assert "AU hallucination 0.500 of responses" in capsys.readouterr().out

    results = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    hallucination = results["hallucination"]  # d and e are AU-labelled: 2 AUs claimed, AU12 not labelled
    assert (hallucination["responses"], hallucination["response_rate"], hallucination["claim_rate"]) == (2, 0.5, 0.5)
    assert hallucination["per_au"]["AU12"] == {"rate": 0.5, "claimed": 1, "unlabelled": 2}
    assert hallucination["per_au"]["AU4"] == {"rate": 0.0, "claimed": 0, "unlabelled": 1}
    misleading = results["misleading"]  # a, b, c: plain 2 of 3 right, misleading 1 of 3, a follows its claim
    assert misleading["samples"] == 3
    assert misleading["plain_accuracy"] == pytest.approx(2 / 3)
    assert misleading["misleading_accuracy"] == pytest.approx(1 / 3)
    assert misleading["accuracy_drop"] == pytest.approx(1 / 3)
    assert misleading["follows_false_emotion"] == pytest.approx(1 / 3)
    assert misleading["claims_false_au"] is None
    report = (output / "report.md").read_text(encoding="utf-8")
    assert "## AU hallucination" in report
    assert "| AU12 | 50.0 | 1 | 2 |" in report
    assert "| Answers following a false emotion | 33.3 |" in report
    samples = [json.loads(line) for line in (output / "samples.jsonl").open()]
    assert [s["hallucinated_aus"] for s in samples] == [None, None, None, [12], []]

    pairs_row = {"messages": [], "chosen": {}, "rejected": {}, "images": ["faces/x.png"], "rejected_images": []}
    pairs_row["rejected_images"] = ["faces/b.png"]  # a test face on the rejected side of a training pair
    (tmp_path / "pairs.jsonl").write_text(json.dumps(pairs_row) + "\n", encoding="utf-8")
    info = json.loads((tmp_path / "dataset_info.json").read_text(encoding="utf-8"))
    info["p"] = {"file_name": "pairs.jsonl", "ranking": True}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    assert main(["data", "misleading", "--dataset", "t", "--name", "t_misleading2", *data]) == 1
    assert "1 images of the test set t are used by p" in capsys.readouterr().out
    assert not (tmp_path / "misleading" / "t_misleading2.jsonl").exists()
