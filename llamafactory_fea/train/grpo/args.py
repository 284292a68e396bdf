r"""YAML keys of the `grpo` stage (light: imported at every training start, so no torch or TRL here)."""

import json
import math
from dataclasses import dataclass, field
from typing import Any


LOSS_TYPES = ("grpo", "dapo", "bnpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
VLLM_MODES = ("colocate", "server")
AU_WEIGHTINGS = ("none", "reference", "balanced")
DEFAULT_REWARDS = "fea_format,fea_emotion,fea_au_f1"


class GRPOArgumentError(ValueError):
    r"""A `grpo` stage key with a wrong type or value; the message names the key and what it accepts."""


def _fail(key: str, expected: str, value: Any) -> GRPOArgumentError:
    return GRPOArgumentError(f"grpo key `{key}` must be {expected}, got {value!r}.")


def _as_int(key: str, value: Any, low: int | None = None, optional: bool = False) -> int | None:
    r"""An integer (numeric strings and whole floats accepted), at least `low`."""
    if value is None and optional:
        return None

    expected = "an integer" + (f" >= {low}" if low is not None else "") + (" or null" if optional else "")
    if isinstance(value, bool):
        raise _fail(key, expected, value)

    try:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, (int, float)) or not float(number).is_integer():
            raise ValueError
        number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise _fail(key, expected, value) from None

    if low is not None and number < low:
        raise _fail(key, expected, value)

    return number


def _as_float(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    optional: bool = False,
) -> float | None:
    r"""A finite number (numeric strings accepted) in `[low, high]`, or `(low, high]` when `low_open`."""
    if value is None and optional:
        return None

    bounds = ""
    if low is not None or high is not None:
        left = "(" if low_open else "["
        bounds = f" in {left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"

    expected = f"a number{bounds}" + (" or null" if optional else "")
    if isinstance(value, bool):
        raise _fail(key, expected, value)

    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(key, expected, value) from None

    if not math.isfinite(number):
        raise _fail(key, expected, value)

    if low is not None and (number < low or (low_open and number == low)):
        raise _fail(key, expected, value)

    if high is not None and number > high:
        raise _fail(key, expected, value)

    return number


def _as_bool(key: str, value: Any) -> bool:
    r"""A boolean (also the strings true/false/yes/no/1/0)."""
    if isinstance(value, bool):
        return value

    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.strip().lower() in ("true", "yes", "1", "on")

    if isinstance(value, int) and value in (0, 1):
        return bool(value)

    raise _fail(key, "true or false", value)


def _as_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    r"""One of `choices` (case-insensitive)."""
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()

    raise _fail(key, f"one of {', '.join(choices)}", value)


