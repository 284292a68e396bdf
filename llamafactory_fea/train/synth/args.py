r"""YAML keys of the `synth` stage and of the synthesis callback (light: imported at every training start)."""

import re
import warnings
from dataclasses import dataclass, field

from ...hparams import ArgumentError, check_bounds, check_types


BACKENDS = ("hf", "vllm")
KEEP_RULES = ("ours", "reference")  # as synthesizer.KEEP_RULES (this module stays light)
RETRY_FEEDBACK = ("last", "history")
OURS_DEFAULTS = {"synth_min_au_f1": 1.0, "synth_require_emotion": True, "synth_strict_format": False}
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
DEPRECATED_KEYS = {  # documented spellings before one prefix per stage: old key -> new key
    "synthesis_callback": "synth_callback",
    "synthesis_dataset": "synth_callback_dataset",
    "synthesis_every_n_epochs": "synth_callback_every_n_epochs",
}


@dataclass
class SynthesisArguments:
    r"""Arguments of reward-verified data synthesis (stage 3 of Facial-R1)."""

    synth_dataset_name: str = field(
        default="fea_synth",
        metadata={
            "help": "Name under which the kept samples are registered in `synth_dataset_dir/dataset_info.json`."
        },
    )
    synth_dataset_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder whose `dataset_info.json` registers the synthesized dataset "
            "(e.g. `data_registry`, so the next `fea_sft.yaml` can list it). Defaults to `output_dir`."
        },
    )
    synth_dataset_file: str | None = field(
        default=None,
        metadata={
            "help": "File of the synthesized dataset, relative to `synth_dataset_dir`. Defaults to `<name>.jsonl`."
        },
    )
    synth_max_retries: int = field(
        default=5,
        metadata={
            "help": "Retries after a rejected answer; each retry is told what was wrong (see synth_retry_feedback)."
        },
    )
    synth_retry_feedback: str = field(
        default="last",
        metadata={
            "help": "What a retry prompt shows: `last` (the guided prompt, the last rejected answer and what was "
            "wrong with it) or `history` (the reference's way: the previous prompt grown by that, so each retry sees "
            "every earlier answer and what was wrong with each; prompts get longer with every retry)."
        },
    )
    synth_keep_rule: str = field(
        default="ours",
        metadata={
            "help": "When a completion is kept; each label is checked only where the sample has it (emotion-only: "
            "the answer; AU-only: the AU set; both: both). `ours`: both tags non-empty, the AUs named in <think> "
            "are the labelled set (AU F1 >= synth_min_au_f1), the last <answer> is the labelled emotion "
            "(synth_require_emotion), no parser fault with synth_strict_format; the row is the kept reasoning with "
            "the labelled emotion. `reference` (the released code): the AUs are every `AU<digits>` anywhere in the "
            "output, the emotion is the first <answer> split on commas and compared as a set, no tag required, an "
            "empty AU list is no label; the row is the completion as generated."
        },
    )
    synth_min_au_f1: float = field(
        default=1.0,
        metadata={
            "help": "Rule `ours`: least AU set F1 between the AUs named in <think> and the labelled AUs for a sample "
            "to be kept (1.0: exactly the labelled AU set, as the reference)."
        },
    )
    synth_require_emotion: bool = field(
        default=True,
        metadata={"help": "Rule `ours`: keep an emotion-labelled sample only if its answer is the labelled emotion."},
    )
    synth_strict_format: bool = field(
        default=False,
        metadata={
            "help": "Rule `ours`: also require a completion the FEA parser finds no fault with (one think block then "
            "one answer, nothing around them, real reasoning). Otherwise both tags non-empty suffice."
        },
    )
    synth_batch_size: int = field(
        default=8,
        metadata={"help": "Prompts generated together (first tries and retries share the batch)."},
    )
    synth_backend: str = field(
        default="hf",
        metadata={
            "help": "Generation backend: `hf` (batched `generate` of the model loaded by LLaMA-Factory), `vllm` "
            "(needs `pip install vllm`), or `package.module.factory` returning an object with "
            "`generate(requests) -> list[str]`."
        },
    )
    synth_stop_after: int | None = field(
        default=None,
        metadata={"help": "Stop this run after this many newly processed samples per rank; run again to continue."},
    )
    synth_resume: bool = field(
        default=True,
        metadata={"help": "Continue from the journal in `output_dir` (skip processed samples); false starts afresh."},
    )
    synth_prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "JSON file of FEA prompt templates (keys of `FEAPrompts`, `base`: the set it starts from) for the "
            "guided and retry prompts. Unset: the run's `fea_prompt_set`, else `concise`."
        },
    )

    def __post_init__(self) -> None:
        check_types(self, "synth")
        if not _DATASET_NAME.match(self.synth_dataset_name or ""):
            raise ArgumentError(
                f"synth key `synth_dataset_name` must be letters, digits, `_`, `-` or `.`, got {self.synth_dataset_name!r}."
            )

        check_bounds(
            self,
            "synth",
            at_least={"synth_max_retries": 0, "synth_min_au_f1": 0, "synth_batch_size": 1, "synth_stop_after": 1},
            at_most={"synth_min_au_f1": 1},
        )
        for key, choices in (("synth_keep_rule", KEEP_RULES), ("synth_retry_feedback", RETRY_FEEDBACK)):
            if getattr(self, key) not in choices:
                raise ArgumentError(f"synth key `{key}` must be {' or '.join(choices)}, got {getattr(self, key)!r}.")

        ours_only = [key for key, value in OURS_DEFAULTS.items() if getattr(self, key) != value]
        if self.synth_keep_rule == "reference" and ours_only:
            raise ArgumentError(
                f"synth keys {', '.join(f'`{key}`' for key in ours_only)} set the `ours` keep rule: remove them, or "
                "use `synth_keep_rule: ours`."
            )

        if self.synth_backend not in BACKENDS and "." not in self.synth_backend:
            raise ArgumentError(
                f"synth key `synth_backend` must be {', '.join(BACKENDS)} or a dotted path, got {self.synth_backend!r}."
            )


