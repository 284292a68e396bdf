r"""The vision and audio special tokens that generated text must never contain (a model that emits them breaks)."""

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from llamafactory.data.mm_plugin import BasePlugin
    from transformers import PreTrainedTokenizer


QWEN_VL_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
VISION_TOKENS = (*QWEN_VL_TOKENS, "<|vision_pad|>", "<|audio_pad|>", "<|audio_bos|>", "<|audio_eos|>")
PLUGIN_TOKENS = ("image_token", "video_token", "audio_token", "vision_bos_token", "vision_eos_token")


def vision_tokens(
    tokenizer: "PreTrainedTokenizer",
    plugin: "BasePlugin | None" = None,
    candidates: tuple[str, ...] = VISION_TOKENS,
) -> list[str]:
    r"""The `candidates` and the tokens of a LLaMA-Factory mm plugin that the tokenizer has, in order, once each."""
    candidates = [*candidates, *(getattr(plugin, name, None) for name in PLUGIN_TOKENS)]
    vocab = tokenizer.get_vocab()
    return [token for token in dict.fromkeys(candidates) if token and token in vocab]
