r"""Generation backends of synthesis: batched HF `generate` (left padding), vLLM, or a factory named by dotted path.

An engine is any object with `generate(requests: list[GenerationRequest]) -> list[str]` (greedy completions,
special tokens removed), so tests and other backends plug in through `synth_backend: package.module.factory`.
"""

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from llamafactory.extras.constants import IMAGE_PLACEHOLDER

from ...registry import import_object
from ...seam import regularize_images
from .._logging import get_logger
from ..tokens import QWEN_VL_TOKENS, vision_tokens


if TYPE_CHECKING:
    from llamafactory.data import Template
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from PIL.Image import Image
    from transformers import PreTrainedModel, PreTrainedTokenizer, ProcessorMixin

    from .args import SynthesisArguments


logger = get_logger(__name__)

SUPPRESSED_TOKENS = QWEN_VL_TOKENS  # never in a completion (a random-weight model emits them)
IMAGE_BLOCKS_KEPT = 1024  # images whose expanded placeholder text the HF engine keeps (a sample's retries reuse it)


@dataclass(frozen=True)
class GenerationRequest:
    r"""One prompt to complete: the user text (without the image placeholder) and its image."""

    key: str
    prompt: str
    image: "Image"


class Completion(str):
    r"""A completion that knows whether it stopped at `max_new_tokens` (`truncated`); an engine may return plain str."""

    truncated: bool = False

    def __new__(cls, text: str, truncated: bool = False) -> "Completion":
        completion = super().__new__(cls, text)
        completion.truncated = truncated
        return completion


class SynthesisEngine(Protocol):
    r"""What synthesis needs from a backend: greedy completions for a batch of requests, in order."""

    def generate(self, requests: list[GenerationRequest]) -> list[str]: ...


def encode_prompt(
    request: GenerationRequest,
    template: "Template",
    tokenizer: "PreTrainedTokenizer",
    processor: "ProcessorMixin | None",
) -> list[int]:
    r"""Token ids of a one-turn prompt with the template, image tokens expanded by the template's mm plugin."""
    messages = [{"role": "user", "content": IMAGE_PLACEHOLDER + request.prompt}]
    messages = template.mm_plugin.process_messages(messages, [request.image], [], [], processor)
    prompt_ids, _ = template.encode_oneturn(tokenizer, messages + [{"role": "assistant", "content": ""}])
    prompt_ids, _ = template.mm_plugin.process_token_ids(
        prompt_ids, None, [request.image], [], [], tokenizer, processor
    )
    return prompt_ids


class HuggingfaceSynthEngine:
    r"""Batched greedy `generate` with left padding on a model already in memory (loaded, or being trained).

    The image placeholder's expansion (the vision tokens of an image, which depend on the image only) is computed once
    per image and reused for the sample's retries; the pixels are processed once per batch.
    """

    def __init__(
        self,
        model: "PreTrainedModel",
        template: "Template",
        generating_args: "GeneratingArguments",
        tokenizer: "PreTrainedTokenizer",
        processor: "ProcessorMixin | None" = None,
    ) -> None:
        from transformers import GenerationConfig

        self.model = model
        self.template = template
        self.tokenizer = tokenizer
        self.processor = processor
        self.image_blocks: dict[int, tuple[Image, str]] = {}  # id(image) -> (the image, kept alive; its text)
        suppressed = tokenizer.convert_tokens_to_ids(vision_tokens(tokenizer, candidates=SUPPRESSED_TOKENS))
        bad_words_ids = [[token_id] for token_id in suppressed]
        self.generation_config = GenerationConfig(
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=generating_args.max_new_tokens,
            repetition_penalty=generating_args.repetition_penalty,
            eos_token_id=template.get_stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bad_words_ids=bad_words_ids or None,
            use_cache=True,
        )

    def image_block(self, image: "Image") -> str:
        r"""The text the template's image placeholder becomes for `image` (its vision tokens), computed once per image."""
        entry = self.image_blocks.get(id(image))
        if entry is None:
            message = {"role": "user", "content": IMAGE_PLACEHOLDER}
            expanded = self.template.mm_plugin.process_messages([message], [image], [], [], self.processor)
            if len(self.image_blocks) >= IMAGE_BLOCKS_KEPT:
                self.image_blocks.pop(next(iter(self.image_blocks)))  # the oldest image

            entry = self.image_blocks[id(image)] = (image, expanded[0]["content"])

        return entry[1]

    def encode(self, request: GenerationRequest) -> list[int]:
        r"""`encode_prompt` of a request, with the image's expanded placeholder from `image_block`."""
        messages = [
            {"role": "user", "content": self.image_block(request.image) + request.prompt},
            {"role": "assistant", "content": ""},
        ]
        prompt_ids, _ = self.template.encode_oneturn(self.tokenizer, messages)
        prompt_ids, _ = self.template.mm_plugin.process_token_ids(
            prompt_ids, None, [request.image], [], [], self.tokenizer, self.processor
        )
        return prompt_ids

    def _batch(self, requests: list[GenerationRequest]) -> tuple[dict[str, Any], int]:
        r"""Left-padded input ids, attention mask and image inputs of a batch; the padded prompt length."""
        import torch

        batch_ids = [self.encode(request) for request in requests]
        width = max(len(ids) for ids in batch_ids)
        pad_id = self.tokenizer.pad_token_id
        input_ids = [[pad_id] * (width - len(ids)) + ids for ids in batch_ids]
        attention_mask = [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch_ids]
        device, dtype = self.model.device, self.model.dtype
        inputs: dict[str, Any] = {
            "input_ids": torch.tensor(input_ids, device=device),
            "attention_mask": torch.tensor(attention_mask, device=device),
        }
        count = len(requests)
        mm_inputs = self.template.mm_plugin.get_mm_inputs(
            images=[request.image for request in requests],
            videos=[],
            audios=[],
            imglens=[1] * count,
            vidlens=[0] * count,
            audlens=[0] * count,
            batch_ids=batch_ids,
            processor=self.processor,
        )
        for key, value in mm_inputs.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)

            inputs[key] = value.to(device=device, dtype=dtype if torch.is_floating_point(value) else None)

        return inputs, width

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        r"""Greedy completions of a batch, special tokens removed."""
        import torch

        inputs, width = self._batch(requests)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                outputs = self.model.generate(**inputs, generation_config=self.generation_config)
        finally:
            self.model.train(was_training)

        generated = outputs[:, width:]
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        stops = self.generation_config.eos_token_id
        stops = {*(stops if isinstance(stops, list) else [stops]), self.tokenizer.pad_token_id}
        # a batch that ran to the limit: each row is cut unless its last token is a stop (or padding after one)
        full = generated.shape[1] >= self.generation_config.max_new_tokens
        return [Completion(text, full and int(row[-1]) not in stops) for text, row in zip(texts, generated)]


