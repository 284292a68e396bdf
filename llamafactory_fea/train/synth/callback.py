r"""`SynthesisCallback`: reward-verified synthesis with the in-memory model, in any SFT or GRPO run.

    synth_callback: true
    synth_callback_dataset: fea_demo         # labelled dataset(s) of dataset_dir
    synth_callback_every_n_epochs: 1         # optional; the end of training always synthesizes
    synth_dataset_dir: data_registry         # any synth_* key of the synth stage applies

Synthesis passes work in `output_dir/synthesis/<pass>/` (journal, so a resumed training resumes them too); the
report of every pass is `output_dir/synthesis/synth_report.{json,md}`. The end-of-training pass is registered as
`synth_dataset_name`, the pass after epoch k as `<synth_dataset_name>_epoch<k>`, in `synth_dataset_dir`
(default `output_dir/synthesis`). The synthesis dataset is read with the run's `dataset_dir`, `media_dir` and
`max_samples`; generation is greedy with the run's `max_new_tokens`.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamafactory.data import get_template_and_fix_tokenizer
from llamafactory.model import load_tokenizer
from transformers import TrainerCallback
from typing_extensions import override

from ...hparams import split_arg
from .._logging import get_logger
from .engine import HuggingfaceSynthEngine
from .job import SynthesisPassConfig, run_synthesis_pass
from .samples import load_samples
from .synthesizer import build_synthesizer, load_prompts


if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from transformers import PreTrainedModel, Seq2SeqTrainingArguments, TrainerControl, TrainerState

    from .args import SynthesisCallbackArguments
    from .report import SynthesisPass
    from .samples import SynthSample


logger = get_logger(__name__)

SYNTHESIS_DIR = "synthesis"


class SynthesisCallback(TrainerCallback):
    r"""Synthesizes with the model being trained at the end of training (and every N epochs if asked)."""

    def __init__(
        self,
        synth_args: "SynthesisCallbackArguments",
        model_args: "ModelArguments",
        data_args: "DataArguments",
        training_args: "Seq2SeqTrainingArguments",
        generating_args: "GeneratingArguments",
    ) -> None:
        self.synth_args = synth_args
        self.model_args = model_args
        self.data_args = data_args
        self.training_args = training_args
        self.generating_args = generating_args
        self.datasets = split_arg(synth_args.synth_callback_dataset)
        self.passes: list[SynthesisPass] = []
        self.samples: list[SynthSample] = []

    def synthesize(self, model: "PreTrainedModel", state: "TrainerState", name: str) -> "SynthesisPass | None":
        r"""Run one synthesis pass with `model` on every rank's shard; rank 0 returns the pass."""
        logger.info_rank0(f"Synthesis pass {name} with the model at step {state.global_step}.")
        tokenizer_module = load_tokenizer(self.model_args)
        tokenizer = tokenizer_module["tokenizer"]
        tokenizer.padding_side = "left"
        template = get_template_and_fix_tokenizer(tokenizer, self.data_args)
        engine = HuggingfaceSynthEngine(model, template, self.generating_args, **tokenizer_module)
        report_dir = Path(self.training_args.output_dir) / SYNTHESIS_DIR
        config = SynthesisPassConfig.from_args(
            self.synth_args,
            name=name,
            datasets=self.datasets,
            run_dir=report_dir / name,
            report_dir=report_dir,
            global_step=state.global_step,
        )
        config.dataset_dir = Path(self.synth_args.synth_dataset_dir or report_dir)
        config.dataset_file = f"{name}.jsonl"
        synthesis_pass = run_synthesis_pass(
            build_synthesizer(engine, self.synth_args, self.data_args),
            self.samples,
            config,
            rank=self.training_args.process_index,
            world_size=self.training_args.world_size,
        )
        if synthesis_pass is not None:
            self.passes.append(synthesis_pass)

        return synthesis_pass

    @override
    def on_train_begin(
        self, args: "Seq2SeqTrainingArguments", state: "TrainerState", control: "TrainerControl", **kwargs: Any
    ) -> None:
        r"""Load (and so check) the samples before training: a bad record fails now, not after the training."""
        with self.training_args.main_process_first(desc="load synthesis dataset"):
            self.samples = load_samples(
                self.datasets,
                self.model_args,
                self.data_args,
                self.training_args,
                load_prompts(self.synth_args, self.data_args),
            )

    @override
    def on_epoch_end(
        self, args: "Seq2SeqTrainingArguments", state: "TrainerState", control: "TrainerControl", **kwargs: Any
    ) -> None:
        every = self.synth_args.synth_callback_every_n_epochs
        epoch = round(state.epoch or 0)
        if every and epoch > 0 and epoch % every == 0 and state.global_step < state.max_steps:
            self.synthesize(kwargs["model"], state, f"{self.synth_args.synth_dataset_name}_epoch{epoch}")

    @override
    def on_train_end(
        self, args: "Seq2SeqTrainingArguments", state: "TrainerState", control: "TrainerControl", **kwargs: Any
    ) -> None:
        self.synthesize(kwargs["model"], state, self.synth_args.synth_dataset_name)


def synthesis_callbacks(
    synth_args: "SynthesisCallbackArguments",
    model_args: "ModelArguments",
    data_args: "DataArguments",
    training_args: "Seq2SeqTrainingArguments",
    finetuning_args: "FinetuningArguments",
    generating_args: "GeneratingArguments",
) -> list[TrainerCallback]:
    r"""The callbacks of the synthesis callback extension (none unless `synth_callback: true`)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not synth_args.synth_callback:
        return []

    if is_deepspeed_zero3_enabled() or training_args.fsdp:
        raise ValueError(
            "`synth_callback` generates with each rank's full model copy: it does not work with DeepSpeed "
            "ZeRO-3 or FSDP. Run `stage: synth` on the saved model instead."
        )

    return [SynthesisCallback(synth_args, model_args, data_args, training_args, generating_args)]
