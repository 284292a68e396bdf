r"""Build a tiny random-weight Qwen-VL model, tokenizer and processor offline (for tests, the demo and smoke runs)."""

import tempfile
from pathlib import Path

from ..fea.aus import AU_CATALOGUE
from ..fea.emotions import EMOTIONS, SYNONYMS
from ..fea.prompts import FEAPrompts


ARCHITECTURES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
CLASS_PREFIXES = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL", "qwen3_vl": "Qwen3VL"}
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MIN_PIXELS, MAX_PIXELS = 3136, 12544
# Real architectures with random weights (the tiny tokenizer, the real widths, depths and vocabulary), for benchmarks.
PRESETS: dict[str, dict] = {
    "qwen2_5_vl_3b": dict(
        arch="qwen2_5_vl",
        text=dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        ),
        vision=dict(
            depth=32,
            hidden_act="silu",
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
            tokens_per_second=2,
        ),
        pixels=(3136, 12845056),
        dtype="bfloat16",
    ),
}


def _corpus() -> list[str]:
    r"""Texts the tokenizer is trained on: the FEA prompts, labels, AU names and the output tags."""
    prompts = FEAPrompts()
    lines = [prompts.question(EMOTIONS), prompts.guided("sadness", [1, 4, 15]), "<think> </think> <answer> </answer>"]
    lines += [f"{au} (AU{au.number})" for au in AU_CATALOGUE.values()]
    lines += list(SYNONYMS) + [e.capitalize() for e in EMOTIONS]
    return lines * 4


def build_tokenizer(vocab_size: int = 600):
    r"""Train a byte-level BPE tokenizer (any text encodes) with the Qwen special tokens, wrapped as Qwen2's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer=trainer)
    with tempfile.TemporaryDirectory() as tmp:
        backend.save(f"{tmp}/tokenizer.json")
        tokenizer = Qwen2TokenizerFast(
            tokenizer_file=f"{tmp}/tokenizer.json",
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            bos_token=None,
            additional_special_tokens=SPECIAL_TOKENS[1:],
        )

    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _vision_config(arch: str, text_hidden: int) -> dict:
    r"""A two-block vision tower that projects to the text width."""
    if arch == "qwen2_vl":
        return dict(depth=2, embed_dim=32, hidden_size=text_hidden, mlp_ratio=2, num_heads=2)

    if arch == "qwen3_vl":
        return dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text_hidden,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
        )

    return dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=text_hidden,
        fullatt_block_indexes=[1],
    )


def make_tiny_model(
    output_dir: "str | Path", arch: str = "qwen2_vl", seed: int = 0, preset: str | None = None
) -> Path:
    r"""Write a tiny random-weight Qwen2-VL, Qwen2.5-VL or Qwen3-VL (model, tokenizer, processor) to a folder.

    A `preset` (see `PRESETS`) keeps the tiny tokenizer but takes a real model's architecture, still random-weight.
    """
    import torch
    import transformers

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}: use one of {', '.join(PRESETS)}.")

    spec = PRESETS.get(preset, {})
    arch = spec.get("arch", arch)
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}.")

    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    prefix = CLASS_PREFIXES[arch]
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    if arch == "qwen3_vl":  # explicit head size; interleaved M-RoPE
        text_config.update(
            head_dim=16, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True}
        )

    text_config.update(spec.get("text", {}))
    config = getattr(transformers, f"{prefix}Config")(
        text_config=text_config,
        vision_config=spec.get("vision") or _vision_config(arch, text_config["hidden_size"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        **{k: text_config[k] for k in ("vocab_size", "hidden_size", "bos_token_id", "eos_token_id", "pad_token_id")},
    )
    dtype = getattr(torch, spec.get("dtype", "float32"))
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    min_pixels, max_pixels = spec.get("pixels", (MIN_PIXELS, MAX_PIXELS))
    patch_size = 16 if arch == "qwen3_vl" else 14
    video_processor = transformers.Qwen3VLVideoProcessor if arch == "qwen3_vl" else transformers.Qwen2VLVideoProcessor
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=transformers.Qwen2VLImageProcessor(
            min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size
        ),
        tokenizer=tokenizer,
        video_processor=video_processor(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size),
        chat_template=CHAT_TEMPLATE,
    )
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
