r"""The `empo` stage: entity-centric preference optimisation on pairs whose sides may differ in image and prompt."""

from typing import TYPE_CHECKING

from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.extras.ploting import plot_loss
from llamafactory.model import load_model, load_tokenizer
from llamafactory.train.trainer_utils import create_modelcard_and_push, create_ref_model

from ...data.pairs import PAIR_KINDS
from ...seam import use_grpo_log_callback
from .data import EMPODataCollator, get_empo_dataset
from .trainer import EMPOTrainer


if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from .args import EMPOArguments


def check_empo_args(
    data_args: "DataArguments", training_args: "Seq2SeqTrainingArguments", finetuning_args: "FinetuningArguments"
) -> None:
    r"""The checks LLaMA-Factory makes for `stage: dpo` (the parser saw the sft stage); sets `use_ref_model`."""
    if training_args.predict_with_generate or data_args.neat_packing or data_args.packing:
        raise ValueError("The empo stage cannot use `predict_with_generate`, `packing` or `neat_packing` (sft only).")

    if data_args.train_on_prompt or data_args.mask_history:
        raise ValueError("The empo stage cannot use `train_on_prompt` or `mask_history` (sft only).")

    if finetuning_args.pref_loss != "sigmoid" and finetuning_args.dpo_label_smoothing > 1e-6:
        raise ValueError("`dpo_label_smoothing` is only valid for the sigmoid `pref_loss`.")

    finetuning_args.use_ref_model = finetuning_args.pref_loss not in ("orpo", "simpo")
    if finetuning_args.pissa_init and finetuning_args.use_ref_model:
        raise ValueError("Cannot use PiSSA with a reference model (`pref_loss` other than orpo or simpo).")


def run_empo(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    generating_args: "GeneratingArguments",
    empo_args: "EMPOArguments",
    callbacks: list["TrainerCallback"] | None = None,
) -> None:
    check_empo_args(data_args, training_args, finetuning_args)
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset_module = get_empo_dataset(template, model_args, data_args, training_args, **tokenizer_module)
    model = load_model(tokenizer, model_args, finetuning_args, training_args.do_train)

    data_collator = EMPODataCollator(
        template=template,
        model=model,
        pad_to_multiple_of=8,
        label_pad_token_id=IGNORE_INDEX if data_args.ignore_pad_token_for_loss else tokenizer.pad_token_id,
        **tokenizer_module,
    )

    # Create reference model (as the dpo stage)
    if finetuning_args.use_ref_model:
        if finetuning_args.ref_model is None and (not training_args.do_train):  # use the model itself
            ref_model = model
        else:
            ref_model = create_ref_model(model_args, finetuning_args)
    else:
        ref_model = None

    callbacks = callbacks if callbacks is not None else []
    use_grpo_log_callback(callbacks)  # trainer_log.jsonl gets every logged metric, the per-kind ones too
    trainer = EMPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        finetuning_args=finetuning_args,
        data_collator=data_collator,
        callbacks=callbacks,
        kind_weights=empo_args.kind_weights,
        **dataset_module,
        **tokenizer_module,
    )

    # Training
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        if trainer.is_world_process_zero() and finetuning_args.plot_loss:
            keys = ["loss", "rewards/accuracies", *(f"rewards/{kind}/accuracies" for kind in PAIR_KINDS)]
            keys += [f"loss/{kind}" for kind in PAIR_KINDS]
            keys += (
                [f"eval_{key}_loss" for key in dataset_module["eval_dataset"]]
                if isinstance(dataset_module.get("eval_dataset"), dict)
                else ["eval_loss"]
            )
            plot_loss(training_args.output_dir, keys=keys)

    # Evaluation
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval")
        if id(model) == id(ref_model):  # unable to compute rewards if reference model is the model itself
            metrics = {key: value for key, value in metrics.items() if "rewards" not in key}

        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    # Create model card
    create_modelcard_and_push(trainer, model_args, data_args, training_args, finetuning_args)
