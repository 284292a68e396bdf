r"""FEA rewards: the reference semantics (checked against transcriptions of the released code), ranges, robustness, hacks."""

import doctest
import importlib
import inspect
import pkgutil
import random
import re
import subprocess
import sys
from functools import cache

import pytest

from llamafactory_fea import rewards
from llamafactory_fea.fea import labels
from llamafactory_fea.rewards import (
    REWARD_RANGES,
    REWARDS,
    au_frequency_weights,
    fea_au_f1,
    fea_au_hallucination,
    fea_consistency,
    fea_emotion,
    fea_emotion_fuzzy,
    fea_format,
    fea_strict_au_f1,
    fea_strict_emotion,
    fea_strict_format,
    get_reward,
    indel_ratio,
    with_sample_weights,
)


GOOD = "<think>The brows are lowered and pulled together (AU4) and the lip corners are pulled down (AU15).</think><answer>sadness</answer>"
STRICT = ("fea_strict_format", "fea_strict_emotion", "fea_strict_au_f1", "fea_consistency")
REFERENCE = ("fea_format", "fea_emotion", "fea_au_f1")


# ---- transcriptions of the released Facial-R1 code (open_r1/grpo_jsonl.py), sample weight 1, used as oracles ----
def ref_format(content: str) -> float:
    return 1.0 if re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", content, re.DOTALL) else 0.0


def ref_clean_text(text: str) -> str:
    matches = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if matches:
        text = matches[-1]
    for char in ["\n", "\r"]:
        text = re.sub(r"(?<=\s)" + re.escape(char), "", text)
        text = re.sub(r"(?<!\s)" + re.escape(char), " ", text)
    return text.strip().rstrip(".").lower()


def ref_student_answer(content: str) -> str:
    matches = re.findall(r"<answer>(.*?)</answer>", content, re.DOTALL)
    return matches[-1].strip() if matches else content.strip()


def ref_levenshtein_ratio(first: str, second: str) -> float:
    @cache
    def lcs(i: int, j: int) -> int:
        if i == len(first) or j == len(second):
            return 0
        if first[i] == second[j]:
            return 1 + lcs(i + 1, j + 1)
        return max(lcs(i + 1, j), lcs(i, j + 1))

    total = len(first) + len(second)
    return 1.0 if total == 0 else (total - (total - 2 * lcs(0, 0))) / total


def ref_fuzzy_accuracy(content: str, label: str) -> float:
    ground_truth = re.search(r"<answer>(.*?)</answer>", f"<answer>{label}</answer>").group(1).strip()
    return ref_levenshtein_ratio(ref_clean_text(ref_student_answer(content)), ref_clean_text(ground_truth))


def ref_au_reward(content: str, gt: list[str]) -> float:
    think = re.search(r"<think>(.*?)</think>", content, re.DOTALL | re.IGNORECASE)
    pred = set(re.findall(r"AU\d+", think.group(1).upper())) if think else set()
    gt_set = {s.upper() for s in gt}
    if not gt_set:
        return 0.0
    if not pred:
        return -1.0
    inter = len(pred & gt_set)
    precision, recall = inter / len(pred), inter / len(gt_set)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 2 * f1 - 1


def ref_compute_au_weights(freq: dict[str, float], epsilon: float = 1e-6) -> dict[str, float]:
    total = sum(freq.values())
    weights = {au: 1 / (count / total + epsilon) for au, count in freq.items()}
    s = sum(weights.values())
    return {au: w / s for au, w in weights.items()}


# ---- a small seeded fuzzer (hypothesis is not installed) ----
PIECES = [
    "<think>", "</think>", "<answer>", "</answer>", "<THINK>", "</Think>", "<answer >", "AU4", "AU04", "au12",
    "(AU15)", "AU99", "AU" + "9" * 5000, "AU1", "sadness", "Sadness", "sad", "anger", "happy", "happiness",
    " or ", " and ", " ", "  ", "\n", "\r\n", "\t", ".", "brows lowered", "lips pressed together", "é", "😀", "\x00",
    "<", ">", "/", "AU", "0", "7", "{", "}", "\\", "[", "]", "neutral", "contempt", "none",
]  # fmt: skip


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14)))


def random_completion(rng: random.Random):
    text = random_text(rng)
    kind = rng.randrange(8)
    if kind == 0:
        return [{"role": "assistant", "content": text}]
    if kind == 1:
        return [{"role": "assistant", "content": [{"type": "text", "text": text}, {"type": "image"}]}]
    if kind == 2:
        return [{"role": "assistant", "content": None}, {"content": text}]
    if kind == 3:
        return rng.choice([None, [], {}, {"content": text}, [text, text], 42, ("x", None)])
    return text


