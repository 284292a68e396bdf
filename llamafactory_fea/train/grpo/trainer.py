r"""TRL's GRPOTrainer with LLaMA-Factory's optimizers and callbacks, reward clipping and FEA metrics in the logs."""

from typing import TYPE_CHECKING, Any, Optional

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


FEA_METRICS = ("fea/format_rate", "fea/strict_format_rate", "fea/emotion_accuracy", "fea/au_f1")


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
        **kwargs,
    ) -> None:
        self.finetuning_args = finetuning_args
        self.reward_clip = reward_clip
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
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        if self.reward_clip is not None:
            weights = self.reward_weights.to(device)
            rewards_per_func, clipped = clip_reward_sums(rewards_per_func, weights, self.reward_clip)
            self._metrics[mode]["fea/clipped_ratio"].append(clipped.float().mean().item())

        rows = fea_metrics(completions, [x.get("emotion") for x in inputs], [x.get("aus") for x in inputs])
        metrics = self.accelerator.gather(torch.tensor(rows, dtype=torch.float32, device=device))
        for name, values in zip(FEA_METRICS, metrics.unbind(dim=1)):
            if not torch.isnan(values).all():
                self._metrics[mode][name].append(torch.nanmean(values).item())

        return rewards_per_func
