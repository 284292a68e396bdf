r"""`EMPOTrainer`: LLaMA-Factory's DPO trainer with a weight per pair kind and metrics per pair kind."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from llamafactory.train.dpo.trainer import CustomDPOTrainer
from typing_extensions import override

from ...data.pairs import PAIR_KINDS


if TYPE_CHECKING:
    from transformers import PreTrainedModel


STATS = ("loss", "margin", "accuracy", "count")  # per pair kind, summed over a logging window


class EMPOTrainer(CustomDPOTrainer):
    r"""Each pair's preference loss (LLaMA-Factory's `pref_loss`, `pref_beta`, reference model) times its kind's weight.

    The batch loss is the mean over pairs of `weight[kind] * loss` (`pref_ftx`'s SFT term is added unweighted, as
    stock adds it). Logged per kind, over the pairs of that kind seen since the last log, across processes:
    `loss/<kind>` (unweighted), `rewards/<kind>/margins`, `rewards/<kind>/accuracies`, `pairs/<kind>` (count).
    """

    def __init__(self, *args, kind_weights: Sequence[float], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if len(kind_weights) != len(PAIR_KINDS):
            raise ValueError(f"Give one weight per pair kind ({', '.join(PAIR_KINDS)}), got {list(kind_weights)}.")

        self.kind_weights = torch.tensor(kind_weights, dtype=torch.float32)
        self._kind_stats = {split: torch.zeros(len(PAIR_KINDS), len(STATS)) for split in ("train", "eval")}
        self._batch_kinds: torch.Tensor | None = None
        self._batch_split = "train"

    @override
    def get_batch_loss_metrics(
        self,
        model: "PreTrainedModel",
        batch: dict[str, "torch.Tensor"],
        train_eval: Literal["train", "eval"] = "train",
    ) -> tuple["torch.Tensor", dict[str, "torch.Tensor"]]:
        r"""Take the pair kinds out of the batch (the model must not see them), then the stock loss and metrics."""
        kinds = batch.pop("pair_kinds", None)
        if kinds is None:  # a stock pairwise batch: response pairs
            kinds = torch.zeros(batch["input_ids"].size(0) // 2, dtype=torch.long)

        self._batch_kinds, self._batch_split = kinds, train_eval
        try:
            return super().get_batch_loss_metrics(model, batch, train_eval)
        finally:
            self._batch_kinds = None

    @override
    def compute_preference_loss(
        self,
        policy_chosen_logps: "torch.Tensor",
        policy_rejected_logps: "torch.Tensor",
        reference_chosen_logps: "torch.Tensor | None",
        reference_rejected_logps: "torch.Tensor | None",
    ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        r"""The stock per-pair losses, recorded per kind, then multiplied by the weight of each pair's kind."""
        losses, chosen_rewards, rejected_rewards = super().compute_preference_loss(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
        )
        kinds = self._batch_kinds.to(losses.device)
        margins = (chosen_rewards - rejected_rewards).detach().float()
        stats = torch.stack(
            [losses.detach().float(), margins, (margins > 0).float(), torch.ones_like(margins)], dim=-1
        ).cpu()
        self._kind_stats[self._batch_split].index_add_(0, kinds.cpu(), stats)
        return losses * self.kind_weights.to(losses.device, losses.dtype)[kinds], chosen_rewards, rejected_rewards

    @override
    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        r"""Add the per-kind metrics of the window (summed across processes, the same keys on each), then stock."""
        split = "train" if "loss" in logs else "eval"
        prefix = "eval_" if split == "eval" else ""
        stats = self.accelerator.reduce(self._kind_stats[split].to(self.accelerator.device), "sum").cpu()
        self._kind_stats[split].zero_()
        for kind, (loss, margin, accuracy, count) in zip(PAIR_KINDS, stats.tolist()):
            if count > 0:
                logs[f"{prefix}loss/{kind}"] = loss / count
                logs[f"{prefix}rewards/{kind}/margins"] = margin / count
                logs[f"{prefix}rewards/{kind}/accuracies"] = accuracy / count
                logs[f"{prefix}pairs/{kind}"] = count

        return super().log(logs, *args, **kwargs)