def _as_list(key: str, value: Any) -> list[Any]:
    r"""A YAML list or a comma-separated string as a list (empty items dropped)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]

    if isinstance(value, (list, tuple)):
        return list(value)

    raise _fail(key, "a list or a comma-separated string", value)


@dataclass
class GRPOArguments:
    r"""Arguments of GRPO training with FEA rewards (stage 2 of Facial-R1); the rest of the YAML is LLaMA-Factory's.

    `temperature`, `top_p`, `top_k` and `repetition_penalty` configure the rollouts of this stage; LLaMA-Factory's
    generation keys of the same names (used by `do_predict` and chat) are not read by `stage: grpo`.
    """

    reward_funcs: str = field(
        default=DEFAULT_REWARDS,
        metadata={
            "help": "Reward functions, comma-separated or a YAML list: registered names (fea_format, fea_emotion, "
            "fea_au_f1, fea_emotion_fuzzy, fea_strict_format, fea_strict_emotion, fea_strict_au_f1, "
            "fea_consistency, fea_au_hallucination) or dotted paths `package.module.function` with TRL's signature "
            "`f(completions, **columns) -> list[float | None]`."
        },
    )
    reward_weights: str | None = field(
        default=None,
        metadata={"help": "Weight of each reward in the sum, comma-separated or a YAML list (default: all 1.0)."},
    )
    reward_clip: float | None = field(
        default=10.0,
        metadata={
            "help": "Clip the weighted reward sum of each completion to [-reward_clip, reward_clip] before the "
            "group advantage (the reference clips at 10; only binds with large weights). null: no clipping."
        },
    )
    au_frequency_weighting: str = field(
        default="none",
        metadata={
            "help": "Per-sample reward weight from inverse AU frequencies, computed per dataset: `none` (1.0); "
            "`reference` (the Facial-R1 code: sum of the sample's normalised inverse AU frequencies, min-max "
            "scaled to [0, 10] within its dataset; samples without AU labels weigh 0); `balanced` (same inverse "
            "frequencies scaled to mean 1; samples without AU labels weigh 1). Multiplies every reward.",
            "choices": AU_WEIGHTINGS,
        },
    )
    num_generations: int = field(
        default=8,
        metadata={
            "help": "Completions sampled per prompt (the GRPO group, >= 2). per_device_train_batch_size x "
            "gradient_accumulation_steps x processes counts completions and must be a multiple of it."
        },
    )
    generation_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Completions generated at once across processes (default: per_device_train_batch_size x "
            "processes x gradient_accumulation_steps); must be a multiple of num_generations."
        },
    )
    max_completion_length: int = field(
        default=256,
        metadata={"help": "Most new tokens per completion."},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncate text prompts to this many tokens from the left (null: no truncation). Must be null "
            "for image datasets: truncation would cut image tokens."
        },
    )
    temperature: float = field(
        default=1.0,
        metadata={"help": "Sampling temperature of the rollouts (> 0); also divides the logits of the policy loss."},
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "Nucleus sampling of the rollouts, in (0, 1]."},
    )
    top_k: int | None = field(
        default=None,
        metadata={"help": "Top-k sampling of the rollouts (null or 0: off)."},
    )
    repetition_penalty: float = field(
        default=1.0,
        metadata={"help": "Repetition penalty of the rollouts (> 0, 1.0: off)."},
    )
    beta: float = field(
        default=0.04,
        metadata={
            "help": "KL coefficient against the reference model (the reference used 0.04). 0 loads no reference "
            "model; with LoRA the reference is the model with the adapter disabled."
        },
    )
    epsilon: float = field(
        default=0.2,
        metadata={"help": "Lower clipping range of the policy ratio (and upper unless epsilon_high is set)."},
    )
    epsilon_high: float | None = field(
        default=None,
        metadata={"help": "Upper clipping range of the policy ratio (DAPO recommends 0.28); null: epsilon."},
    )
    num_iterations: int = field(
        default=1,
        metadata={"help": "Policy updates per generated batch (mu in the GRPO paper)."},
    )
    loss_type: str = field(
        default="grpo",
        metadata={
            "help": "Loss aggregation: grpo (per-sequence mean, as the reference), dapo (TRL's default), bnpo, dr_grpo.",
            "choices": LOSS_TYPES,
        },
    )
    scale_rewards: str = field(
        default="group",
        metadata={
            "help": "Advantage scaling: group (divide by the group's std, as the reference), batch, none.",
            "choices": SCALE_REWARDS,
        },
    )
    importance_sampling_level: str = field(
        default="token",
        metadata={
            "help": "Policy ratio per token (GRPO) or per sequence (GSPO).",
            "choices": IMPORTANCE_SAMPLING_LEVELS,
        },
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={"help": "Leave completions cut at max_completion_length out of the loss (DAPO)."},
    )
    suppress_vision_tokens: bool = field(
        default=True,
        metadata={
            "help": "Forbid the vision special tokens (<|image_pad|>, <|video_pad|>, <|vision_start|>, "
            "<|vision_end|>, ...) in rollouts; a model that emits them breaks generation."
        },
    )
    generation_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Extra sampling keywords (a mapping or a JSON string) for transformers' GenerationConfig, or "
            "vLLM's SamplingParams when use_vllm."
        },
    )
    use_vllm: bool = field(
        default=False,
        metadata={"help": "Generate the rollouts with vLLM (pip install vllm) instead of transformers' generate."},
    )
    vllm_mode: str = field(
        default="colocate",
        metadata={
            "help": "colocate: vLLM in the training processes, sharing the GPUs; server: a `trl vllm-serve` "
            "server at vllm_server_base_url.",
            "choices": VLLM_MODES,
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata={"help": "Share of GPU memory vLLM may take in colocate mode, in (0, 1]."},
    )
    vllm_tensor_parallel_size: int = field(
        default=1,
        metadata={"help": "Tensor parallel size of colocated vLLM; must divide the number of processes."},
    )
    vllm_enable_sleep_mode: bool = field(
        default=False,
        metadata={"help": "Let colocated vLLM release its memory during the optimisation step."},
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={"help": "URL of the vLLM server in server mode (default http://0.0.0.0:8000)."},
    )
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={
            "help": "DeepSpeed ZeRO-3: gather the weights for generation (fast); false generates shard by shard "
            "(slow, for models larger than one GPU; not with vLLM)."
        },
    )
    log_completions: bool = field(
        default=False,
        metadata={"help": "Print a table of prompts, completions and rewards at every logging step."},
    )

    def __post_init__(self) -> None:
        self.reward_funcs = [str(name).strip() for name in _as_list("reward_funcs", self.reward_funcs)]
        if not self.reward_funcs or not all(self.reward_funcs):
            raise _fail("reward_funcs", "at least one reward name", self.reward_funcs)

        if self.reward_weights is not None:
            weights = _as_list("reward_weights", self.reward_weights)
            self.reward_weights = [_as_float("reward_weights", weight) for weight in weights]
            if len(self.reward_weights) != len(self.reward_funcs):
                raise GRPOArgumentError(
                    f"grpo key `reward_weights` has {len(self.reward_weights)} values for {len(self.reward_funcs)} "
                    f"reward_funcs ({', '.join(self.reward_funcs)}): give one weight per reward."
                )

        self.reward_clip = _as_float("reward_clip", self.reward_clip, low=0.0, low_open=True, optional=True)
        self.au_frequency_weighting = _as_choice("au_frequency_weighting", self.au_frequency_weighting, AU_WEIGHTINGS)
        self.num_generations = _as_int("num_generations", self.num_generations, low=2)
        self.generation_batch_size = _as_int("generation_batch_size", self.generation_batch_size, low=1, optional=True)
        if self.generation_batch_size is not None and self.generation_batch_size % self.num_generations:
            raise GRPOArgumentError(
                f"grpo key `generation_batch_size` ({self.generation_batch_size}) must be a multiple of "
                f"`num_generations` ({self.num_generations})."
            )

        self.max_completion_length = _as_int("max_completion_length", self.max_completion_length, low=1)
        self.max_prompt_length = _as_int("max_prompt_length", self.max_prompt_length, low=1, optional=True)
        self.temperature = _as_float("temperature", self.temperature, low=0.0, low_open=True)
        self.top_p = _as_float("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        self.top_k = _as_int("top_k", self.top_k, low=0, optional=True) or None
        self.repetition_penalty = _as_float("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)
        self.beta = _as_float("beta", self.beta, low=0.0)
        self.epsilon = _as_float("epsilon", self.epsilon, low=0.0, low_open=True)
        self.epsilon_high = _as_float("epsilon_high", self.epsilon_high, low=0.0, low_open=True, optional=True)
        self.num_iterations = _as_int("num_iterations", self.num_iterations, low=1)
        self.loss_type = _as_choice("loss_type", self.loss_type, LOSS_TYPES)
        if isinstance(self.scale_rewards, bool):  # TRL accepts true/false for group/none
            self.scale_rewards = "group" if self.scale_rewards else "none"

        self.scale_rewards = _as_choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        self.importance_sampling_level = _as_choice(
            "importance_sampling_level", self.importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS
        )
        for key in (
            "mask_truncated_completions",
            "suppress_vision_tokens",
            "use_vllm",
            "vllm_enable_sleep_mode",
            "ds3_gather_for_generation",
            "log_completions",
        ):
            setattr(self, key, _as_bool(key, getattr(self, key)))

        if isinstance(self.generation_kwargs, str):
            try:
                self.generation_kwargs = json.loads(self.generation_kwargs) if self.generation_kwargs.strip() else None
            except json.JSONDecodeError:
                raise _fail("generation_kwargs", "a mapping or a JSON object string", self.generation_kwargs) from None

        if self.generation_kwargs is not None and not isinstance(self.generation_kwargs, dict):
            raise _fail("generation_kwargs", "a mapping or a JSON object string", self.generation_kwargs)

        self.vllm_mode = _as_choice("vllm_mode", self.vllm_mode, VLLM_MODES)
        self.vllm_gpu_memory_utilization = _as_float(
            "vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, low=0.0, high=1.0, low_open=True
        )
        self.vllm_tensor_parallel_size = _as_int("vllm_tensor_parallel_size", self.vllm_tensor_parallel_size, low=1)
        if self.use_vllm and not self.ds3_gather_for_generation:
            raise GRPOArgumentError(
                "grpo key `ds3_gather_for_generation: false` cannot be used with `use_vllm: true`."
            )
