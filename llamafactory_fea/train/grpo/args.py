r"""YAML keys of the `grpo` stage (light: imported at every training start, so no torch or TRL here)."""

import json
from dataclasses import dataclass, field
from typing import Literal

from ...fea.prompts import load_prompt_set
from ...hparams import ArgumentError, check_bounds, check_types, convert
from ...rewards import REWARDS, RewardFunc, get_reward
from ...rewards.weighting import resolve_weighting


@dataclass
class GRPOArguments:
    r"""Arguments of GRPO training with FEA rewards (stage 2 of Facial-R1); the rest of the YAML is LLaMA-Factory's.

    `temperature`, `top_p`, `top_k` and `repetition_penalty` configure the rollouts of this stage; LLaMA-Factory's
    generation keys of the same names (used by `do_predict` and chat) are not read by `stage: grpo`.
    """

    reward_funcs: str = field(
        default="fea_format,fea_emotion,fea_au_f1",
        metadata={
            "help": f"Reward functions, comma-separated or a YAML list: registered names ({', '.join(REWARDS)}) "
            "or dotted paths `package.module.function` with TRL's signature "
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
    reward_nonfinite: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "A reward that returns NaN or inf for a completion: `error` stops the run naming the reward and "
            "the completion; `skip` leaves that value out of the completion's sum, as None would (counted per "
            "step as fea/skipped_rewards)."
        },
    )
    au_frequency_weighting: Literal[
        "none", "reward_minmax", "reward_mean_one", "loss_batch_sum", "reference", "balanced"
    ] = field(
        default="none",
        metadata={
            "help": "Weights from inverse AU frequencies per dataset (a sample weighs the sum of its AUs' normalised "
            "inverse frequencies): `none`; `reward_minmax` multiplies every reward by the sample's weight min-max "
            "scaled to [0, 10] within its dataset, samples without AU labels weighing 0 (the earlier reference); "
            "`reward_mean_one` by the weight scaled to mean 1, samples without AU labels weighing 1; "
            "`loss_batch_sum` leaves the rewards unweighted and multiplies each micro-batch's loss by the sum of "
            "its samples' [0, 10] weights (the later reference). Old names: reference = reward_minmax, "
            "balanced = reward_mean_one."
        },
    )
    policy_loss: Literal["trl", "per_reward"] = field(
        default="trl",
        metadata={
            "help": "`trl`: TRL's GRPO loss over all completion tokens. `per_reward` (the later reference): one "
            "clipped policy-gradient term (plus KL) per reward function, all with the advantage of the summed "
            "reward, each averaged over its own tokens (the rewards of `think_span_rewards` over the tokens inside "
            "<think> </think>, the others over all completion tokens), then the terms averaged."
        },
    )
    think_span_rewards: str = field(
        default="fea_au_f1,fea_strict_au_f1",
        metadata={
            "help": "With `policy_loss: per_reward`: rewards (names as in reward_funcs) whose term is averaged over "
            "the tokens inside <think> </think>; a completion without a closed <think> gives such a term no tokens."
        },
    )
    fea_prompt_set: str | None = field(
        default=None,
        metadata={
            "help": "Prompt set of the rows' questions: `concise`, `reference` (the Facial-R1 prompt's content) or "
            "a JSON file of `FEAPrompts` templates; null: the rows as stored (see train/prompt_set.py)."
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
    loss_type: Literal["grpo", "dapo", "bnpo", "dr_grpo"] = field(
        default="grpo",
        metadata={
            "help": "Loss aggregation: grpo (per-sequence mean, as the reference), dapo (TRL's default), bnpo, dr_grpo."
        },
    )
    scale_rewards: Literal["group", "batch", "none"] = field(
        default="group",
        metadata={"help": "Advantage scaling: group (divide by the group's std, as the reference), batch, none."},
    )
    importance_sampling_level: Literal["token", "sequence"] = field(
        default="token",
        metadata={"help": "Policy ratio per token (GRPO) or per sequence (GSPO)."},
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
    vllm_mode: Literal["colocate", "server"] = field(
        default="colocate",
        metadata={
            "help": "colocate: vLLM in the training processes, sharing the GPUs; server: a `trl vllm-serve` "
            "server at vllm_server_base_url."
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
        if isinstance(self.scale_rewards, bool):  # TRL accepts true/false for group/none
            self.scale_rewards = "group" if self.scale_rewards else "none"

        check_types(self, "grpo")
        names = convert("grpo", "reward_funcs", list[str], self.reward_funcs)
        self.reward_funcs = [str(name).strip() for name in names]
        if not self.reward_funcs or not all(self.reward_funcs):
            raise ArgumentError(f"grpo key `reward_funcs` must name at least one reward, got {self.reward_funcs!r}.")

        self._check_rewards()
        self.au_frequency_weighting = resolve_weighting(self.au_frequency_weighting)
        names = convert("grpo", "think_span_rewards", list[str], self.think_span_rewards or [])
        self.think_span_rewards = [str(name).strip() for name in names if str(name).strip()]
        for name in self.think_span_rewards:
            try:
                get_reward(name)
            except ValueError as err:
                raise ArgumentError(f"grpo key `think_span_rewards`: {err}") from None
        if self.policy_loss == "per_reward" and self.loss_type == "dapo":
            raise ArgumentError(
                "grpo key `policy_loss: per_reward` averages each term over its own tokens: use loss_type grpo "
                "(as the reference), bnpo or dr_grpo, not dapo (its normaliser counts all completion tokens)."
            )

        if self.fea_prompt_set is not None:
            try:
                load_prompt_set(self.fea_prompt_set)
            except ValueError as err:
                raise ArgumentError(f"grpo key `fea_prompt_set`: {err}") from None

        if self.reward_weights is not None:
            self.reward_weights = convert("grpo", "reward_weights", list[float], self.reward_weights)
            if len(self.reward_weights) != len(self.reward_funcs):
                raise ArgumentError(
                    f"grpo key `reward_weights` has {len(self.reward_weights)} values for {len(self.reward_funcs)} "
                    f"reward_funcs ({', '.join(self.reward_funcs)}): give one weight per reward."
                )

        check_bounds(
            self,
            "grpo",
            at_least={
                "num_generations": 2,
                "generation_batch_size": 1,
                "max_completion_length": 1,
                "max_prompt_length": 1,
                "top_k": 0,
                "beta": 0,
                "num_iterations": 1,
                "vllm_tensor_parallel_size": 1,
            },
            above={
                "reward_clip": 0,
                "temperature": 0,
                "top_p": 0,
                "repetition_penalty": 0,
                "epsilon": 0,
                "epsilon_high": 0,
                "vllm_gpu_memory_utilization": 0,
            },
            at_most={"top_p": 1, "vllm_gpu_memory_utilization": 1},
        )
        self.top_k = self.top_k or None
        if self.generation_batch_size is not None and self.generation_batch_size % self.num_generations:
            raise ArgumentError(
                f"grpo key `generation_batch_size` ({self.generation_batch_size}) must be a multiple of "
                f"`num_generations` ({self.num_generations})."
            )

        refused = ArgumentError(
            f"grpo key `generation_kwargs` must be a mapping or a JSON object string, got {self.generation_kwargs!r}."
        )
        if isinstance(self.generation_kwargs, str):
            try:
                self.generation_kwargs = json.loads(self.generation_kwargs) if self.generation_kwargs.strip() else None
            except json.JSONDecodeError:
                raise refused from None

        if self.generation_kwargs is not None and not isinstance(self.generation_kwargs, dict):
            raise refused

        if self.use_vllm and not self.ds3_gather_for_generation:
            raise ArgumentError("grpo key `ds3_gather_for_generation: false` cannot be used with `use_vllm: true`.")

    def _check_rewards(self) -> None:
        r"""Resolve every reward now, before anything loads, and refuse a reward listed twice."""
        seen: dict[str, tuple[str, RewardFunc]] = {}  # by function name, which TRL names each reward's logs after
        for name in self.reward_funcs:
            try:
                func = get_reward(name)
            except ValueError as err:
                raise ArgumentError(f"grpo key `reward_funcs`: {err}") from None

            if func.__name__ in seen:
                first, other = seen[func.__name__]
                if other is func:
                    spelled = "" if first == name else f" (as {first} and {name})"
                    raise ArgumentError(
                        f"grpo key `reward_funcs`: lists {func.__name__} twice{spelled}: list each reward once and "
                        "weigh it with `reward_weights`."
                    )

                raise ArgumentError(
                    f"grpo key `reward_funcs`: {first} and {name} are both functions named {func.__name__}, and TRL "
                    "logs each reward under its function name: rename one."
                )

            seen[func.__name__] = (name, func)
