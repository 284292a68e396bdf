r"""The facial Action Unit (AU) catalogue of the FEA prompt: 30 AUs with FACS names and face regions."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionUnit:
    r"""One facial Action Unit of FACS."""

    number: int
    name: str
    region: str

    def __str__(self) -> str:
        return f"AU{self.number} {self.name}"


_CATALOGUE: list[tuple[int, str, str]] = [
    (1, "inner brow raiser", "brow"),
    (2, "outer brow raiser", "brow"),
    (4, "brow lowerer", "brow"),
    (5, "upper lid raiser", "eye"),
    (6, "cheek raiser", "eye"),
    (7, "lid tightener", "eye"),
    (9, "nose wrinkler", "nose"),
    (10, "upper lip raiser", "mouth"),
    (11, "nasolabial deepener", "nose"),
    (12, "lip corner puller", "mouth"),
    (13, "sharp lip puller", "mouth"),
    (14, "dimpler", "mouth"),
    (15, "lip corner depressor", "mouth"),
    (16, "lower lip depressor", "mouth"),
    (17, "chin raiser", "chin"),
    (18, "lip pucker", "mouth"),
    (19, "tongue show", "mouth"),
    (20, "lip stretcher", "mouth"),
    (22, "lip funneler", "mouth"),
    (23, "lip tightener", "mouth"),
    (24, "lip pressor", "mouth"),
    (25, "lips part", "mouth"),
    (26, "jaw drop", "jaw"),
    (27, "mouth stretch", "jaw"),
    (28, "lip suck", "mouth"),
    (29, "jaw thrust", "jaw"),
    (30, "jaw sideways", "jaw"),
    (31, "jaw clencher", "jaw"),
    (32, "lip bite", "mouth"),
    (43, "eyes closed", "eye"),
]

AU_CATALOGUE: dict[int, ActionUnit] = {number: ActionUnit(number, name, region) for number, name, region in _CATALOGUE}

# EMFACS prototypes: the AUs that typically make up each emotion (used to judge whether reasoning supports an answer)
EMOTION_PROTOTYPES: dict[str, frozenset[int]] = {
    "anger": frozenset({4, 5, 7, 23, 24}),
    "contempt": frozenset({12, 14}),
    "disgust": frozenset({9, 10, 15, 16, 17}),
    "fear": frozenset({1, 2, 4, 5, 7, 20, 26}),
    "happiness": frozenset({6, 12, 25}),
    "neutral": frozenset(),
    "sadness": frozenset({1, 4, 15, 17}),
    "surprise": frozenset({1, 2, 5, 26, 27}),
}


class UnknownAUError(ValueError):
    r"""An AU outside the catalogue, or a string that names no AU."""


def parse_au(value: "int | str") -> int:
    r"""Return the catalogue number of an AU given as 4, "4", "AU4" or "au04", raising `UnknownAUError`."""
    text = str(value).strip().upper().removeprefix("AU").strip()
    if not text.isdigit():
        raise UnknownAUError(f"{value!r} is not an AU: write it as AU4 or 4.")

    number = int(text)
    if number not in AU_CATALOGUE:
        raise UnknownAUError(
            f"AU{number} is not in the catalogue: use one of {', '.join(format_au(n) for n in AU_CATALOGUE)}."
        )

    return number


def format_au(number: int) -> str:
    r"""Return the canonical spelling of an AU number, e.g. "AU4"."""
    return f"AU{number}"


def supports_emotion(aus: "frozenset[int] | set[int]", emotion: str) -> bool:
    r"""Whether a set of AUs is evidence for an emotion: shares a prototype AU, or few AUs for neutral."""
    if emotion == "neutral":
        return len(aus) <= 1

    return bool(set(aus) & EMOTION_PROTOTYPES.get(emotion, frozenset()))
