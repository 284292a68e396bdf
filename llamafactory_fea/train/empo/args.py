r"""YAML keys of the `empo` stage (light: imported at every training start, so no torch here).

The objective's own settings are LLaMA-Factory's: `pref_beta`, `pref_loss`, `pref_ftx`, `dpo_label_smoothing`,
`ref_model`; these keys only weigh the pair kinds.
"""

from dataclasses import dataclass, field

from ...data.pairs import PAIR_KINDS
from ...hparams import check_bounds, check_types


@dataclass
class EMPOArguments:
    r"""Weights of the pair kinds in the EMPO loss: each pair's DPO loss is multiplied by its kind's weight."""

    empo_response_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of response pairs (same image and prompt, one entity edited in the response)."},
    )
    empo_instruction_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of instruction pairs (same image and response, a false claim in the prompt)."},
    )
    empo_image_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of image pairs (same prompt and response, an AU's face region hidden or another face)."
        },
    )

    def __post_init__(self) -> None:
        check_types(self, "empo")
        check_bounds(self, "empo", at_least={f"empo_{kind}_weight": 0 for kind in PAIR_KINDS})

    @property
    def kind_weights(self) -> list[float]:
        r"""The weights in the order of `PAIR_KINDS`."""
        return [getattr(self, f"empo_{kind}_weight") for kind in PAIR_KINDS]
