r"""TRL's GRPOTrainer with LLaMA-Factory's optimizers and callbacks, checked and clipped rewards, FEA metrics in the logs."""

import functools
import numbers
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from llamafactory.train.callbacks import SaveProcessorCallback
from llamafactory.train.trainer_utils import create_custom_optimizer, create_custom_scheduler
from trl import GRPOTrainer
from typing_extensions import override

from ...fea.labels import reference_aus
from ...fea.parsing import completion_text
from ...rewards import au_f1, fea_emotion, fea_format, fea_strict_format


if TYPE_CHECKING:
    from llamafactory.hparams import FinetuningArguments
    from transformers import ProcessorMixin

    from ...rewards import RewardFunc


FEA_METRICS = ("fea/format_rate", "fea/strict_format_rate", "fea/emotion_accuracy", "fea/au_f1")
FLOAT32_MAX = torch.finfo(torch.float32).max  # TRL holds rewards as float32: beyond this a value becomes inf
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
LOSS_WEIGHT_KEY = "fea_loss_weight"  # per-completion AU weight carried to the loss (au_frequency_weighting)


class RewardChecks:
    r"""Checks each reward function's output after every call: one number or None per completion, never NaN or inf.

    A reward that raises, returns another count, a non-number or (with `nonfinite="error"`) NaN or inf stops the run
    with the reward, the batch and the completion named; with `nonfinite="skip"` NaN and inf become None (left out of
    the completion's sum) and are counted in `skipped` until the trainer resets it.
    """

    def __init__(self, nonfinite: str = "error") -> None:
        self.nonfinite = nonfinite
        self.skipped = 0

    def wrap(self, func: "RewardFunc", name: str) -> "RewardFunc":
        r"""`func` with its output checked; keeps `__name__`, which TRL names the reward's logs after."""

        @functools.wraps(func)
        def checked(completions: list[Any], **kwargs) -> list[float | None]:
            try:
                values = func(completions=completions, **kwargs)
            except Exception as err:
                raise ValueError(
                    f"Reward {name} raised {type(err).__name__}: {err} on a batch of {len(completions)} completions "
                    f"(the first: {_sample(completions, 0)})."
                ) from err

            return self.check(name, completions, values)

        return checked

    def check(self, name: str, completions: list[Any], values: Any) -> list[float | None]:
        r"""The values of reward `name` as floats and None; ValueError naming the reward, the batch and the completion."""
        values = values.tolist() if isinstance(values, (torch.Tensor, np.ndarray)) else values
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
            raise ValueError(
                f"Reward {name} returned a {type(values).__name__}, not a list of {len(completions)} values (one number "
                f"or None per completion), for a batch whose first completion is {_sample(completions, 0)}."
            )

        values = list(values)
        if len(values) != len(completions):
            raise ValueError(
                f"Reward {name} returned {len(values)} values for a batch of {len(completions)} completions: it must "
                f"return one number (or None) per completion. First completion: {_sample(completions, 0)}."
            )

        checked: list[float | None] = []
        for index, value in enumerate(values):
            number = _number(value)
            if value is not None and number is None:
                raise ValueError(
                    f"Reward {name} returned {value!r} ({type(value).__name__}) for completion {index} of a batch of "
                    f"{len(completions)}, not a number or None: {_sample(completions, index)}."
                )

            if number is not None and not abs(number) <= FLOAT32_MAX:
                if self.nonfinite == "error":
                    raise ValueError(
                        f"Reward {name} returned {number} for completion {index} of a batch of {len(completions)}: "
                        f"{_sample(completions, index)}. Return None to leave a completion out, or set the grpo key "
                        "`reward_nonfinite: skip` to leave such values out (counted as fea/skipped_rewards)."
                    )

                self.skipped += 1
                number = None

            checked.append(number)

        return checked


def _number(value: Any) -> float | None:
    r"""A reward value as a float (Python and NumPy numbers); None for anything else."""
    return float(value) if isinstance(value, numbers.Real) else None


def _sample(completions: list[Any], index: int, limit: int = 200) -> str:
    r"""A completion of the batch for an error message, shortened to `limit` characters."""
    if not completions:
        return "(none)"

    text = completion_text(completions[index])
    return repr(text if len(text) <= limit else text[:limit] + " ...")


