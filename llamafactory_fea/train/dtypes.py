r"""Keep the parameter dtypes LLaMA-Factory chose while a TRL trainer prepares the model."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from torch.nn import Module


@contextmanager
def host_dtypes_kept(model: "Module") -> Iterator[None]:
    r"""Put back the floating-point dtype of every parameter a trainer's set-up changed.

    Under QLoRA with bf16, TRL's `prepare_peft_model` casts the trainable fp32 copies of `embed_tokens`/`lm_head`
    (LLaMA-Factory's `additional_target`) to bf16 and frozen norms to fp32; LLaMA-Factory trains them as it loaded
    them. Quantized weights (not floating point) are never touched.
    """
    dtypes = {name: param.dtype for name, param in model.named_parameters() if param.dtype.is_floating_point}
    yield
    for name, param in model.named_parameters():
        dtype = dtypes.get(name)
        if dtype is not None and param.dtype.is_floating_point and param.dtype != dtype:
            param.data = param.data.to(dtype)
