r"""The FEA domain: emotions, action units, completion parsing and prompts (no training code)."""

from .aus import AU_CATALOGUE, ActionUnit, UnknownAUError, format_au, parse_au
from .emotions import EMOTIONS, LABEL_SPACES, UnknownEmotionError, normalize_emotion, try_normalize_emotion
from .parsing import ParsedCompletion, parse_completion
from .prompts import FEAPrompts


__all__ = [
    "AU_CATALOGUE",
    "EMOTIONS",
    "LABEL_SPACES",
    "ActionUnit",
    "FEAPrompts",
    "ParsedCompletion",
    "UnknownAUError",
    "UnknownEmotionError",
    "format_au",
    "normalize_emotion",
    "parse_au",
    "parse_completion",
    "try_normalize_emotion",
]
