r"""Emotion labels: the normalised noun set, synonyms and the label space of each dataset."""

BASIC_EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
EMOTIONS: tuple[str, ...] = (*BASIC_EMOTIONS, "contempt")

SYNONYMS: dict[str, str] = {
    "angry": "anger",
    "anger": "anger",
    "mad": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happiness": "happiness",
    "happy": "happiness",
    "joy": "happiness",
    "joyful": "happiness",
    "neutral": "neutral",
    "neutrality": "neutral",
    "sadness": "sadness",
    "sad": "sadness",
    "sorrow": "sadness",
    "surprise": "surprise",
    "surprised": "surprise",
    "contempt": "contempt",
    "contemptuous": "contempt",
}

LABEL_SPACES: dict[str, tuple[str, ...]] = {
    "fea20k": BASIC_EMOTIONS,
    "rafdb": BASIC_EMOTIONS,
    "fer2013": BASIC_EMOTIONS,
    "ferplus": EMOTIONS,
    "affectnet": EMOTIONS,
    "ckplus": EMOTIONS,
    "raf_au": tuple(e for e in BASIC_EMOTIONS if e != "neutral"),
    "faba": BASIC_EMOTIONS,
    "demo": BASIC_EMOTIONS,
    # AU-only benchmarks: an emotion label, where a file gives one, is a basic emotion
    "disfa": BASIC_EMOTIONS,
    "bp4d": BASIC_EMOTIONS,
    # further sources of the reference's data config (`open_r1/configs/config.json`)
    "expw": BASIC_EMOTIONS,
    "sfew": BASIC_EMOTIONS,
    "jaffe": BASIC_EMOTIONS,
    "kdef": BASIC_EMOTIONS,
    "wsefep": BASIC_EMOTIONS,
    "nhfi": EMOTIONS,
    "nimh_chefs": ("anger", "fear", "happiness", "neutral", "sadness"),
}

SOURCE_ALIASES: dict[str, str] = {"ck": "ckplus", "fabainstruct": "faba", "rafau": "raf_au", "nimhchefs": "nimh_chefs"}


def source_key(name: str | None) -> str | None:
    r"""The `LABEL_SPACES` key of a source name as data spells it ("RAF-DB", "CK+", "FABA-Instruct"), else None.

    >>> source_key("RAF-DB"), source_key("CK+"), source_key("raf_au"), source_key("AffectNet"), source_key("Mine")
    ('rafdb', 'ckplus', 'raf_au', 'affectnet', None)
    """
    key = "".join(char for char in str(name or "").lower() if char.isalnum())
    key = SOURCE_ALIASES.get(key, key)
    return key if key in LABEL_SPACES else None


def source_label_space(name: str | None, default: tuple[str, ...] = BASIC_EMOTIONS) -> tuple[str, ...]:
    r"""The emotion label space of a source dataset by name, in any spelling (`source_key`); `default` when unknown.

    >>> "contempt" in source_label_space("AffectNet"), "contempt" in source_label_space("RAF-DB")
    (True, False)
    """
    key = source_key(name)
    return LABEL_SPACES[key] if key else default


class UnknownEmotionError(ValueError):
    r"""An emotion word outside the normalised label set."""


def try_normalize_emotion(word: str) -> str | None:
    r"""Return the normalised noun for an emotion word (any case, adjective or synonym), else None."""
    return SYNONYMS.get(word.strip().strip(".!").strip().lower())


def normalize_emotion(word: str, label_space: tuple[str, ...] = EMOTIONS) -> str:
    r"""Return the normalised noun for an emotion word, raising `UnknownEmotionError` with the fix."""
    emotion = try_normalize_emotion(word)
    if emotion is None:
        raise UnknownEmotionError(
            f"unknown emotion {word!r}: use one of {', '.join(label_space)} (or an adjective form)."
        )

    if emotion not in label_space:
        raise UnknownEmotionError(f"emotion {emotion!r} is not in this label space: {', '.join(label_space)}.")

    return emotion
