r"""The evaluation metrics, checked by hand and against scikit-learn / rouge-score on the same inputs."""

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.preprocessing import MultiLabelBinarizer

from llamafactory_fea.eval import metrics
from llamafactory_fea.eval.predictions import EvalSample
from llamafactory_fea.fea.parsing import parse_completion


def sample(completion: str, emotion=None, aus=None, reference=None, target=None, **references) -> EvalSample:
    r"""A scored sample; `aus=None` is "not labelled", `aus=[]` "labelled: no active AU"."""
    return EvalSample(
        index=0,
        id="x",
        completion=completion,
        parsed=parse_completion(completion),
        emotion=emotion,
        aus=None if aus is None else frozenset(aus),
        target=target,
        reference=reference,
        references=references,
    )


def answer(emotion: str, reasoning: str = "The brows are lowered and drawn together (AU4).") -> str:
    return f"<think>{reasoning}</think><answer>{emotion}</answer>"


SPACE = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def test_emotion_metrics_by_hand_and_against_sklearn() -> None:
    gold = ["anger", "anger", "happiness", "sadness"]
    completions = [answer("anger"), answer("happy"), answer("happiness"), "no tags at all"]
    result = metrics.emotion_metrics([sample(c, g) for c, g in zip(completions, gold)], SPACE)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert result["uar"] == pytest.approx((0.5 + 1 + 0) / 3)
    predicted = ["anger", "happiness", "happiness", metrics.NO_ANSWER]
    classes = ["anger", "happiness", "sadness"]
    assert result["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(gold, predicted, labels=classes, average="macro"))
    assert result["uar"] == pytest.approx(recall_score(gold, predicted, labels=classes, average="macro"))
    confusion = result["confusion"]
    assert confusion["rows"] == list(SPACE)
    sadness = confusion["matrix"][SPACE.index("sadness")]
    assert sadness[confusion["columns"].index(metrics.NO_ANSWER)] == 1
    assert confusion["matrix"][0][:4] == [1, 0, 0, 1]
    assert result["per_class"]["sadness"]["support"] == 1


def test_emotion_outside_the_label_space_is_other() -> None:
    result = metrics.emotion_metrics([sample(answer("contempt"), "happiness")], SPACE)
    columns = result["confusion"]["columns"]
    assert result["confusion"]["matrix"][SPACE.index("happiness")][columns.index(metrics.OTHER)] == 1
    assert result["accuracy"] == 0.0


def test_no_emotion_labels_means_no_emotion_metrics() -> None:
    assert metrics.emotion_metrics([sample(answer("anger"), None, aus=[4])], SPACE) is None


def test_au_metrics_by_hand_and_against_sklearn() -> None:
    samples = [
        sample(answer("anger", "Brows lowered (AU4) and lips pressed (AU24)."), aus=[4, 7]),
        sample(answer("happiness", "Cheeks raised (AU6) and lip corners pulled (AU12)."), aus=[6, 12]),
        sample(answer("neutral", "Nothing moves at all here (AU25)."), aus=[]),
    ]
    result = metrics.au_metrics(samples)
    assert result["classes"] == ["AU4", "AU6", "AU7", "AU12"]  # the AUs in the labels
    per_au = {name: values["f1"] for name, values in result["per_au"].items()}
    assert per_au == {"AU4": 1.0, "AU6": 1.0, "AU7": 0.0, "AU12": 1.0}
    assert result["macro_f1"] == pytest.approx(0.75)
    binarizer = MultiLabelBinarizer(classes=[4, 6, 7, 12])
    y_true = binarizer.fit_transform([[4, 7], [6, 12], []])
    y_pred = binarizer.transform([[4], [6, 12], []])  # AU24 and AU25 are not labelled classes
    assert list(per_au.values()) == pytest.approx(list(f1_score(y_true, y_pred, average=None)))
    assert result["micro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert result["claimed"] == 5
    assert result["claimed_not_labelled"] == 2  # AU24, AU25
    assert result["claimed_not_labelled_rate"] == pytest.approx(0.4)


def test_au_macro_skips_aus_without_positives_and_handles_one_au() -> None:
    samples = [sample(answer("anger", "Brows lowered hard here (AU4)."), aus=[4]), sample(answer("anger"), aus=[4])]
    result = metrics.au_metrics(samples, coded=(1, 4))
    assert result["per_au"]["AU1"] == {"f1": 0.0, "precision": 0.0, "recall": 0.0, "positives": 0, "predicted": 0}
    assert result["macro_f1"] == pytest.approx(1.0)  # AU1 has no positive label: left out of the macro
    assert result["aus_with_positives"] == 1
    single = metrics.au_metrics([sample(answer("anger"), aus=[4]), sample(answer("anger"), aus=[1, 4])], coded=(1,))
    assert single["per_au"]["AU1"]["f1"] == 0.0  # one class: per-AU binary scores, not sklearn's two-label form
    assert single["micro_f1"] == 0.0
    assert single["claimed_outside_coded"] == 2


def test_rouge_l_matches_rouge_score_with_stemming() -> None:
    reference = "The person is smiling with raised cheeks."
    samples = [
        sample(answer("happiness", "The person smiles, cheeks raised (AU6)."), "happiness", reference=reference),
        sample("The person smiled.", "happiness", reference=reference),
    ]
    result = metrics.reasoning_metrics(samples)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = np.mean(
        [
            scorer.score(reference, "The person smiles, cheeks raised (AU6).")["rougeL"].fmeasure,
            scorer.score(reference, "The person smiled.")["rougeL"].fmeasure,
        ]
    )
    assert result["rouge_l"] == pytest.approx(expected)
    assert result["rouge_l"] > metrics.rouge_l(
        ["The person smiles, cheeks raised (AU6).", "The person smiled."], [reference] * 2, stemmer=False
    )
    assert metrics.reasoning_metrics([sample(answer("anger"), "anger")]) is None


def test_support_and_format_rates() -> None:
    samples = [
        sample(answer("anger")),  # AU4 is an anger prototype AU
        sample(answer("happiness")),  # AU4 does not support happiness
        sample(answer("neutral", "Nothing moves on the face at all.")),
        sample("<answer>anger</answer>"),
    ]
    support = metrics.support_rate(samples)
    assert (support["answered"], support["supported"]) == (4, 2)
    assert metrics.format_rate(samples) == pytest.approx(0.75)


def test_rege_is_recognition_plus_generation() -> None:
    emotion_text, au_text = "A happy face with a broad smile.", "AU6 cheek raiser and AU12 lip corner puller."
    samples = [
        sample(
            answer("happiness", "A happy face: cheeks raised (AU6), lip corners up (AU12)."),
            "happiness",
            aus=[6, 12],
            reference_emotion=emotion_text,
            reference_au=au_text,
        ),
        sample(
            answer("sadness", "Brows lowered (AU4)."),
            "anger",
            aus=[4],
            reference_emotion="An angry face.",
            reference_au="AU4.",
        ),
    ]
    result = metrics.rege(samples)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    s_ge = 100 * np.mean(
        [
            scorer.score(emotion_text, "A happy face: cheeks raised (AU6), lip corners up (AU12).")["rougeL"].fmeasure,
            scorer.score("An angry face.", "Brows lowered (AU4).")["rougeL"].fmeasure,
        ]
    )
    assert result["emotion"]["s_re"] == pytest.approx(50.0)
    assert result["emotion"]["s_ge"] == pytest.approx(s_ge)
    assert result["emotion"]["rege"] == pytest.approx(50.0 + s_ge)
    assert result["au"]["s_re"] == pytest.approx(100 * 3 / 12)  # AU4, AU6, AU12 perfect; EmoLA's other 9 AUs score 0


EMOTION_CASES = [  # completion, label, reference protocol right?, strict protocol right?
    ("<think>Brows lowered (AU4).</think><answer>anger</answer>", "anger", True, True),
    ("<answer>Happy</answer>", "happiness", False, True),  # the reference compares the word as written
    ("<answer>sadness, fear</answer>", "sadness", True, False),  # first word vs a hedge
    ("surprise", "surprise", True, False),  # no tag: the reference reads the whole output
    ("<answer></answer>", "neutral", False, False),  # the reference itself raises IndexError here
]


def test_emotion_under_both_protocols_by_hand() -> None:
    samples = [sample(completion, label) for completion, label, _, _ in EMOTION_CASES]
    samples.append(sample(answer("anger"), None, aus=[4]))  # an AU-only row: no emotion metric reads it
    reference = metrics.reference_emotion_metrics(samples)
    strict = metrics.emotion_metrics(samples, SPACE)
    assert (reference["samples"], strict["samples"]) == (5, 5)
    assert reference["accuracy"] == pytest.approx(3 / 5)
    assert strict["accuracy"] == pytest.approx(2 / 5)
    for (completion, label, reference_right, strict_right), scored in zip(EMOTION_CASES, samples):
        assert (metrics.reference_emotion_word(completion) == label) is reference_right, completion
        assert (scored.parsed.emotion == label) is strict_right, completion

    assert reference["per_class_accuracy"] == {
        "anger": 1.0,
        "happiness": 0.0,
        "neutral": 0.0,
        "sadness": 1.0,
        "surprise": 1.0,
    }
    assert metrics.reference_emotion_word("<answer>fear</answer><answer>anger</answer>") == "fear"  # the first block


def au_samples() -> list[EvalSample]:
    return [
        sample("<think>Brows lowered (AU4) and lips pressed (AU24).</think><answer>anger</answer>", aus=[4, 7]),
        sample("Cheeks raised AU6 and lip corners pulled AU12.", aus=[6, 12]),  # no tags
        sample("<think>Lids tightened (AU07).</think><answer>anger</answer>", aus=[7]),  # AU07 is not the string AU7
        sample("<think>Brows lowered (AU4).</think><answer>anger</answer>", "anger"),  # emotion-only: no AU labels
        sample("<think>Brows lowered (AU4).</think><answer>neutral</answer>", aus=[]),  # labelled: no active AU
    ]


def test_au_f1_under_both_protocols_by_hand() -> None:
    samples = au_samples()
    reference = metrics.reference_au_metrics(samples)
    assert reference["samples"] == 4
    assert reference["classes"] == ["AU4", "AU6", "AU7", "AU12"]  # the AUs present in the labels
    # AU4: TP (row 1), FP (row 5): 2/3; AU6, AU12 from the whole output of row 2: 1; AU7: never read: 0
    per_au = {name: values["f1"] for name, values in reference["per_au"].items()}
    assert per_au == pytest.approx({"AU4": 2 / 3, "AU6": 1.0, "AU7": 0.0, "AU12": 1.0})
    assert reference["macro_f1"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    assert reference["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))  # TP 3, FP 1, FN 2
    strict = metrics.au_metrics(samples)
    # strict reads <think> only (row 2 names none) and AU07 as AU7: AU4 2/3, AU6 0, AU7 TP 1 FN 1: 2/3, AU12 0
    assert strict["macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3 + 0) / 4)
    assert strict["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 3))  # TP 2, FP 1, FN 3


def test_reference_au_f1_over_a_named_au_set_skips_aus_without_positives() -> None:
    coded = metrics.reference_au_metrics(au_samples(), coded=(1, 4, 6, 7, 12))
    assert coded["classes"] == ["AU1", "AU4", "AU6", "AU7", "AU12"]
    assert coded["per_au"]["AU1"] == {"f1": 0.0, "positives": 0}
    assert coded["macro_f1"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)  # AU1 has no positive: out of the macro


def test_reference_rouge_is_the_whole_completion_against_the_whole_answer() -> None:
    target = "<think>The person smiles, cheeks raised (AU6).</think><answer>happiness</answer>"
    completion = "<think>A smile with raised cheeks (AU6).</think><answer>happiness</answer>"
    samples = [sample(completion, "happiness", target=target, reference="The person smiles, cheeks raised (AU6).")]
    samples.append(sample(answer("anger"), "anger"))  # no reference answer: not in either ROUGE-L
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    reference = metrics.reference_rouge(samples)
    assert reference == {"samples": 1, "rouge_l": pytest.approx(scorer.score(target, completion)["rougeL"].fmeasure)}
    strict = metrics.reasoning_metrics(samples)
    expected = scorer.score("The person smiles, cheeks raised (AU6).", "A smile with raised cheeks (AU6).")
    assert strict["rouge_l"] == pytest.approx(expected["rougeL"].fmeasure)
    assert reference["rouge_l"] != strict["rouge_l"]


def test_judge_mean_under_both_protocols() -> None:
    from llamafactory_fea.eval.judge import JudgeConfig, summarise

    results = [{"score": 8, "reason": ""}, {"score": None, "reason": "HTTP 500"}, {"score": 6, "reason": ""}]
    summary = summarise(JudgeConfig("http://localhost:1/v1", "m"), results)
    assert (summary["pairs"], summary["scored"], summary["failed"]) == (3, 2, 1)
    assert summary["mean"] == pytest.approx(7.0)  # ours: failures left out, and counted
    assert summary["mean_failures_as_zero"] == pytest.approx(14 / 3)  # the reference's: a failure scores 0