def random_emotion(rng: random.Random):
    return rng.choice([None, "", "sadness", "Sad", "ANGER", "xyz", 3, "<answer>happiness</answer>", " fear. "])


def random_aus(rng: random.Random):
    return rng.choice([None, [], [4], ["AU4", "AU15"], "AU1, AU4", [1, "x"], ["AU"], [12, 6, 25], (4,), [True]])


def fuzz_batches(seed: int, count: int, size: int = 6):
    rng = random.Random(seed)
    for _ in range(count):
        yield (
            [random_completion(rng) for _ in range(size)],
            [random_emotion(rng) for _ in range(size)],
            [random_aus(rng) for _ in range(size)],
        )


def test_registry_names_ranges_and_lookup():
    assert set(REWARDS) == set(REWARD_RANGES)
    assert {*REFERENCE, *STRICT, "fea_emotion_fuzzy", "fea_au_hallucination"} <= set(REWARDS)
    assert get_reward("fea_format") is fea_format
    assert get_reward("llamafactory_fea.rewards.fea_au_f1") is fea_au_f1
    with pytest.raises(ValueError, match="fea_format"):
        get_reward("no_such_reward")
    with pytest.raises(ValueError, match="Cannot import"):
        get_reward("llamafactory_fea.rewards.missing")
    with pytest.raises(ValueError, match="already exists"):
        rewards.register_reward("fea_format", 0, 1)(fea_format)


@pytest.mark.parametrize(
    "module",
    [labels.__name__, *(f"{rewards.__name__}.{info.name}" for info in pkgutil.iter_modules(rewards.__path__))],
)
def test_docstring_examples(module: str):
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
    assert result.attempted > 0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("<think>x</think>\n\n<answer>sadness</answer>", 1.0),
        ("<think>a\nb</think><answer>\nsad\n</answer>", 1.0),
        ("<think></think><answer></answer>", 1.0),  # empty tags pass the reference format
        ("<think>x</think><answer>anger</answer><answer>sadness</answer>", 1.0),  # repeated answers too
        ("<think><think>x</think></think><answer>sadness</answer>", 1.0),  # and nested thinks
        ("<think>x</think><answer>sadness</answer> more", 0.0),
        (" <think>x</think><answer>sadness</answer>", 0.0),
        ("<answer>sadness</answer>", 0.0),
        ("sadness", 0.0),
    ],
)
def test_format_reference(completion: str, expected: float):
    assert fea_format([completion]) == [expected] == [ref_format(completion)]


@pytest.mark.parametrize(
    ("completion", "label", "expected"),
    [
        (GOOD, "sadness", 1.0),
        ("<answer>Sadness.</answer>", "sadness", 1.0),  # case and a final dot are cleaned
        ("<answer>\nsadness\n</answer>", "Sadness", 1.0),
        ("<answer>anger</answer><answer>sadness</answer>", "sadness", 1.0),  # the last answer counts
        ("<answer>sadness</answer><answer>anger</answer>", "sadness", 0.0),
        ("sadness", "sadness", 1.0),  # no tags: the reference grades the whole completion
        ("<answer>sad</answer>", "sadness", 0.0),
        ("<answer>sadness or anger</answer>", "sadness", 0.0),
        ("<answer></answer>", "sadness", 0.0),
        (GOOD, None, None),
        (GOOD, "", None),
    ],
)
def test_emotion_exact(completion: str, label: str | None, expected: float | None):
    assert fea_emotion([completion], emotion=[label]) == [expected]


def test_emotion_fuzzy_is_the_released_levenshtein_ratio():
    assert fea_emotion_fuzzy(["<answer>sad</answer>"], emotion=["sadness"]) == [0.6]
    assert fea_emotion_fuzzy(["<answer>sadness or anger</answer>"], emotion=["sadness"])[0] == pytest.approx(
        ref_levenshtein_ratio("sadness or anger", "sadness")
    )
    assert fea_emotion_fuzzy(["x"], emotion=[None]) == [None]
    rng = random.Random(1)
    for _ in range(300):
        completion = "".join(
            rng.choice(["<answer>", "</answer>", "sad", "ness", "an", "ger", " ", "\n", "."])
            for _ in range(rng.randint(0, 8))
        )
        label = rng.choice(["sadness", "Anger", "happiness", "fear"])
        assert fea_emotion_fuzzy([completion], emotion=[label]) == [
            pytest.approx(ref_fuzzy_accuracy(completion, label))
        ]
        exact = ref_clean_text(ref_student_answer(completion)) == ref_clean_text(label)
        assert fea_emotion([completion], emotion=[label]) == [1.0 if exact else 0.0]


