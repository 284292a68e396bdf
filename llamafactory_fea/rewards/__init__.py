r"""Reward registry and the FEA reward functions (TRL signature: `reward(completions, **columns)`).

`reference.py` follows the released Facial-R1 code so runs are comparable with the paper; `strict.py` closes the holes
those rewards leave open; `weighting.py` holds the reference's AU-frequency sample weights. Every reward returns one
value per completion, `None` where a label it needs is missing (TRL leaves it out of the sum), and never raises on any
string or chat-message list. Label columns are normalised when a row is loaded; a reward handed a raw user column reads
it through the same `fea.labels` function.
"""

from .reference import au_f1, fea_au_f1, fea_emotion, fea_emotion_fuzzy, fea_format, indel_ratio
from .registry import REWARD_RANGES, REWARDS, RewardFunc, get_reward, register_reward
from .strict import fea_au_hallucination, fea_consistency, fea_strict_au_f1, fea_strict_emotion, fea_strict_format
from .weighting import AU_WEIGHT_COLUMN, REFERENCE_WEIGHT_SCALE, au_frequency_weights, with_sample_weights


__all__ = [
    "AU_WEIGHT_COLUMN",
    "REFERENCE_WEIGHT_SCALE",
    "REWARDS",
    "REWARD_RANGES",
    "RewardFunc",
    "au_f1",
    "au_frequency_weights",
    "fea_au_f1",
    "fea_au_hallucination",
    "fea_consistency",
    "fea_emotion",
    "fea_emotion_fuzzy",
    "fea_format",
    "fea_strict_au_f1",
    "fea_strict_emotion",
    "fea_strict_format",
    "get_reward",
    "indel_ratio",
    "register_reward",
    "with_sample_weights",
]
