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
}


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
