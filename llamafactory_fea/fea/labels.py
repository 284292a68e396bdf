r"""What an FEA label is and where it comes from: the tags of a completion, emotion and AU labels, their columns.

The one module that reads a tag or a label. The tag readers serve the parser (`parsing.py`) and the readings of the
released Facial-R1 code (`open_r1/grpo_jsonl.py`), kept exactly so the reference rewards grade what it grades. They
read in linear time: the released regexes (`<think>(.*?)</think>` and the like) backtrack quadratically on text with
many opening tags and no closing one, and eval and synthesis parse arbitrary text (tests hold the regexes as oracles).
`label_emotion` and `label_aus` say what a label value is: lenient for rewards handed raw user columns, strict (raising
`UnknownEmotionError`/`UnknownAUError`) for evaluation. `extract_labels` finds a row's labels in its columns, under
their aliases, or else in its reference answer; LLaMA-Factory's converters call it once, when a row is loaded. A label
may be missing (None, "not labelled"), which differs from an empty AU list ("labelled: no active AU").
"""

import re
from typing import Any

from .aus import parse_au
from .emotions import EMOTIONS, SYNONYMS, normalize_emotion, try_normalize_emotion


THINK_TAGS = (re.compile("<think>"), re.compile("</think>"))
ANSWER_TAGS = (re.compile("<answer>"), re.compile("</answer>"))
REFERENCE_THINK_TAGS = (re.compile("<think>", re.IGNORECASE), re.compile("</think>", re.IGNORECASE))  # its AU block
FORMAT_JOINT = re.compile(r"</think>\s*<answer>")  # where the reference's format wants the think block to end
TAG_PATTERN = re.compile(r"</?(?:think|answer)>")
AU_PATTERN = re.compile(r"AU(\d+)")  # an AU named in reasoning
LABEL_AU_PATTERN = re.compile(r"0*(\d{1,6})")  # an AU in a label value, 4, "AU4", "au04": its digits, zeros dropped
MAX_AU_DIGITS = 6  # longer digit runs are not AUs (and `int` refuses very long ones)
OUT_OF_RANGE_AU = 10**MAX_AU_DIGITS

EMOTION_COLUMNS: tuple[str, ...] = ("emotion", "label", "labels")  # FEA-20K keeps `labels: ["Sadness"]`
AUS_COLUMNS: tuple[str, ...] = ("aus", "AUs")


def first_block(text: str, tags: tuple[re.Pattern, re.Pattern]) -> str | None:
    r"""What `re.search(open + "(.*?)" + close, text, re.DOTALL)` captures, in linear time.

    >>> first_block("<think>a</think><think>b</think>", THINK_TAGS), first_block("<think>a", THINK_TAGS)
    ('a', None)
    """
    opening = tags[0].search(text)  # if the first opening tag has no closing tag after it, no later one has
    closing = tags[1].search(text, opening.end()) if opening else None
    return text[opening.end() : closing.start()] if closing else None


def last_block(text: str, tags: tuple[re.Pattern, re.Pattern]) -> str | None:
    r"""What `re.findall(open + "(.*?)" + close, text, re.DOTALL)[-1]` captures (None for no match), in linear time.

    >>> last_block("<answer>a<answer>b</answer>c</answer>", ANSWER_TAGS)
    'a<answer>b'
    """
    block, position = None, 0
    while (opening := tags[0].search(text, position)) and (closing := tags[1].search(text, opening.end())):
        block, position = (opening.end(), closing.start()), closing.end()

    return text[block[0] : block[1]] if block else None


def well_formed(text: str) -> bool:
    r"""The reference's format check, `<think>.*?</think>\s*<answer>.*?</answer>` matching the whole text, in linear time.

    >>> well_formed("<think>a</think>\n<answer>b</answer>"), well_formed("<think>a</think><answer>b</answer>.")
    (True, False)
    """
    if not text.startswith("<think>") or not text.endswith("</answer>"):
        return False

    joint = FORMAT_JOINT.search(text, len("<think>"))  # the first joint is the one to try: a later one ends later
    return joint is not None and joint.end() <= len(text) - len("</answer>")


def think_text(text: str | None) -> str | None:
    r"""The reasoning: the first `<think>` block, stripped; None without one.

    >>> think_text("<think> Brows down (AU4). </think><answer>anger</answer>")
    'Brows down (AU4).'
    """
    think = first_block(text or "", THINK_TAGS)
    return None if think is None else think.strip()