class VllmSynthEngine:
    r"""Greedy generation with vLLM (base model plus LoRA adapter) on this process's device."""

    def __init__(
        self,
        template: "Template",
        model_args: "ModelArguments",
        generating_args: "GeneratingArguments",
        tokenizer: "PreTrainedTokenizer",
        processor: "ProcessorMixin | None" = None,
    ) -> None:
        from llamafactory.extras.packages import is_vllm_available

        if not is_vllm_available():
            raise ImportError("`synth_backend: vllm` needs vLLM: `pip install vllm` (or use `synth_backend: hf`).")

        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        self.template = template
        self.template.mm_plugin.expand_mm_tokens = False  # vLLM expands the image tokens itself
        self.tokenizer = tokenizer
        self.processor = processor
        self.model_args = model_args
        adapters = model_args.adapter_name_or_path
        if adapters is not None and len(adapters) > 1:
            raise ValueError("vLLM takes one LoRA adapter: merge the others first (`llamafactory-cli export`).")

        engine_args = {
            "model": model_args.model_name_or_path,
            "trust_remote_code": model_args.trust_remote_code,
            "download_dir": model_args.cache_dir,
            "dtype": model_args.infer_dtype,
            "max_model_len": model_args.vllm_maxlen,
            "tensor_parallel_size": 1,  # one engine per rank: ranks synthesize their own shards
            "gpu_memory_utilization": model_args.vllm_gpu_util,
            "enforce_eager": model_args.vllm_enforce_eager,
            "enable_lora": adapters is not None,
            "max_lora_rank": model_args.vllm_max_lora_rank,
            "limit_mm_per_prompt": {"image": 1},
        }
        if isinstance(model_args.vllm_config, dict):
            engine_args.update(model_args.vllm_config)

        self.llm = LLM(**engine_args)
        self.lora_request = LoRARequest("default", 1, adapters[0]) if adapters is not None else None
        sampling_kwargs = {
            "temperature": 0.0,
            "max_tokens": generating_args.max_new_tokens,
            "repetition_penalty": generating_args.repetition_penalty or 1.0,
            "stop_token_ids": template.get_stop_token_ids(tokenizer),
            "skip_special_tokens": True,
        }
        if "bad_words" in inspect.signature(SamplingParams).parameters:
            sampling_kwargs["bad_words"] = vision_tokens(tokenizer, candidates=SUPPRESSED_TOKENS)

        self.sampling_params = SamplingParams(**sampling_kwargs)

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        r"""Greedy completions of a batch (vLLM schedules the batch itself)."""
        prompts = []
        for request in requests:
            image = regularize_images(
                self.template.mm_plugin,
                [request.image],
                image_max_pixels=self.model_args.image_max_pixels,
                image_min_pixels=self.model_args.image_min_pixels,
            )[0]
            prompt_ids = encode_prompt(request, self.template, self.tokenizer, self.processor)
            prompts.append({"prompt_token_ids": prompt_ids, "multi_modal_data": {"image": image}})

        outputs = self.llm.generate(prompts, self.sampling_params, lora_request=self.lora_request, use_tqdm=False)
        return [Completion(output.outputs[0].text, output.outputs[0].finish_reason == "length") for output in outputs]


def create_engine(
    synth_args: "SynthesisArguments",
    template: "Template",
    model_args: "ModelArguments",
    data_args: "DataArguments",
    finetuning_args: "FinetuningArguments",
    generating_args: "GeneratingArguments",
    tokenizer: "PreTrainedTokenizer",
    processor: "ProcessorMixin | None" = None,
    model: "PreTrainedModel | None" = None,
) -> SynthesisEngine:
    r"""The engine `synth_backend` names; `hf` uses `model` (the workflow loads it with LLaMA-Factory's loader)."""
    if synth_args.synth_backend == "hf":
        if model is None:
            raise ValueError("The `hf` synthesis backend needs a loaded model.")

        return HuggingfaceSynthEngine(model, template, generating_args, tokenizer, processor)

    if synth_args.synth_backend == "vllm":
        return VllmSynthEngine(template, model_args, generating_args, tokenizer, processor)

    factory = import_object(synth_args.synth_backend, "synthesis engine factory")
    logger.info_rank0(f"Synthesis engine from {synth_args.synth_backend}.")
    return factory(
        synth_args=synth_args,
        template=template,
        model_args=model_args,
        data_args=data_args,
        finetuning_args=finetuning_args,
        generating_args=generating_args,
        tokenizer=tokenizer,
        processor=processor,
        model=model,
    )
