r"""The FEA domain: emotion normalisation, the AU catalogue, the completion parser and the prompts."""

import json
import random
import re
from pathlib import Path

import pytest

from llamafactory_fea.fea import (
    AU_CATALOGUE,
    EMOTIONS,
    LABEL_SPACES,
    FEAPrompts,
    UnknownAUError,
    UnknownEmotionError,
    normalize_emotion,
    parse_au,
    parse_completion,
    try_normalize_emotion,
)
from llamafactory_fea.fea.aus import EMOTION_PROTOTYPES, supports_emotion
from llamafactory_fea.fea.labels import (
    ANSWER_TAGS,
    REFERENCE_THINK_TAGS,
    THINK_TAGS,
    answer_emotion,
    answer_text,
    clean_answer,
    extract_labels,
    first_block,
    label_aus,
    label_columns,
    label_emotion,
    last_block,
    named_aus,
    named_emotions,
    reference_answer,
    reference_aus,
    think_text,
    well_formed,
)

from .test_rewards import ref_clean_text  # the reference's clean_text, transcribed once


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("Angry", "anger"),
        (" happy ", "happiness"),
        ("SADNESS", "sadness"),
        ("surprised.", "surprise"),
        ("afraid", "fear"),
    ],
)
def test_emotion_words_normalise_to_nouns(word: str, expected: str):
    assert normalize_emotion(word) == expected


def test_unknown_emotion_is_refused_with_the_label_set():
    with pytest.raises(UnknownEmotionError, match="unknown emotion 'bored'.*anger"):
        normalize_emotion("bored")

    assert try_normalize_emotion("bored") is None


def test_label_spaces_follow_the_datasets():
    assert "contempt" in LABEL_SPACES["affectnet"]
    assert "contempt" not in LABEL_SPACES["rafdb"]
    assert "neutral" not in LABEL_SPACES["raf_au"]
    with pytest.raises(UnknownEmotionError, match="not in this label space"):
        normalize_emotion("neutral", LABEL_SPACES["raf_au"])


def test_au_catalogue_is_the_prompt_catalogue():
    expected = [1, 2, 4, 5, 6, 7, 9, 10, *range(11, 21), *range(22, 33), 43]
    assert list(AU_CATALOGUE) == expected
    assert len(AU_CATALOGUE) == 30
    assert AU_CATALOGUE[4].name == "brow lowerer"
    assert AU_CATALOGUE[12].name == "lip corner puller"
    assert AU_CATALOGUE[43].region == "eye"
    assert all(set(prototype) <= set(AU_CATALOGUE) for prototype in EMOTION_PROTOTYPES.values())
    assert set(EMOTION_PROTOTYPES) == set(EMOTIONS)


@pytest.mark.parametrize(("value", "expected"), [(4, 4), ("4", 4), ("AU4", 4), ("au04", 4), (" AU 43 ", 43)])
def test_au_spellings_parse(value, expected: int):
    assert parse_au(value) == expected


@pytest.mark.parametrize("value", ["AU3", 21, "AU44", "brow", "AU", ""])
def test_au_outside_the_catalogue_is_refused(value):
    with pytest.raises(UnknownAUError):
        parse_au(value)


def test_parser_reads_a_good_completion():
    text = "<think>The inner brows are raised (AU1) and the lip corners are pulled down (AU15).</think><answer>sadness</answer>"
    parsed = parse_completion(text)
    assert parsed.ok
    assert parsed.well_formed
    assert parsed.structured
    assert parsed.emotion == "sadness"
    assert parsed.aus == frozenset({1, 15})
    assert parsed.reasoning.startswith("The inner brows")
    assert parsed.feedback() == ""


