r"""End to end: LLaMA-Factory's own `do_predict` on the demo set with a tiny model, then `llamafactory-fea eval`, with
`--dataset` and on the plain generated_predictions.jsonl alone (labels from its `label`): the same figures."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from llamafactory_fea.demo.data import make_demo

from .conftest import EXAMPLES, run_cli


# LLaMA-Factory 0.9.5 refuses predict_with_generate without its `metrics` extra
MISSING = [name for name in ("jieba", "nltk", "rouge_chinese") if importlib.util.find_spec(name) is None]


@pytest.mark.e2e
@pytest.mark.skipif(bool(MISSING), reason=f"predict_with_generate needs {', '.join(MISSING)} (llamafactory[metrics])")
def test_predictions_of_llamafactory_join_and_score(tiny_model: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    make_demo(registry)
    config = yaml.safe_load((EXAMPLES / "fea_predict.yaml").read_text())
    config.update(
        model_name_or_path=str(tiny_model),
        eval_dataset="fea_demo_test",
        dataset_dir=str(registry),
        output_dir=str(tmp_path / "predict"),
        max_new_tokens=16,
        per_device_eval_batch_size=4,
        preprocessing_num_workers=1,
        dataloader_num_workers=0,
        bf16=False,
    )
    config.pop("adapter_name_or_path")
    (tmp_path / "predict.yaml").write_text(yaml.safe_dump(config))
    result = run_cli(["llamafactory-cli", "train", str(tmp_path / "predict.yaml")])
    assert result.returncode == 0, result.stderr[-3000:]

    predictions = tmp_path / "predict" / "generated_predictions.jsonl"
    out = tmp_path / "report"
    result = run_cli(
        ["llamafactory-fea", "eval", str(predictions), "--dataset-dir", str(registry), "--dataset", "fea_demo_test"]
        + ["--output-dir", str(out)]
    )
    assert result.returncode == 0, result.stdout[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 7
    assert metrics["join"]["truncated_labels"] == 0  # every decoded label is the dataset's assistant turn
    assert (out / "report.md").is_file()

    # the file alone, no other argument: labels come from each line's `label`, the reports go beside it
    result = run_cli(["llamafactory-fea", "eval", str(predictions)])
    assert result.returncode == 0, result.stdout[-3000:]
    alone = tmp_path / "predict" / "eval_generated_predictions"
    plain = json.loads((alone / "metrics.json").read_text())
    assert plain["join"]["labels_from"] == "label"
    gold = [
        [(row["emotion"], row["aus"]) for row in map(json.loads, (folder / "samples.jsonl").open())]
        for folder in (out, alone)
    ]
    assert gold[0] == gold[1]
    assert all(emotion and aus for emotion, aus in gold[0])  # every demo row has both labels
    for key in ("format_rate", "headline"):
        assert plain[key] == metrics[key], key

    for key in ("accuracy", "macro_f1", "uar"):
        assert plain["emotion"][key] == metrics["emotion"][key], key

    for key in ("macro_f1", "micro_f1", "per_au"):
        assert plain["au"][key] == metrics["au"][key], key

    assert plain["reasoning"] == metrics["reasoning"]
    assert plain["reference_protocol"] == metrics["reference_protocol"]