def answer_text(text: str | None) -> str | None:
    r"""The answer: the last `<answer>` block, stripped; None without one."""
    answer = last_block(text or "", ANSWER_TAGS)
    return None if answer is None else answer.strip()


def named_aus(reasoning: str | None) -> frozenset[int]:
    r"""The AU numbers named (`AU<digits>`) in a reasoning; a run too long to be any AU counts as one outside the catalogue.

    >>> sorted(named_aus("Brows pulled together (AU4), lips down (AU15); au12 is not named."))
    [4, 15]
    """
    numbers = set(AU_PATTERN.findall(reasoning or ""))
    return frozenset(int(digits) if len(digits) <= MAX_AU_DIGITS else OUT_OF_RANGE_AU for digits in numbers)


def named_emotions(text: str) -> list[str]:
    r"""Every emotion a text names, as normalised nouns in order of first mention (in an answer, more than one is a hedge).

    >>> named_emotions("Sad, or maybe angry; sadness.")
    ['sadness', 'anger']
    """
    words = dict.fromkeys(re.findall(r"[a-z]+", text.lower()))  # each word once, in order: a long text repeats them
    return list(dict.fromkeys(SYNONYMS[word] for word in words if word in SYNONYMS))


def answer_emotion(answer: str | None) -> str | None:
    r"""The emotion of an answer that is exactly one emotion word (any case, adjective or synonym), else None.

    >>> answer_emotion("Sad"), answer_emotion("sad or angry"), answer_emotion("")
    ('sadness', None, None)
    """
    return try_normalize_emotion(answer) if answer else None  # one word: a hedge ("sad or angry") is none


def clean_answer(text: str) -> str:
    r"""The reference's `clean_text`: last answer block if any, line breaks as spaces, stripped, no final dot, lower case.

    >>> clean_answer("<answer>Sadness.</answer>")
    'sadness'
    """
    answer = last_block(text, ANSWER_TAGS)
    if answer is not None:
        text = answer

    for char in ("\n", "\r"):  # its `(?<=\s)` + char and `(?<!\s)` + char, char first: the engine skips to each break
        text = re.sub(re.escape(char) + r"(?<=\s" + re.escape(char) + ")", "", text)
        text = re.sub(re.escape(char) + r"(?<!\s" + re.escape(char) + ")", " ", text)

    return text.strip().rstrip(".").lower()


def reference_answer(text: str) -> str:
    r"""The answer the reference grades: the last `<answer>` block, else the whole completion, cleaned.

    >>> reference_answer("<answer>anger</answer><answer> Sad.</answer>"), reference_answer("Happiness")
    ('sad', 'happiness')
    """
    answer = answer_text(text)
    return clean_answer(text.strip() if answer is None else answer)


def reference_aus(text: str) -> frozenset[str]:
    r"""The AUs the reference reads: `AU\d+` in the first `<think>` block (tags in any case), upper-cased, as strings.

    >>> sorted(reference_aus("<think>brows down (au4), AU04 and AU15</think>"))
    ['AU04', 'AU15', 'AU4']
    """
    think = first_block(text, REFERENCE_THINK_TAGS)
    if think is None:
        return frozenset()

    return frozenset(f"AU{digits}" for digits in AU_PATTERN.findall(think.upper()))


def label_emotion(value: Any, strict: bool = False, label_space: tuple[str, ...] = EMOTIONS) -> str | None:
    r"""An emotion label as its normalised noun (synonyms and adjectives accepted); None when absent or blank.

    Lenient, an unknown word is kept lower-cased (a reward handed a raw user column); strict, an unknown word or one
    outside `label_space` raises `UnknownEmotionError` with the fix.

    >>> label_emotion("Sad"), label_emotion(" Bored "), label_emotion(""), label_emotion("happy", strict=True)
    ('sadness', 'bored', None, 'happiness')
    """
    if value is None or not str(value).strip():
        return None

    if strict:
        return normalize_emotion(str(value), label_space)

    return try_normalize_emotion(str(value)) or str(value).strip().lower()


def label_aus(value: Any, strict: bool = False) -> frozenset[int] | None:
    r"""An AU label (numbers, "AU4" strings, or one "AU1, AU4" string) as a set of AU numbers; None when absent.

    Lenient, whatever names no AU is skipped; strict, every item must be one catalogue AU (`parse_au`), else
    `UnknownAUError`.

    >>> sorted(label_aus(["AU1", 4, "au15"])), sorted(label_aus("AU1, AU4")), label_aus(None)
    ([1, 4, 15], [1, 4], None)
    """
    if value is None:
        return None

    items = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    if strict:
        return frozenset(parse_au(item) for item in items)

    numbers = set()
    for item in items:
        if isinstance(item, bool):
            continue

        if isinstance(item, int):
            numbers.add(item)
            continue

        numbers.update(int(number) for number in LABEL_AU_PATTERN.findall(str(item)))

    return frozenset(numbers)


