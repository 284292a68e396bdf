r"""The FEA domain: emotions, action units, labels and tags, completion parsing and prompts (no training code)."""

from .aus import AU_CATALOGUE, ActionUnit, UnknownAUError, format_au, parse_au
from .emotions import EMOTIONS, LABEL_SPACES, UnknownEmotionError, normalize_emotion, try_normalize_emotion
from .labels import extract_labels, label_aus, label_emotion
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
    "extract_labels",
    "format_au",
    "label_aus",
    "label_emotion",
    "normalize_emotion",
    "parse_au",
    "parse_completion",
    "try_normalize_emotion",
]