def test_parser_accepts_chat_messages():
    messages = [
        {
            "role": "assistant",
            "content": "<think>Cheeks raised (AU6), lips pulled (AU12).</think><answer>happy</answer>",
        }
    ]
    parsed = parse_completion(messages)
    assert parsed.emotion == "happiness"
    assert parsed.aus == frozenset({6, 12})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sadness", "inside <think>"),
        ("<think>Brows lowered (AU4) and pressed lips.</think>", "inside <answer>"),
        ("<think>Brows lowered (AU4) a lot.</think><answer></answer>", "answer is empty"),
        ("<think></think><answer>anger</answer>", "reasoning is empty"),
        ("<think>Brows lowered (AU4) a lot.</think><answer>anger or sadness</answer>", "several emotions"),
        ("<think>Brows lowered (AU4) a lot.</think><answer>the face is angry</answer>", "exactly one emotion word"),
        ("<think>The face looks tense overall.</think><answer>anger</answer>", "names no action unit"),
        ("<think>Brows lowered (AU3) a lot.</think><answer>anger</answer>", "AU3 not in the AU catalogue"),
        ("<think>AU4 AU7</think><answer>anger</answer>", "only lists action units"),
        ("<think>Brows lowered (AU4) a lot.</think><answer>anger</answer> Bye", "after </answer>"),
        ("<think>Brows lowered (AU4) a lot.</think><answer>x</answer><answer>anger</answer>", "exactly one <answer>"),
        ("<think>Brows <answer>anger</answer> lowered (AU4) a lot.</think>", "no tag inside another"),
        ("<answer>anger</answer><think>Brows lowered (AU4) a lot.</think>", "first"),
    ],
)
def test_parser_names_what_is_wrong(text: str, problem: str):
    parsed = parse_completion(text)
    assert not parsed.ok
    assert problem in parsed.feedback()


def test_reference_format_and_parser_disagree_on_trailing_tags():
    parsed = parse_completion("<think>Brows lowered (AU4) a lot.</think><answer>x</answer><answer>anger</answer>")
    assert parsed.well_formed  # the reference's lazy regex still matches
    assert not parsed.structured
    assert parsed.emotion == "anger"  # the last answer, as the reference reads it


def test_supports_emotion_uses_prototypes():
    assert supports_emotion(frozenset({6, 12}), "happiness")
    assert not supports_emotion(frozenset({6, 12}), "sadness")
    assert supports_emotion(frozenset(), "neutral")
    assert not supports_emotion(frozenset({1, 2, 5}), "neutral")