def _first(row: dict[str, Any], names: tuple[str, ...], empty_list: bool = False) -> Any:
    r"""The value of the first of `names` that the row has and that is not empty (with `empty_list`, `[]` is a value)."""
    for name in names:
        value = row.get(name)
        if value is not None and value != "" and (empty_list or value != []):
            return value

    return None


def label_columns(
    row: dict[str, Any], emotion_columns: tuple[str, ...] = EMOTION_COLUMNS, aus_columns: tuple[str, ...] = AUS_COLUMNS
) -> tuple[Any, Any]:
    r"""The raw emotion and AU values of a row: the first alias column with a value; a list of emotions gives its first.

    None is "not labelled". An empty emotion (`""`, `labels: []`) is not a label; an empty AU list is one (no active
    AU), an empty AU string is not.

    >>> label_columns({"labels": ["Sadness"], "AUs": ["AU1", "AU4"]})
    ('Sadness', ['AU1', 'AU4'])
    >>> label_columns({"labels": [], "AUs": []}), label_columns({"emotion": "anger", "aus": None})
    ((None, []), ('anger', None))
    """
    emotion, aus = _first(row, emotion_columns), _first(row, aus_columns, empty_list=True)
    if isinstance(emotion, (list, tuple)):
        emotion = emotion[0] if emotion else None

    return emotion, aus


def response_labels(response: str | None) -> tuple[str | None, list[int] | None]:
    r"""The labels a reference response gives: the emotion of its answer, the AUs its reasoning names (None: none given).

    A reasoning that names no AU gives no AU label: it cannot tell "no active AU" from "not said".

    >>> (
    ...     response_labels("<think>Brows together (AU4).</think><answer>anger</answer>"),
    ...     response_labels("<think>a</think>"),
    ... )
    (('anger', [4]), (None, None))
    """
    emotion = answer_emotion(answer_text(response))
    aus = named_aus(think_text(response))
    return emotion, sorted(aus) if aus else None


def extract_labels(row: dict[str, Any], response: str | None) -> dict[str, Any]:
    r"""A row's labels, normalised: {"emotion": str or None, "aus": sorted AU numbers or None}; None = not labelled.

    The columns (`emotion`/`label`/`labels`, `aus`/`AUs`) are authoritative when any of them has a value: a column
    that is null or absent beside it is "not labelled", and `aus: []` is "labelled: no active AU". Only a row with
    neither label column set (plain sharegpt/alpaca data) takes its labels from its reference response
    (`response_labels`). A row's `au_labelled` flag (written by the benchmark converters) wins over its AU column:
    false is "not labelled", true without AUs is "no active AU". A source's own rule for empty lists (FEA-20K) is
    applied by its converter, not here.

    >>> extract_labels({"emotion": "Sad", "aus": ["AU4"]}, "")
    {'emotion': 'sadness', 'aus': [4]}
    >>> extract_labels({"emotion": None, "aus": []}, "<think>Brows together (AU4).</think><answer>anger</answer>")
    {'emotion': None, 'aus': []}
    >>> extract_labels({"labels": ["Happy"]}, "<think>Lips up (AU12).</think><answer>sadness</answer>")
    {'emotion': 'happiness', 'aus': None}
    >>> extract_labels({}, "<think>Brows together (AU4).</think><answer>anger</answer>")
    {'emotion': 'anger', 'aus': [4]}
    >>> extract_labels({"emotion": None, "aus": None}, "no tags at all")
    {'emotion': None, 'aus': None}
    >>> extract_labels({"emotion": "anger", "aus": [], "au_labelled": False}, "")
    {'emotion': 'anger', 'aus': None}
    """
    emotion, aus = label_columns(row)
    if row.get("au_labelled") is False:  # the benchmark converters' flag: AUs not coded for this row
        aus = None
    elif row.get("au_labelled") is True and aus is None:
        aus = []

    if emotion is None and aus is None and response:
        emotion, aus = response_labels(response)

    aus = label_aus(aus)
    return {"emotion": label_emotion(emotion), "aus": None if aus is None else sorted(aus)}
