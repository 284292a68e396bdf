r"""The benches' checks: the synthesis engine's cached prompt encoding, the GRPO bench's identity checks."""

import importlib.util
from pathlib import Path

import pytest
from PIL import Image


ROOT = Path(__file__).resolve().parents[1]


def load_bench(name: str):
    r"""A bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_engine_encodes_prompts_as_encode_prompt_with_each_image_expanded_once(tiny_model: Path, tmp_path: Path):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_tokenizer
    from transformers import GenerationConfig

    from llamafactory_fea.train.synth.engine import GenerationRequest, HuggingfaceSynthEngine, encode_prompt

    model_args, data_args, _, generating_args = get_infer_args(
        {"model_name_or_path": str(tiny_model), "template": "qwen2_vl", "max_new_tokens": 4}
    )
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)

    class Model:  # the engine reads only the model's device and dtype when encoding
        device, dtype = "cpu", None

    engine = HuggingfaceSynthEngine(Model(), template, generating_args, **tokenizer_module)
    assert isinstance(engine.generation_config, GenerationConfig)
    wide, tall = Image.new("RGB", (96, 64), "white"), Image.new("RGB", (56, 120), "gray")
    prompts = ["Describe the face.", "Try again: the answer was 'x' <think>AU4</think>.", ""]
    requests = [GenerationRequest("key", prompt, image) for image in (wide, tall, wide) for prompt in prompts]
    expected = [
        encode_prompt(request, template, tokenizer_module["tokenizer"], tokenizer_module["processor"])
        for request in requests
    ]
    calls = []
    stock = template.mm_plugin.process_messages
    template.mm_plugin.process_messages = lambda *args: calls.append(args[1]) or stock(*args)
    try:
        assert [engine.encode(request) for request in requests] == expected
    finally:  # the plugin is LLaMA-Factory's shared instance: leave no instance attribute behind
        del template.mm_plugin.process_messages

    assert len(calls) == 2  # one expansion per image, reused for its other prompts


def weights(**changes) -> dict:
    digest = {"lora_A": ["sha256", "ab", "torch.float32"], "base": ["sums", 1.5, 2.25, "torch.float32"]}
    return {**digest, **changes}


def side(digest: dict, completion: list[list[int]]) -> dict:
    return {"weights": digest, "first_rollout": {"prompt": [[1, 2], [1, 2]], "completion": completion}}


def test_grpo_bench_identity_checks_pass_only_on_identical_starts():
    bench = load_bench("bench_grpo")
    lines = bench.check_identity(side(weights(), [[3, 4], [5]]), side(weights(), [[3, 4], [5]]))
    assert lines == [
        "identical starting weights: 2 parameters (1 trainable, bitwise)",
        "identical first-step prompts: 2 rows, 4 tokens",
        "identical first-step completions: 2 rows, 3 tokens",
    ]
    for ours, theirs, message in (
        (weights(), weights(lora_A=["sha256", "cd", "torch.float32"]), "1 of 2 parameters differ"),
        (weights(), {"lora_A": weights()["lora_A"]}, "base exists on one side only"),
    ):
        with pytest.raises(SystemExit, match=message):
            bench.check_identity(side(ours, [[3]]), side(theirs, [[3]]))

    with pytest.raises(SystemExit, match="completion token ids differ .first differing row: 1"):
        bench.check_identity(side(weights(), [[3], [5]]), side(weights(), [[3], [6]]))