def test_prompts_carry_catalogue_labels_and_hints(tmp_path: Path):
    prompts = FEAPrompts()
    question = prompts.question()
    assert "AU43 eyes closed" in question
    assert "<answer>" in question
    assert "contempt" not in question
    assert "contempt" in prompts.question(EMOTIONS)
    guided = prompts.guided("sadness", [15, 1])
    assert guided.startswith(question)
    assert "AU1 inner brow raiser, AU15 lip corner depressor" in guided
    retry = prompts.retry(guided, "<answer>anger</answer>", "The reasoning is empty.")
    assert "The reasoning is empty." in retry
    assert "<answer>anger</answer>" in retry

    custom = tmp_path / "prompts.json"
    custom.write_text(json.dumps({"question_template": "Emotion? {emotions}"}), encoding="utf-8")
    assert (
        FEAPrompts.from_file(custom).question()
        == "Emotion? anger, disgust, fear, happiness, neutral, sadness, surprise"
    )
    custom.write_text(json.dumps({"questions": "x"}), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown prompt keys"):
        FEAPrompts.from_file(custom)


def test_parser_survives_an_absurdly_long_au_number():
    parsed = parse_completion("<think>Brows lowered (AU" + "9" * 5000 + ") a lot.</think><answer>anger</answer>")
    assert len(parsed.aus) == 1
    assert not parsed.aus & set(AU_CATALOGUE)
    assert "not in the AU catalogue" in parsed.feedback()


def test_labels_are_lenient_for_rewards_and_strict_for_evaluation():
    assert (label_emotion("Sad"), label_emotion(" bored "), label_emotion("  ")) == ("sadness", "bored", None)
    assert label_emotion("Sad", strict=True) == "sadness"
    with pytest.raises(UnknownEmotionError, match="unknown emotion 'bored'"):
        label_emotion("bored", strict=True)
    with pytest.raises(UnknownEmotionError, match="not in this label space"):
        label_emotion("neutral", strict=True, label_space=LABEL_SPACES["raf_au"])

    assert label_aus(["AU1", "x", 4, True]) == frozenset({1, 4})
    assert label_aus(["au01", 4], strict=True) == frozenset({1, 4})
    assert label_aus(None, strict=True) is None
    with pytest.raises(UnknownAUError):
        label_aus(["AU1", "AU3"], strict=True)


def test_label_columns_follow_the_aliases():
    assert label_columns({"emotion": "Sad", "label": "anger", "aus": [4]}) == ("Sad", [4])
    assert label_columns({"emotion": "", "label": "anger", "aus": None, "AUs": ["AU4"]}) == ("anger", ["AU4"])
    assert label_columns({"emotion": "", "label": "anger", "aus": [], "AUs": ["AU4"]}) == ("anger", [])
    assert label_columns({"labels": ["Sadness", "Anger"], "AUs": []}) == ("Sadness", [])  # [] is a label: no AU
    assert label_columns({"labels": [], "AUs": ["AU1"]}) == (None, ["AU1"])  # no emotion word: not labelled
    assert label_columns({"label": "<answer>anger</answer>"}, ("emotion", "labels")) == (None, None)


RESPONSE = "<think>Brows together (AU4), lips down (AU15).</think><answer>Sad</answer>"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"emotion": "Angry", "aus": ["AU1", 4]}, {"emotion": "anger", "aus": [1, 4]}),  # the columns win
        ({"emotion": "anger", "aus": None}, {"emotion": "anger", "aus": None}),  # emotion-only: AUs not labelled
        ({"emotion": "anger"}, {"emotion": "anger", "aus": None}),  # an absent column is a null one
        ({"emotion": None, "aus": [12]}, {"emotion": None, "aus": [12]}),  # AU-only: no emotion
        ({"emotion": None, "aus": []}, {"emotion": None, "aus": []}),  # labelled: no active AU
        ({"labels": [], "AUs": []}, {"emotion": None, "aus": []}),  # FEA-20K lists: source rules are the converter's
        ({"emotion": "", "aus": []}, {"emotion": None, "aus": []}),
        ({"emotion": None, "aus": None}, {"emotion": "sadness", "aus": [4, 15]}),  # neither: the response's
        ({}, {"emotion": "sadness", "aus": [4, 15]}),
        ({"labels": [], "AUs": None}, {"emotion": "sadness", "aus": [4, 15]}),
    ],
)
def test_extract_labels_keeps_not_labelled_apart_from_none(row: dict, expected: dict):
    assert extract_labels(row, RESPONSE) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("", {"emotion": None, "aus": None}),
        (None, {"emotion": None, "aus": None}),
        ("no tags at all", {"emotion": None, "aus": None}),
        ("<think>The face is calm.</think><answer>neutral</answer>", {"emotion": "neutral", "aus": None}),
        ("<think>Cheeks up (AU6).</think><answer>sad or happy</answer>", {"emotion": None, "aus": [6]}),
    ],
)
def test_labels_from_a_response_are_only_what_it_says(response: str | None, expected: dict):
    assert extract_labels({"emotion": None, "aus": None}, response) == expected


def test_decoded_labels_keep_null_and_empty_apart():
    from llamafactory_fea.train.labelled_data import LABELS_COLUMN, decode_labels

    for labels in ({"emotion": None, "aus": []}, {"emotion": "anger", "aus": None}, {"emotion": None, "aus": [4]}):
        row = {**labels, "solution": "", "id": "a", "dataset": None}
        assert decode_labels({LABELS_COLUMN: json.dumps(row)}) == row


def test_reference_readings_are_the_released_codes():
    assert reference_answer("<answer>anger</answer><answer>\nSad.\n</answer>") == "sad"  # the last answer, cleaned
    assert reference_answer(" Happiness. ") == "happiness"  # no tag: the whole completion
    assert reference_aus("<THINK>(au4) (AU04)</Think><think>(AU15)</think>") == frozenset({"AU4", "AU04"})
    assert reference_aus("(AU4) without a think block") == frozenset()


