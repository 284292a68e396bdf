r"""TRL's GRPOTrainer with LLaMA-Factory's optimizers and callbacks, checked and clipped rewards, FEA metrics in the logs."""

import functools
import numbers
from collections.abc import Iterable, Mapping
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


class CustomGRPOTrainer(GRPOTrainer):
    r"""GRPO on a model loaded by LLaMA-Factory: its optimizers and schedulers, the processor saved with checkpoints."""

    def __init__(
        self,
        finetuning_args: "FinetuningArguments",
        processor: Optional["ProcessorMixin"] = None,
        reward_clip: float | None = None,
        reward_checks: RewardChecks | None = None,
        **kwargs,
    ) -> None:
        self.finetuning_args = finetuning_args
        self.reward_clip = reward_clip
        self.reward_checks = reward_checks
        super().__init__(**kwargs)
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
