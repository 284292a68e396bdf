r"""LLaMA-Factory's parameter dtypes survive TRL's QLoRA preparation (4-bit faked on CPU: a flag TRL reads)."""

from pathlib import Path
from types import SimpleNamespace

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText
from trl.models.utils import prepare_peft_model

from llamafactory_fea.train.dtypes import host_dtypes_kept


def _qlora_like(tiny_model: Path) -> torch.nn.Module:
    r"""A bf16 model with LoRA and a trainable embedding copy, trainable weights in fp32 as LLaMA-Factory sets them."""
    model = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.bfloat16)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["embed_tokens"])
    model = get_peft_model(model, config)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(torch.float32)

    model.base_model.model.is_loaded_in_4bit = True  # what TRL checks before casting
    return model


def _dtypes(model: torch.nn.Module) -> dict[str, torch.dtype]:
    return {name: param.dtype for name, param in model.named_parameters()}


def test_trl_qlora_preparation_keeps_llamafactory_dtypes(tiny_model: Path):
    args = SimpleNamespace(bf16=True, gradient_checkpointing=False, gradient_checkpointing_kwargs=None)
    model = _qlora_like(tiny_model)
    before = _dtypes(model)
    prepare_peft_model(model, None, args)
    changed = {name for name, dtype in _dtypes(model).items() if before[name] != dtype}
    assert any("modules_to_save" in name for name in changed)  # TRL casts the fp32 embedding copy to bf16
    assert any("norm" in name for name in changed)  # and frozen bf16 norms to fp32

    model = _qlora_like(tiny_model)
    with host_dtypes_kept(model):
        prepare_peft_model(model, None, args)

    assert _dtypes(model) == before
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
