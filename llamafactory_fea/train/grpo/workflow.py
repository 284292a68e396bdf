r"""The `grpo` stage: GRPO with FEA rewards on a model, template and dataset loaded by LLaMA-Factory."""

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.extras.ploting import plot_loss
from llamafactory.hparams import GeneratingArguments
from llamafactory.model import load_model, load_tokenizer
from llamafactory.train.trainer_utils import create_modelcard_and_push
from transformers.integrations import is_deepspeed_zero3_enabled
from trl import GRPOConfig

from ...rewards import AU_WEIGHT_COLUMN, get_reward, with_sample_weights
from ...seam import use_grpo_log_callback
from .._logging import get_logger
from ..dtypes import host_dtypes_kept
from ..prompt_set import use_prompt_set
from .data import get_grpo_dataset
from .rollout import check_vllm, generation_kwargs
from .trainer import FEA_METRICS, CustomGRPOTrainer, RewardChecks


if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from ...rewards import RewardFunc
    from .args import GRPOArguments


logger = get_logger(__name__)


def build_grpo_config(
    model_args: "ModelArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    grpo_args: "GRPOArguments",
    rollout_kwargs: dict[str, Any] | None,
) -> GRPOConfig:
    r"""TRL's GRPOConfig: LLaMA-Factory's training arguments plus the GRPO keys; raises if the batch sizes do not fit."""
    completions = training_args.per_device_train_batch_size * training_args.world_size
    completions *= training_args.gradient_accumulation_steps
    if grpo_args.generation_batch_size is None and completions % grpo_args.num_generations:
        raise ValueError(
            f"per_device_train_batch_size x gradient_accumulation_steps x processes ({completions} completions) "
            f"must be a multiple of the grpo key `num_generations` ({grpo_args.num_generations}): each prompt is "
            "sampled num_generations times and a group must fit in one generation batch."
        )

    trl_keys = {f.name for f in fields(GRPOConfig) if f.init}
    kwargs = {f.name: getattr(training_args, f.name) for f in fields(training_args) if f.init and f.name in trl_keys}
    kwargs.update({f.name: getattr(grpo_args, f.name) for f in fields(grpo_args) if f.name in trl_keys})
    kwargs.update(
        remove_unused_columns=False,  # the label columns must reach the rewards
        gradient_checkpointing=False,  # LLaMA-Factory has set it up on the model (`disable_gradient_checkpointing`)
        shuffle_dataset=not finetuning_args.disable_shuffling,
        generation_kwargs=rollout_kwargs,  # the grpo key's, with the vision tokens suppressed
    )
    if grpo_args.beta > 0 and finetuning_args.finetuning_type != "lora":  # TRL loads the reference model itself
        kwargs["model_init_kwargs"] = {
            "dtype": model_args.compute_dtype,
            "trust_remote_code": model_args.trust_remote_code,
        }

    return GRPOConfig(**kwargs)


def load_reward_funcs(grpo_args: "GRPOArguments", checks: RewardChecks) -> list["RewardFunc"]:
    r"""The reward functions by registered name or dotted path, their output checked, weighted per sample when asked."""
    reward_funcs = [checks.wrap(get_reward(name), name) for name in grpo_args.reward_funcs]
    if grpo_args.au_frequency_weighting.startswith("reward_"):
        reward_funcs = [with_sample_weights(func) for func in reward_funcs]

    return reward_funcs


def think_span_terms(grpo_args: "GRPOArguments") -> list[bool] | None:
    r"""Per reward, whether its loss term is averaged over the `<think>` span (None: TRL's loss)."""
    if grpo_args.policy_loss != "per_reward":
        return None

    span = set(grpo_args.think_span_rewards)
    return [name in span for name in grpo_args.reward_funcs]