@dataclass
class SynthesisCallbackArguments(SynthesisArguments):
    r"""Keys any training YAML (SFT, GRPO) accepts to run synthesis with the in-memory model during training."""

    synth_callback: bool = field(
        default=False,
        metadata={
            "help": "Run reward-verified synthesis with the model being trained (the other `synth_*` keys apply)."
        },
    )
    synth_callback_dataset: str | None = field(
        default=None,
        metadata={"help": "Labelled dataset(s) of `dataset_dir` to synthesize on, comma-separated."},
    )
    synth_callback_every_n_epochs: int | None = field(
        default=None,
        metadata={"help": "Also synthesize after every N epochs; unset: only at the end of training."},
    )
    synthesis_callback: bool | None = field(
        default=None,
        metadata={"help": "Deprecated spelling of `synth_callback`."},
    )
    synthesis_dataset: str | None = field(
        default=None,
        metadata={"help": "Deprecated spelling of `synth_callback_dataset`."},
    )
    synthesis_every_n_epochs: int | None = field(
        default=None,
        metadata={"help": "Deprecated spelling of `synth_callback_every_n_epochs`."},
    )

    def __post_init__(self) -> None:
        for old, new in DEPRECATED_KEYS.items():
            value = getattr(self, old)
            if value is not None:
                if getattr(self, new) not in (None, False, value):
                    raise ArgumentError(f"synth key `{old}` is the deprecated spelling of `{new}`: give `{new}` only.")

                warnings.warn(f"synth key `{old}` is deprecated: use `{new}`.", FutureWarning, stacklevel=2)
                setattr(self, new, value)

        super().__post_init__()
        check_bounds(self, "synth", at_least={"synth_callback_every_n_epochs": 1})
        if self.synth_callback and not self.synth_callback_dataset:
            raise ArgumentError(
                "synth key `synth_callback` needs `synth_callback_dataset` (a labelled dataset in `dataset_dir`)."
            )

        if self.synth_callback and self.synth_backend == "vllm":
            raise ArgumentError("The synthesis callback generates with the in-memory model: use `synth_backend: hf`.")