@pytest.mark.parametrize(
    ("completion", "labels", "expected"),
    [
        ("<think>(AU4) and (AU15)</think><answer>sadness</answer>", [4, 15], 1.0),
        ("<think>(AU4) and (AU15)</think><answer>sadness</answer>", [4], 2 * (2 / 3) - 1),
        ("<think>(AU4)</think>", [4, 15], 2 * (2 / 3) - 1),
        ("<think>(AU6)</think>", [4], -1.0),  # no overlap: F1 0
        ("<think>no action units</think>", [4], -1.0),  # none named
        ("(AU4) outside any think", [4], -1.0),
        ("<THINK>brows (au4)</think>", ["AU4"], 1.0),  # tags and AUs in any case, as the reference
        ("<think>(AU04)</think>", [4], -1.0),  # the reference compares strings: AU04 is not AU4
        ("<think>(AU4)</think><think>(AU15)</think>", [4, 15], 2 * (2 / 3) - 1),  # first think only
        ("<think>(AU4)</think>", [], 0.0),  # labelled: no active AU (the reference pays 0 for an empty AU list)
        ("<think>(AU4)</think>", None, None),  # not labelled (an emotion-only source): nothing
        ("<think>(AU1)(AU4)</think>", "AU1, AU4", 1.0),
    ],
)
def test_au_f1_reference(completion: str, labels, expected: float | None):
    assert fea_au_f1([completion], aus=[labels]) == [None if expected is None else pytest.approx(expected)]


def test_au_f1_matches_the_released_code_on_fuzzed_completions():
    rng = random.Random(2)
    for _ in range(500):
        completion = random_text(rng)
        labels = rng.choice([[], [4], [4, 15], [1, 2, 4, 12], [12]])
        gt = [f"AU{number}" for number in labels]
        assert fea_au_f1([completion], aus=[labels]) == [pytest.approx(ref_au_reward(completion, gt))]
        assert fea_format([completion]) == [ref_format(completion)]


def test_indel_ratio_is_the_released_levenshtein_ratio_exactly():
    rng = random.Random(3)
    for _ in range(3000):
        first, second = ("".join(rng.choice("sadnes \u00e9") for _ in range(rng.randint(0, 14))) for _ in range(2))
        assert indel_ratio(first, second) == ref_levenshtein_ratio(first, second), (first, second)


# 1 MB of each tag shape that the regexes read in quadratic time; a CPU limit turns a quadratic hang into a failure
LINEAR_CHECK = """
import resource
resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
from llamafactory_fea.fea.labels import clean_answer, label_aus
from llamafactory_fea.fea.parsing import parse_completion
from llamafactory_fea.rewards import REWARDS
for unit in ("<think>", "<THINK>", "<answer>", "<think><answer>", "</think> <answer>"):
    text = ("<think>" if unit.startswith("</") else "") + unit * (2**20 // len(unit))
    calls = {name: lambda text, f=f: f([text], emotion=["sadness"], aus=[[4, 15]]) for name, f in REWARDS.items()}
    for name, call in {**calls, "parse_completion": parse_completion, "clean_answer": clean_answer}.items():
        print(name, "on", repr(unit), "x", 2**20 // len(unit), flush=True)
        call(text)
print("label_aus on 'AU' and a megabyte of spaces", flush=True)
label_aus("AU" + " " * 2**20)
print("done")
"""


def test_rewards_and_parser_take_linear_time_on_tag_heavy_text():
    r"""Issue 11: under a second of CPU in all when linear, some 20 minutes per call when quadratic (64 KB took 5 s).

    Not a timed assertion: the 60 s CPU limit only turns a quadratic hang into a failure, far from both outcomes
    (figures: `bench/bench_parser.py`).
    """
    result = subprocess.run([sys.executable, "-c", LINEAR_CHECK], capture_output=True, text=True, timeout=1800)
    ran = result.stdout.splitlines()
    assert ran[-1:] == ["done"], f"killed (exit {result.returncode}) during {ran[-1:]}: {result.stderr[-500:]}"


