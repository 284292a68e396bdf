r"""`llamafactory-fea eval`: the checked join with a dataset, labelled files, reports, the judge (a local stub)."""

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from PIL import Image

from llamafactory_fea.cli import main
from llamafactory_fea.data.records import register_dataset
from llamafactory_fea.demo.data import make_demo
from llamafactory_fea.eval.predictions import load_samples
from llamafactory_fea.eval.runner import evaluate
from tests.demo_predictions import make_demo_predictions


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    r"""The demo set (registered in a temporary folder) and fabricated LLaMA-Factory predictions on its test split."""
    root = tmp_path_factory.mktemp("demo")
    make_demo(root / "registry")
    return root / "registry", make_demo_predictions(root / "registry", root / "generated_predictions.jsonl")


def run(*args: str) -> int:
    return main(["eval", *args])


def test_demo_predictions_write_all_three_report_forms(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    out = tmp_path / "out"
    assert (
        run(str(predictions), "--dataset-dir", str(registry), "--dataset", "fea_demo_test", "--output-dir", str(out))
        == 0
    )
    results = json.loads((out / "metrics.json").read_text())
    samples, _ = load_samples(predictions, registry, "fea_demo_test")
    expected, _ = evaluate(samples, "demo")
    assert results["benchmark"] == "demo"
    assert results["emotion"]["accuracy"] == pytest.approx(expected["emotion"]["accuracy"])
    assert results["au"]["macro_f1"] == pytest.approx(expected["au"]["macro_f1"])
    assert 0 < results["emotion"]["accuracy"] < 1  # the fabricated set has right and wrong answers
    assert results["format_rate"] < 1
    report = (out / "report.md").read_text()
    assert "| Metric | Value |" in report
    assert "## Per-AU F1" in report
    assert "## Confusion matrix" in report
    for name in ("confusion_matrix.png", "au_f1.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            assert image.size[0] > 200

    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == len(samples)
    assert not list(out.glob(".*.tmp"))
    assert "metrics.json" in capsys.readouterr().out


def test_join_refuses_a_count_mismatch_and_accepts_max_samples(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    short = tmp_path / "short.jsonl"
    short.write_text("".join(predictions.read_text().splitlines(keepends=True)[:3]))
    args = ["--dataset-dir", str(registry), "--dataset", "fea_demo_test", "--output-dir", str(tmp_path / "out")]
    assert run(str(short), *args) == 1
    assert "3 predictions but fea_demo_test" in capsys.readouterr().out
    assert run(str(short), *args, "--max-samples", "3") == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["samples"] == 3


def test_join_refuses_predictions_from_another_order(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    lines = predictions.read_text().splitlines(keepends=True)
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text("".join([lines[1], lines[0], *lines[2:]]))
    assert (
        run(str(swapped), "--dataset-dir", str(registry), "--dataset", "fea_demo_test", "--output-dir", str(tmp_path))
        == 1
    )
    assert f"{swapped}:1: its label" in capsys.readouterr().out


def test_join_counts_labels_cut_by_cutoff_len(demo, tmp_path: Path) -> None:
    registry, predictions = demo
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    rows[0]["label"] = rows[0]["label"][:20]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(json.dumps(row) + "\n" for row in rows))
    samples, join = load_samples(cut, registry, "fea_demo_test")
    assert join.truncated_labels == 1
    assert samples[0].reference  # the reference comes from the dataset row, not the cut label


def test_broken_prediction_line_is_located(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    broken = tmp_path / "broken.jsonl"
    broken.write_text(predictions.read_text() + "{not json\n")
    assert (
        run(str(broken), "--dataset-dir", str(registry), "--dataset", "fea_demo_test", "--output-dir", str(tmp_path))
        == 1
    )
    assert f"{broken}:8: broken JSON" in capsys.readouterr().out


def labelled_file(path: Path) -> Path:
    lines = [
        {
            "predict": "<think>Lip corners pulled up (AU12), cheeks up (AU6).</think><answer>happy</answer>",
            "emotion": "happiness",
        },
        {"predict": "<think>Brows lowered and drawn in (AU4).</think><answer>anger</answer>", "emotion": "sadness"},
        {
            "completion": "<think>Jaw dropped wide open (AU26).</think><answer>surprise</answer>",
            "emotion": "Surprised",
        },
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_labelled_file_on_a_paper_benchmark_shows_the_paper_table(tmp_path: Path) -> None:
    predictions = labelled_file(tmp_path / "labelled.jsonl")
    assert run(str(predictions), "--benchmark", "rafdb", "--output-dir", str(tmp_path / "out")) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| Method | FER2013 | AffectNet | RAF-DB | FABA-Instruct |" in report
    assert "| Facial-R1 (paper) | 69.8 | 65.2 | 92.1 | 67.8 |" in report
    assert "| This run, strict protocol | – | – | 66.7 | – |" in report
    assert "| This run, reference protocol | – | – | 33.3 | – |" in report  # "happy" is not the word "happiness"
    assert (tmp_path / "out" / "confusion_matrix.png").is_file()
    assert not (tmp_path / "out" / "au_f1.png").exists()  # no AU labels in this file


def test_fea20k_report_has_one_paper_table_per_metric(tmp_path: Path) -> None:
    predictions = labelled_file(tmp_path / "labelled.jsonl")
    assert run(str(predictions), "--benchmark", "fea20k", "--output-dir", str(tmp_path / "out")) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Emotion reasoning on FEA-20K: ROUGE-L (%)" in report
    assert "### Emotion reasoning on FEA-20K: Judge (1-10)" in report
    assert "| Facial-R1 (paper) | 6.09 |" in report


def test_a_file_where_no_metric_can_be_computed_is_an_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "generated_predictions.jsonl"
    path.write_text(json.dumps({"prompt": "", "predict": "<answer>anger</answer>"}) + "\n")
    assert run(str(path), "--output-dir", str(tmp_path / "out")) == 1
    out = capsys.readouterr().out
    assert "no metric can be computed" in out
    assert "--dataset" in out
    assert not (tmp_path / "out").exists()


def test_generated_predictions_alone_read_their_labels_from_label(tmp_path: Path, capsys) -> None:
    r"""LLaMA-Factory's lines, no other argument: each `label` gives what it has (an emotion, AUs, or neither)."""
    lines = [
        (
            "<think>Brows down (AU4).</think><answer>anger</answer>",
            "<think>Brows low (AU4).</think><answer>anger</answer>",
        ),
        ("<answer>happiness</answer>", "<answer>sadness</answer>"),  # emotion only: AUs not labelled
        (
            "<think>Lips part (AU25).</think><answer>neutral</answer>",
            "<think>Lips part (AU25).</think><answer></answer>",
        ),
    ]
    path = tmp_path / "run" / "generated_predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"prompt": "", "predict": p, "label": g}) + "\n" for p, g in lines))
    assert run(str(path)) == 0
    out = tmp_path / "run" / "eval_generated_predictions"
    results = json.loads((out / "metrics.json").read_text())
    assert results["emotion"]["samples"] == 2
    assert results["emotion"]["accuracy"] == 0.5
    assert results["au"]["samples"] == 2
    assert results["au"]["macro_f1"] == 1.0
    assert results["reference_protocol"]["emotion"]["accuracy"] == 0.5
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(row["emotion"], row["aus"]) for row in rows] == [("anger", [4]), ("sadness", None), (None, [25])]
    assert "labels read from each line's `label`" in (out / "report.md").read_text()
    assert capsys.readouterr().out.startswith("generic: 3 samples; strict: ")


class Judge(BaseHTTPRequestHandler):
    r"""A stub OpenAI-compatible judge: 8 for reasoning naming AU12, else a reply without a score."""

    seen: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        prompt = body["messages"][0]["content"]
        content = '{"score": 8, "reason": "agrees"}' if "(AU12)" in prompt else "I cannot rate this."
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def test_judge_through_a_local_endpoint_never_logs_the_key(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FEA_JUDGE_KEY", "sk-test-secret-123")
    monkeypatch.setattr("llamafactory_fea.eval.judge.time.sleep", lambda seconds: None)
    lines = [json.loads(line) for line in labelled_file(tmp_path / "labelled.jsonl").read_text().splitlines()]
    for line in lines:
        line["reference"] = "The person smiles with raised cheeks."

    predictions = tmp_path / "referenced.jsonl"
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    server = HTTPServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        args = [
            "--output-dir",
            str(tmp_path / "out"),
            "--judge-url",
            url,
            "--judge-model",
            "stub",
            "--judge-key-env",
            "FEA_JUDGE_KEY",
        ]
        assert run(str(predictions), *args) == 0
    finally:
        server.shutdown()
        server.server_close()

    judge = json.loads((tmp_path / "out" / "metrics.json").read_text())["judge"]
    assert (judge["pairs"], judge["scored"], judge["failed"]) == (3, 1, 2)
    assert judge["mean"] == 8.0  # failures are counted, not scored 0
    assert judge["mean_failures_as_zero"] == pytest.approx(8 / 3)  # the reference protocol scores them 0
    assert Judge.seen[0]["path"] == "/v1/chat/completions"
    assert Judge.seen[0]["auth"] == "Bearer sk-test-secret-123"
    assert Judge.seen[0]["body"]["model"] == "stub"
    assert len(Judge.seen) == 1 + 2 * 3  # three tries for each failing pair
    written = "".join(
        path.read_text() for path in (tmp_path / "out").glob("*.*") if path.suffix in (".json", ".md", ".jsonl")
    )
    assert "sk-test-secret-123" not in capsys.readouterr().out + written
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["judge"] == {"score": 8, "reason": "agrees"}


def test_judge_needs_url_and_model_together(tmp_path: Path, capsys) -> None:
    predictions = labelled_file(tmp_path / "labelled.jsonl")
    assert run(str(predictions), "--output-dir", str(tmp_path / "out"), "--judge-url", "http://127.0.0.1:9") == 1
    assert "--judge-url and --judge-model together" in capsys.readouterr().out


def test_faba_benchmark_reports_rege(tmp_path: Path) -> None:
    line = {
        "predict": "<think>Cheeks raised (AU6), lip corners pulled (AU12): a happy face.</think><answer>happiness</answer>",
        "emotion": "happiness",
        "aus": [6, 12],
        "reference_au": "AU6 cheek raiser and AU12 lip corner puller.",
        "reference_emotion": "A happy face.",
    }
    predictions = tmp_path / "faba.jsonl"
    predictions.write_text(json.dumps(line) + "\n")
    assert run(str(predictions), "--benchmark", "faba", "--output-dir", str(tmp_path / "out")) == 0
    results = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert results["rege"]["emotion"]["s_re"] == pytest.approx(100.0)
    assert results["rege"]["au"]["rege"] == pytest.approx(
        results["rege"]["au"]["s_re"] + results["rege"]["au"]["s_ge"]
    )
    report = (tmp_path / "out" / "report.md").read_text()
    assert "REGE emotion = S_re 100.0" in report
    assert "| Qwen2.5-VL-7B zero-shot (paper) | 22.1 | 16.9 | 20.7 | 26.3 |" in report
    assert "| This run, reference protocol | – | – | – | 100.0 |" in report
    assert "| This run, strict protocol | – | – | – | 100.0 |" in report


def test_default_output_dir_beside_the_predictions_and_one_summary_line(demo, tmp_path: Path, capsys) -> None:
    registry, predictions = demo
    copied = tmp_path / "run" / "generated_predictions.jsonl"
    copied.parent.mkdir()
    copied.write_bytes(predictions.read_bytes())
    assert run(str(copied), "--dataset-dir", str(registry), "--dataset", "fea_demo_test") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("demo: ")
    assert "emotion accuracy" in out[0]
    assert "| Metric |" not in "\n".join(out)  # the tables are in report.md, not on the terminal
    assert (tmp_path / "run" / "eval_fea_demo_test" / "report.md").is_file()


def test_confusion_figure_draws_only_the_classes_the_labels_use() -> None:
    from llamafactory_fea.eval.report import confusion_png, confusion_view

    rows = ["anger", "contempt", "sadness"]  # an 8-class label space cut down; contempt has no label here
    columns = [*rows, "(other)", "(no answer)"]
    matrix = [[3, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 2, 0, 1]]
    confusion = {"rows": rows, "columns": columns, "matrix": matrix}
    names, drawn, counts = confusion_view(confusion)
    assert names == ["anger", "sadness"]  # no empty contempt row
    assert drawn == ["anger", "contempt", "sadness", "(no answer)"]  # contempt was answered once; no empty (other)
    assert counts == [[3, 0, 1, 0], [0, 1, 2, 1]]
    with Image.open(io.BytesIO(confusion_png({"confusion": confusion, "accuracy": 5 / 8}, "Test"))) as image:
        assert image.format == "PNG"


class Terminal(io.StringIO):
    r"""A stderr that says it is a terminal, so progress bars draw on it."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(demo, tmp_path: Path, monkeypatch) -> None:
    registry, predictions = demo
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    load_samples(predictions, registry, "fea_demo_test")
    assert "reading fea_demo_test" in terminal.getvalue()
    assert "sample" in terminal.getvalue()
    piped = io.StringIO()
    monkeypatch.setattr("sys.stderr", piped)
    load_samples(predictions, registry, "fea_demo_test")
    assert piped.getvalue() == ""


def test_json_array_dataset_is_joined_as_llamafactory_reads_it(demo, tmp_path: Path) -> None:
    registry, predictions = demo
    rows = [json.loads(line) for line in (registry / "demo" / "fea_demo_test.jsonl").read_text().splitlines()]
    (tmp_path / "demo").symlink_to(registry / "demo")
    (tmp_path / "test.json").write_text(json.dumps(rows))
    register_dataset(tmp_path, "fea_demo_test", "test.json")
    from_json, _ = load_samples(predictions, tmp_path, "fea_demo_test")
    from_jsonl, _ = load_samples(predictions, registry, "fea_demo_test")
    assert [(s.emotion, s.aus, s.reference) for s in from_json] == [
        (s.emotion, s.aus, s.reference) for s in from_jsonl
    ]
    assert len(from_json) == len(rows)


def test_compare_runs_in_one_table_and_one_figure_beside_the_paper(tmp_path: Path, capsys) -> None:
    predictions = labelled_file(tmp_path / "labelled.jsonl")
    assert run(str(predictions), "--benchmark", "rafdb", "--output-dir", str(tmp_path / "run_a" / "eval_rafdb")) == 0
    assert run(str(predictions), "--benchmark", "disfa", "--output-dir", str(tmp_path / "run_a" / "eval_disfa")) == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    rows[2]["emotion"] = "anger"  # run_b gets one answer fewer right
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert run(str(other), "--benchmark", "rafdb", "--output-dir", str(tmp_path / "run_b")) == 0
    capsys.readouterr()

    out = tmp_path / "compare"
    assert run("--compare", str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--output-dir", str(out)) == 0
    table = (out / "compare.md").read_text()
    assert (
        "| Dataset | Metric | Protocol | run_a | run_b | Facial-R1 (paper) | Qwen2.5-VL-7B zero-shot (paper) |"
        in table
    )
    assert "| RAF-DB | Accuracy (%) | reference | 33.3 | 0.0 | 92.1 | – |" in table  # the paper beside reference
    assert "| RAF-DB | Accuracy (%) | strict | 66.7 | 33.3 | – | – |" in table
    assert "| DISFA | AU F1 (%) | reference | – | – | 73.1 | 22.1 |" in table  # no AU labels in these files
    assert table.index("| DISFA |") < table.index("| RAF-DB |")  # the paper's order: AU table first
    with Image.open(out / "compare.png") as image:
        assert image.format == "PNG"

    assert not list(out.glob(".*.tmp"))
    assert "2 runs compared" in capsys.readouterr().out


def test_compare_refuses_a_folder_without_reports(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert run("--compare", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out")) == 1
    assert "no metrics.json under it" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