def _warn_unused(
    model_args: "ModelArguments",
    finetuning_args: "FinetuningArguments",
    generating_args: "GeneratingArguments",
    grpo_args: "GRPOArguments",
) -> None:
    r"""Say which settings do not mean what a user may expect in this stage."""
    defaults = GeneratingArguments()
    unused = [f.name for f in fields(generating_args) if getattr(generating_args, f.name) != getattr(defaults, f.name)]
    if unused:
        shadowing = [f.name for f in fields(grpo_args) if hasattr(defaults, f.name)]  # temperature, top_p, ...
        logger.warning_rank0(
            f"{', '.join(unused)} (LLaMA-Factory generation keys) are not used by stage grpo: rollouts take "
            f"max_completion_length, {', '.join(shadowing)} from the grpo keys."
        )

    adapter_resumed = not finetuning_args.create_new_adapter or model_args.quantization_bit is not None
    if model_args.adapter_name_or_path and grpo_args.beta > 0 and (adapter_resumed or is_deepspeed_zero3_enabled()):
        logger.warning_rank0(
            f"The KL reference is the model with the adapter disabled, i.e. without {model_args.adapter_name_or_path[-1]}. "
            "Set `create_new_adapter: true` to merge the SFT adapter first so that the reference is the SFT model "
            "(not possible with quantization or DeepSpeed ZeRO-3)."
        )


def run_grpo(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    generating_args: "GeneratingArguments",
    grpo_args: "GRPOArguments",
    callbacks: list["TrainerCallback"] | None = None,
) -> None:
    check_vllm(grpo_args)
    _warn_unused(model_args, finetuning_args, generating_args, grpo_args)
    tokenizer_module = load_tokenizer(model_args)
    tokenizer, processor = tokenizer_module["tokenizer"], tokenizer_module["processor"]
    if grpo_args.max_prompt_length is not None and processor is not None:
        raise ValueError("grpo key `max_prompt_length` must be null with a multimodal model: truncation cuts images.")

    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    rollout_kwargs = generation_kwargs(grpo_args, tokenizer, template.mm_plugin)
    grpo_config = build_grpo_config(model_args, training_args, finetuning_args, grpo_args, rollout_kwargs)
    reward_checks = RewardChecks(grpo_args.reward_nonfinite)
    reward_funcs = load_reward_funcs(grpo_args, reward_checks)  # batch sizes and rewards checked: now the heavy part
    use_prompt_set(data_args, grpo_args.fea_prompt_set)  # the rows' questions rendered as they load
    dataset_module = get_grpo_dataset(template, model_args, data_args, training_args, grpo_args, **tokenizer_module)

    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train)
    callbacks = callbacks if callbacks is not None else []
    use_grpo_log_callback(callbacks)
    with host_dtypes_kept(model):  # TRL's QLoRA preparation would recast LLaMA-Factory's trainable weights
        trainer = CustomGRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=grpo_config,
            processing_class=processor if processor is not None else tokenizer,
            processor=processor,
            finetuning_args=finetuning_args,
            reward_clip=grpo_args.reward_clip,
            reward_checks=reward_checks,
            think_span_terms=think_span_terms(grpo_args),
            loss_weight_column=AU_WEIGHT_COLUMN if grpo_args.au_frequency_weighting == "loss_batch_sum" else None,
            callbacks=callbacks,
            **dataset_module,
        )

    # Training
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        if trainer.is_world_process_zero() and finetuning_args.plot_loss:
            keys = ["loss", "reward", *(["kl"] if grpo_args.beta > 0 else []), "completions/mean_length", *FEA_METRICS]
            keys += [f"rewards/{name}/mean" for name in trainer.reward_func_names]
            plot_loss(training_args.output_dir, keys=keys)

    # Evaluation
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        logged = trainer.state.log_history[-1] if trainer.state.log_history else {}  # TRL logs its metrics only
        metrics.update({k: v for k, v in logged.items() if k.startswith("eval_") and k not in metrics})
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    # Create model card
    create_modelcard_and_push(trainer, model_args, data_args, training_args, finetuning_args)