# ---- the regexes the linear readers replace (the released code's and ours before issue 11), kept as oracles ----
def old_first(pattern: str, text: str, flags: int = 0) -> str | None:
    match = re.search(pattern, text, re.DOTALL | flags)
    return match.group(1) if match else None


def old_last(pattern: str, text: str) -> str | None:
    matches = re.findall(pattern, text, re.DOTALL)
    return matches[-1] if matches else None


def old_reference_aus(text: str) -> frozenset[str]:
    think = re.search(r"<think>(.*?)</think>", text, re.DOTALL | re.IGNORECASE)
    return frozenset(f"AU{n}" for n in re.findall(r"AU(\d+)", think.group(1).upper())) if think else frozenset()


def old_named_emotions(text: str) -> list[str]:
    from llamafactory_fea.fea.emotions import SYNONYMS

    return list(dict.fromkeys(SYNONYMS[word] for word in re.findall(r"[a-z]+", text.lower()) if word in SYNONYMS))


TAG_PIECES = [
    "<think>", "</think>", "<answer>", "</answer>", "<THINK>", "</Think>", "<tHiNk>", "<th\u0131nk>", "</thin\u212a>",
    "<think", "think>", "</", "<answer >", "<", ">", "/", "AU4", "au04", "(AU15)", "AU0012", "AU" + "9" * 8, "AU",
    "AU 4", "\u0663", "0", "000", "1234567", "sad", "Sadness.", "anger", "happy", " or ", ".", "x",
    " ", "  ", "\n", "\r", "\r\n", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\u00e9", "\U0001f600",
]  # fmt: skip


def tag_soup(rng: random.Random) -> str:
    return "".join(rng.choice(TAG_PIECES) for _ in range(rng.randint(0, 16)))


def test_linear_tag_readers_read_exactly_what_the_regexes_read():
    rng = random.Random(11)
    outcomes, emotions = set(), set()
    for _ in range(6000):
        text = tag_soup(rng)
        if rng.random() < 0.3:  # a well-formed frame around the soup, so the format check is true often enough
            joint = rng.choice(["</think><answer>", "</think>\n <answer>", "</think>\x1c<answer>"])
            text = "<think>" + text + joint + tag_soup(rng) + rng.choice(["</answer>", "</answer> ", ""])

        think, answer = old_first(r"<think>(.*?)</think>", text), old_last(r"<answer>(.*?)</answer>", text)
        any_case_think = old_first(r"<think>(.*?)</think>", text, re.IGNORECASE)  # "<th\u0131nk>" is one, to `re`
        assert first_block(text, THINK_TAGS) == think, text
        assert first_block(text, REFERENCE_THINK_TAGS) == any_case_think, text
        assert last_block(text, ANSWER_TAGS) == answer, text
        assert (think_text(text), answer_text(text)) == (think and think.strip(), answer and answer.strip()), text
        formatted = re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", text, re.DOTALL) is not None
        assert well_formed(text) == formatted, text
        assert clean_answer(text) == ref_clean_text(text), text
        assert reference_aus(text) == old_reference_aus(text), text
        assert named_emotions(text) == old_named_emotions(text), text
        for part in (text, answer, think):
            old_emotion = None if not part or len(old_named_emotions(part)) > 1 else try_normalize_emotion(part)
            assert answer_emotion(part) == old_emotion, part
            emotions.add(old_emotion)
            old_aus = (int(d) if len(d) <= 6 else 10**6 for d in re.findall(r"AU(\d+)", part or ""))
            assert named_aus(part) == frozenset(old_aus), part
        assert label_aus(text) == frozenset(int(d) for d in re.findall(r"(?i)(?:AU)?\s*0*(\d{1,6})", text)), text
        parsed = parse_completion(text)
        assert (parsed.reasoning, parsed.answer) == (think_text(text), answer_text(text)), text
        assert parsed.well_formed == formatted, text
        outcomes.add((formatted, think is None, answer is None, any_case_think == think))

    assert len(outcomes) == 10  # every possible mix: formatted, each block there or not, the any-case one the same
    assert {None, "sadness", "anger", "happiness"} <= emotions
