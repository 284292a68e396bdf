r"""Rollout settings: the sampling keywords of transformers' generate or vLLM, with the vision tokens forbidden."""

from typing import TYPE_CHECKING, Any

from trl.import_utils import is_vllm_available

from ..tokens import vision_tokens


if TYPE_CHECKING:
    from llamafactory.data.mm_plugin import BasePlugin
    from transformers import PreTrainedTokenizer

    from .args import GRPOArguments


VLLM_VERSION = "0.10.2"  # the only vLLM that TRL 0.24 accepts


def generation_kwargs(
    grpo_args: "GRPOArguments", tokenizer: "PreTrainedTokenizer", plugin: "BasePlugin | None" = None
) -> dict[str, Any] | None:
    r"""TRL's `generation_kwargs`: the vision tokens suppressed (`suppress_tokens` for generate, `bad_words` for vLLM)."""
    kwargs: dict[str, Any] = {}
    tokens = vision_tokens(tokenizer, plugin) if grpo_args.suppress_vision_tokens else []
    if tokens and grpo_args.use_vllm:
        kwargs["bad_words"] = tokens
    elif tokens:
        kwargs["suppress_tokens"] = tokenizer.convert_tokens_to_ids(tokens)

    kwargs.update(grpo_args.generation_kwargs or {})
    return kwargs or None


def check_vllm(grpo_args: "GRPOArguments") -> None:
    r"""Fail early, with the fix, when `use_vllm` is set but vLLM cannot be used."""
    if grpo_args.use_vllm and not is_vllm_available():
        raise ImportError(
            f"grpo key `use_vllm: true` needs vLLM {VLLM_VERSION} (the version TRL 0.24 supports): "
            f"`pip install vllm=={VLLM_VERSION}` on a CUDA machine, or set `use_vllm: false` to generate with transformers."
        )