@pytest.mark.parametrize("seed", range(4))
def test_no_reward_raises_and_values_stay_in_range(seed: int):
    for completions, emotions, aus in fuzz_batches(seed, 150):
        for name, func in REWARDS.items():
            values = func(completions, emotion=emotions, aus=aus, prompts=[""] * len(completions), trainer_state=None)
            assert len(values) == len(completions), name
            low, high = REWARD_RANGES[name]
            for value in values:
                assert value is None or low - 1e-9 <= value <= high + 1e-9, (name, value)


def test_rewards_ignore_missing_label_columns():
    for name, func in REWARDS.items():
        values = func([GOOD, "x"])
        assert len(values) == 2, name


def test_a_reward_gives_nothing_to_a_row_without_the_label_it_reads():
    # a mixed batch: an emotion-only row (an emotion source), an AU-only row, a row with both, one labelled no-AU
    emotion, aus = ["sadness", None, "sadness", None], [None, [4, 15], [4, 15], []]
    reads = {
        "emotion": ("fea_emotion", "fea_emotion_fuzzy", "fea_strict_emotion"),
        "aus": ("fea_au_f1", "fea_strict_au_f1", "fea_au_hallucination"),
    }
    for column, names in reads.items():
        labelled = [value is not None for value in (emotion if column == "emotion" else aus)]
        for name in names:
            values = REWARDS[name]([GOOD] * 4, emotion=emotion, aus=aus)
            assert [value is not None for value in values[:3]] == labelled[:3], name
            assert all(isinstance(value, float) for value, has in zip(values[:3], labelled) if has), name

    assert fea_au_f1([GOOD] * 4, aus=aus)[3] == 0.0  # labelled: no active AU
    assert fea_strict_au_f1([GOOD] * 4, aus=aus)[3] is None
    assert fea_au_hallucination([GOOD] * 4, aus=aus)[3] == -1.0
    for name in ("fea_format", "fea_strict_format", "fea_consistency"):  # they read no label
        assert None not in REWARDS[name]([GOOD] * 4, emotion=emotion, aus=aus), name


HACKS = {
    "empty answer": "<think>The brows are lowered and pulled together (AU4), lips down (AU15).</think><answer></answer>",
    "several emotions": "<think>The brows are lowered and pulled together (AU4), lips down (AU15).</think><answer>sadness or anger</answer>",
    "answer outside the tags": "sadness",
    "repeated tags": "<think>The brows are lowered and pulled together (AU4), lips down (AU15).</think><answer>anger</answer><answer>sadness</answer>",
    "nested tags": "<think><think>The brows are lowered and pulled together (AU4), lips down (AU15).</think></think><answer>sadness</answer>",
    "AU list without reasoning": "<think>AU4 AU15</think><answer>sadness</answer>",
    "text after the answer": GOOD + " Also anger.",
    "text before the think": "Sure! " + GOOD,
}


@pytest.mark.parametrize("hack", sorted(HACKS))
def test_strict_rewards_pay_nothing_for_hacks(hack: str):
    completion = HACKS[hack]
    assert fea_strict_format([completion]) == [0.0]
    assert fea_strict_emotion([completion], emotion=["sadness"]) == [0.0]
    assert fea_strict_au_f1([completion], aus=[[4, 15]]) == [-1.0]
    assert fea_consistency([completion]) == [0.0]


def test_strict_rewards_pay_for_a_good_completion():
    assert fea_strict_format([GOOD]) == [1.0]
    assert fea_strict_emotion([GOOD], emotion=["Sad"]) == [1.0]  # labels normalised
    assert fea_strict_au_f1([GOOD], aus=[[4, 15]]) == [1.0]
    assert fea_strict_au_f1([GOOD], aus=[[4]]) == [pytest.approx(1 / 3)]
    assert fea_consistency([GOOD]) == [1.0]


# What the reference rewards (format, emotion, AU) pay for each hack; the paper's rewards must keep these holes.
REFERENCE_HOLES = {
    "empty answer": (1.0, 0.0, 1.0),
    "several emotions": (1.0, 0.0, 1.0),
    "answer outside the tags": (0.0, 1.0, -1.0),
    "repeated tags": (1.0, 1.0, 1.0),
    "nested tags": (1.0, 1.0, 1.0),
    "AU list without reasoning": (1.0, 1.0, 1.0),
    "text after the answer": (0.0, 1.0, 1.0),
    "text before the think": (0.0, 1.0, 1.0),
}


@pytest.mark.parametrize("hack", sorted(REFERENCE_HOLES))
def test_reference_rewards_keep_the_papers_holes(hack: str):
    completion = HACKS[hack]
    paid = (
        fea_format([completion])[0],
        fea_emotion([completion], emotion=["sadness"])[0],
        fea_au_f1([completion], aus=[[4, 15]])[0],
    )
    assert paid == REFERENCE_HOLES[hack]


