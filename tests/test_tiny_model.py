r"""The tiny offline Qwen-VL models load and run through LLaMA-Factory's own loaders."""

from pathlib import Path

import pytest
from PIL import Image

from llamafactory_fea.demo.tiny_model import SPECIAL_TOKENS, make_tiny_model

from .conftest import run_cli


@pytest.mark.parametrize(
    ("arch", "template", "image_tokens"),
    [("qwen2_vl", "qwen2_vl", 16), ("qwen2_5_vl", "qwen2_vl", 16), ("qwen3_vl", "qwen3_vl_nothink", 9)],
)
def test_tiny_model_loads_through_llamafactory_and_sees_the_image(
    arch: str, template: str, image_tokens: int, tmp_path: Path
):
    import torch
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer

    path = make_tiny_model(tmp_path / arch, arch=arch)
    assert sum(f.stat().st_size for f in path.iterdir()) < 2_000_000
    model_args, data_args, finetuning_args, _ = get_infer_args(
        {"model_name_or_path": str(path), "template": template, "infer_backend": "huggingface"}
    )
    tokenizer_module = load_tokenizer(model_args)
    tokenizer, processor = tokenizer_module["tokenizer"], tokenizer_module["processor"]
    assert all(tokenizer.convert_tokens_to_ids(token) != tokenizer.unk_token_id for token in SPECIAL_TOKENS)
    chat_template = get_template_and_fix_tokenizer(tokenizer, data_args)
    model = load_model(tokenizer, model_args, finetuning_args)
    assert model.config.model_type == arch

    image = Image.new("RGB", (112, 112), (120, 90, 70))
    messages = chat_template.mm_plugin.process_messages(
        [{"role": "user", "content": "<image>Which emotion?"}, {"role": "assistant", "content": ""}],
        [image],
        [],
        [],
        processor,
    )
    prompt_ids, _ = chat_template.encode_oneturn(tokenizer, messages)
    input_ids = torch.tensor([prompt_ids])
    assert (input_ids == model.config.image_token_id).sum() == image_tokens
    mm_inputs = chat_template.mm_plugin.get_mm_inputs([image], [], [], [1], [0], [0], [prompt_ids], processor)
    with torch.no_grad():
        logits = model(input_ids=input_ids, **mm_inputs).logits

    assert logits.shape[-1] == model.config.vocab_size


def test_make_tiny_model_command(tmp_path: Path):
    result = run_cli(["llamafactory-fea", "make-tiny-model", str(tmp_path / "m"), "--arch", "qwen2_5_vl"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert (tmp_path / "m" / "preprocessor_config.json").exists()
    result = run_cli(["llamafactory-fea", "make-tiny-model", str(tmp_path / "x"), "--arch", "llama"])
    assert result.returncode != 0
    assert "invalid choice" in result.stderr
