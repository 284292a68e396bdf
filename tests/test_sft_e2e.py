r"""Stage 1 end to end: stock `sft` trains `examples/fea_sft.yaml` on the demo data through `llamafactory-cli`.

Qwen2-VL, Qwen2.5-VL and Qwen3-VL (tiny random-weight models); the saved adapter reloads and generates.
"""

import json
from pathlib import Path

import pytest

from llamafactory_fea.demo.tiny_model import make_tiny_model

from .conftest import DATA_REGISTRY, EXAMPLES, run_cli


CPU_OVERRIDES = [
    f"dataset_dir={DATA_REGISTRY}",
    "dataset=fea_demo",
    "deepspeed=null",
    "bf16=false",
    "max_steps=3",
    "per_device_train_batch_size=2",
    "gradient_accumulation_steps=1",
    "logging_steps=1",
    "preprocessing_num_workers=1",
    "dataloader_num_workers=0",
]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("arch", "template", "prompt_set"),
    [("qwen2_vl", "qwen2_vl", None), ("qwen2_5_vl", "qwen2_vl", None), ("qwen3_vl", "qwen3_vl_nothink", "reference")],
)
def test_fea_sft_yaml_trains_saves_and_reloads(arch: str, template: str, prompt_set: str | None, tmp_path: Path):
    tiny_model = make_tiny_model(tmp_path / arch, arch=arch)
    output_dir = tmp_path / "sft"
    overrides = [
        f"model_name_or_path={tiny_model}",
        f"template={template}",
        f"output_dir={output_dir}",
        *CPU_OVERRIDES,
        *([f"fea_prompt_set={prompt_set}"] if prompt_set else []),
    ]
    result = run_cli(["llamafactory-cli", "train", str(EXAMPLES / "fea_sft.yaml"), *overrides])
    assert result.returncode == 0, result.stderr[-3000:]
    # the first training example as LLaMA-Factory prints it: rendered with the run's prompt set, or as stored
    assert ("## Action units" in result.stdout + result.stderr) == (prompt_set == "reference")

    logs = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [log["loss"] for log in logs if "loss" in log]
    assert len(losses) == 3
    assert all(loss > 0 for loss in losses)
    assert (output_dir / "adapter_model.safetensors").exists()
    assert json.loads((output_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model)

    from llamafactory.chat import ChatModel

    first = json.loads((DATA_REGISTRY / "demo" / "fea_demo.jsonl").read_text(encoding="utf-8").splitlines()[0])
    chat_model = ChatModel(
        {
            "model_name_or_path": str(tiny_model),
            "adapter_name_or_path": str(output_dir),
            "template": template,
            "infer_backend": "huggingface",
            "max_new_tokens": 8,
            "do_sample": False,
        }
    )
    messages = [{"role": "user", "content": first["messages"][0]["content"]}]
    responses = chat_model.chat(messages, images=[str(DATA_REGISTRY / first["images"][0])])
    assert len(responses) == 1
    assert responses[0].response_length > 0
    assert responses[0].finish_reason in ("stop", "length")