def test_several_emotions_earn_partial_credit_under_the_fuzzy_reward():
    value = fea_emotion_fuzzy([HACKS["several emotions"]], emotion=["sadness"])[0]
    assert 0.0 < value < 1.0


def test_hallucination_penalty():
    assert fea_au_hallucination(["<think>(AU4) (AU12)</think><answer>sadness</answer>"], aus=[[4]]) == [-0.5]
    assert fea_au_hallucination(["<think>(AU4) (AU77)</think>"], aus=[[4, 77]]) == [-0.5]  # outside the catalogue
    assert fea_au_hallucination(["<think>none</think>"], aus=[[4]]) == [0.0]
    assert fea_au_hallucination(["<think>(AU4)</think>"], aus=[None]) == [None]  # emotion-only data: unknown
    assert fea_au_hallucination(["<think>(AU4)</think>"]) == [None]
    assert fea_au_hallucination(["<think>(AU4)</think>"], aus=[[]]) == [-1.0]  # labelled: no active AU


def test_au_frequency_weights_follow_the_reference():
    samples = [[1], [1, 4], [4, 12], [1, 2, 4, 12], [12]]
    counts = {}
    for sample in samples:
        for au in sample:
            counts[f"AU{au}"] = counts.get(f"AU{au}", 0) + 1
    frequencies = {au: count / len(samples) for au, count in counts.items()}  # the reference's config.json shares
    weights = ref_compute_au_weights(frequencies)
    raw = [sum(weights[f"AU{au}"] for au in sample) for sample in samples]
    low, high = min(raw), max(raw)
    expected = [10 * (weight - low) / (high - low) for weight in raw]
    assert au_frequency_weights(samples, "reward_minmax") == pytest.approx(expected)
    assert min(au_frequency_weights(samples, "reward_minmax")) == 0.0  # the lightest sample weighs 0, as released


def test_au_frequency_weights_edge_cases():
    assert au_frequency_weights([[], [], []], "reward_minmax") == [0.0, 0.0, 0.0]  # emotion-only data weighs 0
    aus = [[1], [1, 4], [], [12]]
    mean_one = au_frequency_weights(aus, "reward_mean_one")
    assert mean_one[2] == 1.0
    assert sum(mean_one[:2] + mean_one[3:]) / 3 == pytest.approx(1.0)
    assert au_frequency_weights([], "reward_mean_one") == []
    assert au_frequency_weights(aus, "loss_batch_sum") == au_frequency_weights(aus, "reward_minmax")  # both [0, 10]
    for old, new in (("reference", "reward_minmax"), ("balanced", "reward_mean_one")):  # the old names still work
        with pytest.warns(FutureWarning, match=f"{old} is now called {new}"):
            assert au_frequency_weights(aus, old) == au_frequency_weights(aus, new)

    with pytest.raises(ValueError, match="reward_minmax, loss_batch_sum, reward_mean_one"):
        au_frequency_weights([[1]], "none")


def test_sample_weights_multiply_every_reward_and_keep_its_name():
    weighted = with_sample_weights(fea_format)
    assert weighted.__name__ == "fea_format"
    assert weighted([GOOD, GOOD, "x"], au_weight=[2.0, 0.0, 5.0]) == [2.0, 0.0, 0.0]
    assert with_sample_weights(fea_emotion)([GOOD], emotion=[None], au_weight=[3.0]) == [None]
    assert weighted([GOOD]) == [1.0]


LABELLED = [name for name in REWARDS if {"emotion", "aus"} & set(inspect.signature(REWARDS[name]).parameters)]


@pytest.mark.parametrize("name", LABELLED)
def test_label_columns_of_another_length_than_the_completions_are_refused(name: str):
    column = "emotion" if "emotion" in inspect.signature(REWARDS[name]).parameters else "aus"
    value = "sadness" if column == "emotion" else [4, 15]
    with pytest.raises(ValueError, match="label column has 1 values for 2 completions"):
        REWARDS[name]([GOOD, GOOD], **{column: [value]})
    with pytest.raises(ValueError, match="label column has 3 values for 2 completions"):
        REWARDS[name]([GOOD, GOOD], **{column: [value] * 3})
    assert len(REWARDS[name]([GOOD, GOOD], **{column: [value] * 2})) == 2
    assert len(REWARDS[name]([GOOD, GOOD])) == 2  # a dataset without the column: one None label per completion