def fea_metrics(completions: list[Any], emotions: list[Any], aus: list[Any]) -> list[list[float]]:
    r"""Per completion: reference format, strict format, emotion accuracy and AU F1 (NaN where a label is missing).

    The rows' `emotion` and `aus` were normalised when the dataset was loaded and are read as they are.
    """
    formats = fea_format(completions)
    stricts = fea_strict_format(completions)
    accuracies = fea_emotion(completions, emotion=emotions)
    rows = []
    for completion, fmt, strict, accuracy, labelled in zip(completions, formats, stricts, accuracies, aus):
        expected = frozenset(f"AU{number}" for number in labelled or ())
        f1 = au_f1(reference_aus(completion_text(completion)), expected)
        rows.append([fmt, strict, float("nan") if accuracy is None else accuracy, f1 if expected else float("nan")])

    return rows


def clip_reward_sums(
    rewards_per_func: torch.Tensor, weights: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Scale each row down so that its weighted sum lies in [-clip, clip]; also return which rows were clipped.

    TRL sums `rewards_per_func * weights` (NaN left out) into the reward of a completion; after this, that sum is the
    reference's `clamp(sum, -clip, clip)`.
    """
    total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    scale = (clip / total.abs().clamp(min=1e-12)).clamp(max=1.0)
    return rewards_per_func * scale.unsqueeze(1), scale < 1.0


def think_spans(text: str) -> list[tuple[int, int]]:
    r"""Character spans strictly inside each `<think> ... </think>` pair (an unclosed `<think>` gives none).

    >>> think_spans("<think>ab</think><answer>c</answer>"), think_spans("<think>ab"), think_spans("ab")
    ([(7, 9)], [], [])
    """
    spans, start = [], 0
    while (opened := text.find(THINK_OPEN, start)) >= 0:
        inner = opened + len(THINK_OPEN)
        closed = text.find(THINK_CLOSE, inner)
        if closed < 0:
            break

        spans.append((inner, closed))
        start = closed + len(THINK_CLOSE)

    return spans


def think_span_mask(completion_ids: torch.Tensor, completion_mask: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    r"""1 for each completion token with at least one character inside a `<think> ... </think>` pair, else 0.

    Tokens are decoded one by one, so a span is found however the tags were tokenised in context; the result is
    also 0 wherever `completion_mask` is (padding after EOS, masked truncated completions).
    """
    mask = torch.zeros_like(completion_mask)
    for row, ids in enumerate(completion_ids.tolist()):
        pieces = tokenizer.batch_decode([[token] for token in ids], skip_special_tokens=False)
        spans = think_spans("".join(pieces))
        if not spans:
            continue

        end = 0
        for column, piece in enumerate(pieces):
            start, end = end, end + len(piece)
            if start < end and any(start < high and end > low for low, high in spans):
                mask[row, column] = 1

    return mask * completion_mask


class CustomGRPOTrainer(GRPOTrainer):
    r"""GRPO on a model loaded by LLaMA-Factory: its optimizers and schedulers, the processor saved with checkpoints."""

    def __init__(
        self,
        finetuning_args: "FinetuningArguments",
        processor: Optional["ProcessorMixin"] = None,
        reward_clip: float | None = None,
        reward_checks: RewardChecks | None = None,
        think_span_terms: Sequence[bool] | None = None,
        loss_weight_column: str | None = None,
        **kwargs,
    ) -> None:
        self.finetuning_args = finetuning_args
        self.reward_clip = reward_clip
        self.reward_checks = reward_checks
        self.think_span_terms = list(think_span_terms) if think_span_terms is not None else None
        self.loss_weight_column = loss_weight_column
        super().__init__(**kwargs)
        if self.think_span_terms is not None and self.loss_type == "dapo":
            raise ValueError(
                "The per-reward loss needs loss_type grpo, bnpo or dr_grpo (dapo normalises by all tokens)."
            )

        if processor is not None:
            self.add_callback(SaveProcessorCallback(processor))

    @override
    def create_optimizer(self, *args, **kwargs) -> "torch.optim.Optimizer":
        if self.optimizer is None:
            self.optimizer = create_custom_optimizer(self.model, self.args, self.finetuning_args)

        optimizer = super().create_optimizer(*args, **kwargs)
        # LoRA leaves the no-decay group empty: DeepSpeed drops empty groups, and torch's LR scheduler then refuses
        # the mismatch with the groups it was built on, so drop them before either sees them
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
        return optimizer

    @override
    def create_scheduler(
        self, num_training_steps: int, optimizer: Optional["torch.optim.Optimizer"] = None
    ) -> "torch.optim.lr_scheduler.LRScheduler":
        create_custom_scheduler(self.args, num_training_steps, optimizer)
        return super().create_scheduler(num_training_steps, optimizer)

    @override
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list) -> torch.Tensor:
        if self.reward_checks is not None:
            self.reward_checks.skipped = 0

        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        if self.reward_checks is not None and self.reward_checks.nonfinite == "skip":
            skipped = self.accelerator.gather(torch.tensor([self.reward_checks.skipped], device=device))
            self._metrics[mode]["fea/skipped_rewards"].append(skipped.sum().item())

        weights = self.reward_weights.to(device)
        if self.reward_clip is not None:
            rewards_per_func, clipped = clip_reward_sums(rewards_per_func, weights, self.reward_clip)
            self._metrics[mode]["fea/clipped_ratio"].append(clipped.float().mean().item())

        if not torch.isfinite((rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)).all():
            raise ValueError(
                "The weighted reward sum of a completion is beyond float32's range: lower the rewards or "
                "`reward_weights`, or set `reward_clip`."
            )

        rows = fea_metrics(completions, [x.get("emotion") for x in inputs], [x.get("aus") for x in inputs])
        metrics = self.accelerator.gather(torch.tensor(rows, dtype=torch.float32, device=device))
        for name, values in zip(FEA_METRICS, metrics.unbind(dim=1)):
            if not torch.isnan(values).all():
                self._metrics[mode][name].append(torch.nanmean(values).item())

        return rewards_per_func

    @override
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if self.loss_weight_column is not None:  # one weight per completion of this process, split with the rest
            weights = [float(x.get(self.loss_weight_column) or 0.0) for x in inputs]
            output[LOSS_WEIGHT_KEY] = torch.tensor(weights, dtype=torch.float32, device=self.accelerator.device)

        return output

    @override
    def _compute_loss(self, model, inputs):
        if self.think_span_terms is None:
            loss = super()._compute_loss(model, inputs)
        else:
            loss = self._per_reward_loss(model, inputs)

        if self.loss_weight_column is not None:  # the later reference: the loss times the batch's weight sum
            loss = loss * inputs[LOSS_WEIGHT_KEY].sum().to(loss.dtype)

        return loss

    def _per_reward_loss(self, model, inputs) -> torch.Tensor:
        r"""One TRL loss term per reward (same advantages), each over its own token mask, averaged over rewards.

        Rewards sharing a mask share one term (their terms are equal), so without a think-span reward this is
        TRL's loss exactly. The policy's log-probabilities are computed once, with the full attention mask.
        """
        counts = Counter("think" if think else "all" for think in self.think_span_terms)
        if set(counts) == {"all"}:
            return super()._compute_loss(model, inputs)

        completion_mask = inputs["completion_mask"]
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        masks = {
            "all": completion_mask,
            "think": think_span_mask(inputs["completion_ids"], completion_mask, tokenizer),
        }
        total = sum(counts.values())
        metrics = self._metrics["train" if self.model.training else "eval"]
        kept: dict[str, int] = {}
        loss = None
        with self._shared_logps(inputs):
            for key in sorted(counts):  # "all" first: TRL's metrics (KL, entropy, clip ratios) are logged for it
                term = super()._compute_loss(model, {**inputs, "completion_mask": masks[key]})
                kept = kept or {name: len(values) for name, values in metrics.items()}
                loss = term * (counts[key] / total) if loss is None else loss + term * (counts[key] / total)

        for name, values in metrics.items():
            del values[kept.get(name, len(values)) :]

        return loss

    @contextmanager
    def _shared_logps(self, inputs: dict[str, Any]) -> Iterator[None]:
        r"""Compute the policy's log-probabilities once, attending to every completion token, for all terms."""
        stock = self._get_per_token_logps_and_entropies
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        cache: list[Any] = []

        def shared(model, input_ids, _attention_mask, *args, **kwargs):
            if not cache:
                cache.append(stock(model, input_ids, attention_mask, *args, **kwargs))

            return cache[0]

        self._get_per_token_logps_and_entropies = shared
        try:
            yield
        finally:
            del self._get_per_token_logps_and_entropies
