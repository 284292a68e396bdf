r"""The `synth` stage: reward-verified data synthesis with a model loaded by LLaMA-Factory (stage 3 of Facial-R1)."""

from pathlib import Path
from typing import TYPE_CHECKING

from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.model import load_model, load_tokenizer

from .._logging import get_logger
from .engine import create_engine
from .job import SynthesisPassConfig, run_synthesis_pass
from .samples import load_samples
from .synthesizer import build_synthesizer, load_prompts


if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from .args import SynthesisArguments


logger = get_logger(__name__)


def run_synth(
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    generating_args: "GeneratingArguments",
    synth_args: "SynthesisArguments",
    callbacks: list["TrainerCallback"] | None = None,
) -> None:
    r"""Synthesize AU-grounded reasoning for a labelled dataset and register the kept samples as a new dataset."""
    if data_args.dataset is None:
        raise ValueError(
            "The synth stage needs `dataset`: a labelled dataset (an emotion, AUs or both per row) in `dataset_dir`."
        )

    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    tokenizer.padding_side = "left"  # batched generation
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    with training_args.main_process_first(desc="load dataset", local=(not data_args.data_shared_file_system)):
        samples = load_samples(
            data_args.dataset, model_args, data_args, training_args, load_prompts(synth_args, data_args)
        )

    logger.info_rank0(f"Loaded {len(samples)} labelled samples from {', '.join(data_args.dataset)}.")

    model = None
    if synth_args.synth_backend == "hf":  # vLLM and custom engines load their own model
        model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)

    engine = create_engine(
        synth_args, template, model_args, data_args, finetuning_args, generating_args, model=model, **tokenizer_module
    )
    config = SynthesisPassConfig.from_args(
        synth_args,
        name=synth_args.synth_dataset_name,
        datasets=data_args.dataset,
        run_dir=Path(training_args.output_dir),
        model=model_args.model_name_or_path,
        adapters=model_args.adapter_name_or_path,
        max_new_tokens=generating_args.max_new_tokens,
    )
    run_synthesis_pass(
        build_synthesizer(engine, synth_args, data_args),
        samples,
        config,
        rank=training_args.process_index,
        world_size=training_args.world_size,
    )
