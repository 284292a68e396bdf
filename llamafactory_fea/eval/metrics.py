r"""The metrics over scored samples, computed with scikit-learn and rouge-score, under two protocols.

`strict` (ours): the answer is exactly one emotion word in the last `<answer>`; AUs are read inside `<think>` only;
the reasoning (`<think>`) is compared with the reference reasoning. `reference`: Facial-R1's evaluation script
(`src/eval/eval_qwen.py` and `open_r1/utils/eval_utils.py` of its public code, later version): the first word of the
first `<answer>` (or of the whole output), exact; the `AU<n>` strings of the first `<think>` (or of the whole output);
ROUGE-L of the whole completion against the whole reference answer. Each metric uses only the rows that have its label.
"""

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from rouge_score import rouge_scorer
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
)

from ..fea.aus import format_au, supports_emotion
from ..fea.labels import ANSWER_TAGS, AU_PATTERN, TAG_PATTERN, THINK_TAGS, first_block, think_text
from .benchmarks import FABA_REGE_AUS
from .predictions import EvalSample


NO_ANSWER, OTHER = "(no answer)", "(other)"
PROTOCOLS: tuple[str, ...] = ("strict", "reference")
REFERENCE_WORD_SPLIT = re.compile(r"[,;，；\s]+")  # the reference's split of an answer into labels


def predicted_emotion(sample: EvalSample, classes: Sequence[str]) -> str:
    r"""The predicted class: the parsed emotion, OTHER for an emotion outside the classes, NO_ANSWER if none."""
    emotion = sample.parsed.emotion
    if emotion is None:
        return NO_ANSWER

    return emotion if emotion in classes else OTHER


def emotion_metrics(samples: Sequence[EvalSample], label_space: Sequence[str]) -> dict[str, Any] | None:
    r"""Accuracy, macro-F1 and UAR over the classes that occur in the labels, per-class scores, confusion matrix."""
    scored = [sample for sample in samples if sample.emotion is not None]
    if not scored:
        return None

    y_true = [sample.emotion for sample in scored]
    rows = list(label_space) + sorted(set(y_true) - set(label_space))
    classes = [emotion for emotion in rows if emotion in set(y_true)]
    y_pred = [predicted_emotion(sample, rows) for sample in scored]
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    columns = [*rows, OTHER, NO_ANSWER]
    return {
        "samples": len(scored),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "uar": float(recall_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "answered": sum(prediction != NO_ANSWER for prediction in y_pred),
        "per_class": {
            emotion: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for emotion, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        "confusion": {
            "rows": rows,
            "columns": columns,
            "matrix": confusion_matrix(y_true, y_pred, labels=columns)[: len(rows)].tolist(),
        },
    }


def _binary(sets: Sequence[frozenset[int]], classes: Sequence[int]) -> np.ndarray:
    r"""A samples x classes 0/1 matrix of AU sets (AUs outside the classes are ignored)."""
    return np.array([[int(au in aus) for au in classes] for aus in sets], dtype=int).reshape(len(sets), len(classes))


def per_column_scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Binary precision, recall and F1 of each column (each AU), zero where undefined."""
    scores = [
        precision_recall_fscore_support(y_true[:, i], y_pred[:, i], average="binary", zero_division=0)[:3]
        for i in range(y_true.shape[1])
    ]
    return tuple(np.array([score[k] for score in scores], dtype=float) for k in range(3))


def au_metrics(samples: Sequence[EvalSample], coded: Sequence[int] | None = None) -> dict[str, Any] | None:
    r"""Per-AU F1, macro-F1 over AUs with positives (the paper's), micro-F1, and AUs claimed but not labelled."""
    scored = [sample for sample in samples if sample.au_labelled]
    if not scored:
        return None

    classes = list(coded) if coded else sorted(set().union(*(sample.aus for sample in scored)))
    y_true = _binary([sample.aus for sample in scored], classes)
    y_pred = _binary([sample.parsed.aus for sample in scored], classes)
    positives = y_true.sum(axis=0)
    precision, recall, f1 = per_column_scores(y_true, y_pred)
    micro = float(f1_score(y_true.ravel(), y_pred.ravel(), zero_division=0)) if classes else None
    claimed = sum(len(sample.parsed.aus) for sample in scored)
    unlabelled = sum(len(sample.parsed.aus - sample.aus) for sample in scored)
    return {
        "samples": len(scored),
        "classes": [format_au(au) for au in classes],
        "macro_f1": float(f1[positives > 0].mean()) if (positives > 0).any() else None,
        "micro_f1": micro,
        "aus_with_positives": int((positives > 0).sum()),
        "per_au": {
            format_au(au): {
                "f1": float(f1[i]),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "positives": int(positives[i]),
                "predicted": int(y_pred[:, i].sum()),
            }
            for i, au in enumerate(classes)
        },
        "claimed": claimed,
        "claimed_not_labelled": unlabelled,
        "claimed_not_labelled_rate": unlabelled / claimed if claimed else None,
        "claimed_outside_coded": sum(len(sample.parsed.aus - set(classes)) for sample in scored) if coded else None,
    }


def reasoning_text(sample: EvalSample) -> str:
    r"""The reasoning to score: the `<think>` text, or the whole completion without tags if it has no such block."""
    if sample.parsed.reasoning is not None:
        return sample.parsed.reasoning

    return TAG_PATTERN.sub(" ", sample.completion).strip()


def rouge_l(predictions: Sequence[str], references: Sequence[str], stemmer: bool = True) -> float | None:
    r"""Mean ROUGE-L F-measure (rouge-score; Porter stemming unless `stemmer` is False), None without pairs."""
    if not references:
        return None

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)
    scores = [
        scorer.score(reference, prediction)["rougeL"].fmeasure
        for prediction, reference in zip(predictions, references)
    ]
    return float(np.mean(scores))


def reasoning_metrics(samples: Sequence[EvalSample]) -> dict[str, Any] | None:
    r"""ROUGE-L (stemmed) of the reasoning against the reference reasoning, over rows that have one."""
    referenced = [sample for sample in samples if sample.reference]
    if not referenced:
        return None

    references = [sample.reference for sample in referenced]
    return {"samples": len(referenced), "rouge_l": rouge_l([reasoning_text(s) for s in referenced], references)}


def support_rate(samples: Sequence[EvalSample]) -> dict[str, Any]:
    r"""Share of answers whose reasoning's AUs support the answered emotion (`supports_emotion`)."""
    answered = [sample for sample in samples if sample.parsed.emotion is not None]
    supported = sum(supports_emotion(sample.parsed.aus, sample.parsed.emotion) for sample in answered)
    return {"answered": len(answered), "supported": supported, "rate": supported / len(answered) if answered else None}


def format_rate(samples: Sequence[EvalSample]) -> float:
    r"""Share of completions matching the reference's format check `<think>...</think>\s*<answer>...</answer>`."""
    return sum(sample.parsed.well_formed for sample in samples) / len(samples)


def rege(samples: Sequence[EvalSample]) -> dict[str, Any]:
    r"""FABA-Bench's REGE = S_re + S_ge (percent points, 0-200), per task, as in the EmoLA evaluation code.

    Emotion: S_re is the accuracy, S_ge the mean ROUGE-L F of the reasoning vs `reference_emotion`. AU: S_re is the
    F1 averaged over EmoLA's 12 AUs (an AU without positives scores 0), S_ge the ROUGE-L vs `reference_au`. EmoLA used
    the `rouge` package (no stemming); rouge-score without stemming stands in for it.
    """
    result: dict[str, Any] = {}
    emotion = [sample for sample in samples if sample.emotion is not None and "reference_emotion" in sample.references]
    if emotion:
        s_re = 100 * float(np.mean([sample.parsed.emotion == sample.emotion for sample in emotion]))
        s_ge = 100 * rouge_l(
            [reasoning_text(s) for s in emotion], [s.references["reference_emotion"] for s in emotion], stemmer=False
        )
        result["emotion"] = {"samples": len(emotion), "s_re": s_re, "s_ge": s_ge, "rege": s_re + s_ge}

    au = [sample for sample in samples if sample.au_labelled and "reference_au" in sample.references]
    if au:
        _, _, f1 = per_column_scores(
            _binary([s.aus for s in au], FABA_REGE_AUS), _binary([s.parsed.aus for s in au], FABA_REGE_AUS)
        )
        s_re = 100 * float(np.mean(f1))
        s_ge = 100 * rouge_l(
            [reasoning_text(s) for s in au], [s.references["reference_au"] for s in au], stemmer=False
        )
        result["au"] = {"samples": len(au), "s_re": s_re, "s_ge": s_ge, "rege": s_re + s_ge}

    return result


def reference_emotion_word(completion: str) -> str | None:
    r"""The reference's answer: the first word of the first `<answer>` block (else of the whole output), as written.

    >>> reference_emotion_word("<think>x</think><answer> Happiness, joy</answer>"), reference_emotion_word("sad face")
    ('Happiness', 'sad')
    """
    answer = first_block(completion, ANSWER_TAGS)
    words = [word for word in REFERENCE_WORD_SPLIT.split(completion if answer is None else answer.strip()) if word]
    return words[0] if words else None  # the reference raises IndexError on an empty answer; here it is wrong


def reference_predicted_aus(completion: str) -> frozenset[str]:
    r"""The reference's predicted AUs: the `AU<n>` strings of the first `<think>` block, else of the whole output.

    >>> (
    ...     sorted(reference_predicted_aus("<think>Brows (AU4)</think> AU12")),
    ...     sorted(reference_predicted_aus("AU4, AU04")),
    ... )
    (['AU4'], ['AU04', 'AU4'])
    """
    think = first_block(completion, THINK_TAGS)
    return frozenset(f"AU{digits}" for digits in AU_PATTERN.findall(completion if think is None else think))


def reference_judge_reasoning(completion: str) -> str:
    r"""The reasoning the reference sends to its judge: the first `<think>` block, stripped, else an empty string."""
    return think_text(completion) or ""


def reference_emotion_metrics(samples: Sequence[EvalSample]) -> dict[str, Any] | None:
    r"""The reference's emotion accuracy: first answer word == label (exact, case-sensitive), per-class accuracy."""
    scored = [sample for sample in samples if sample.emotion is not None]
    if not scored:
        return None

    hits = [reference_emotion_word(sample.completion) == sample.emotion for sample in scored]
    per_class = {
        emotion: float(np.mean([hit for hit, s in zip(hits, scored) if s.emotion == emotion]))
        for emotion in sorted({sample.emotion for sample in scored})
    }
    return {"samples": len(scored), "accuracy": float(np.mean(hits)), "per_class_accuracy": per_class}


def reference_au_metrics(samples: Sequence[EvalSample], coded: Sequence[int] | None = None) -> dict[str, Any] | None:
    r"""The reference's AU F1: per AU over the AUs in the labels (or `coded`), macro over AUs with positives, micro.

    AUs are compared as the strings the reference compares (`AU4`; a predicted `AU04` is another string).
    """
    scored = [sample for sample in samples if sample.au_labelled]
    if not scored:
        return None

    numbers = list(coded) if coded else sorted(set().union(*(sample.aus for sample in scored)))
    classes = [format_au(au) for au in numbers]
    y_true = _binary([frozenset(format_au(au) for au in sample.aus) for sample in scored], classes)
    y_pred = _binary([reference_predicted_aus(sample.completion) for sample in scored], classes)
    positives = y_true.sum(axis=0)
    f1 = per_column_scores(y_true, y_pred)[2]
    return {
        "samples": len(scored),
        "classes": classes,
        "macro_f1": float(f1[positives > 0].mean()) if (positives > 0).any() else None,
        "micro_f1": float(f1_score(y_true.ravel(), y_pred.ravel(), zero_division=0)) if classes else None,
        "per_au": {name: {"f1": float(f1[i]), "positives": int(positives[i])} for i, name in enumerate(classes)},
    }


def reference_rouge(samples: Sequence[EvalSample]) -> dict[str, Any] | None:
    r"""The reference's ROUGE-L (stemmed): the whole completion against the whole reference answer."""
    referenced = [sample for sample in samples if sample.target]
    if not referenced:
        return None

    completions, targets = [s.completion for s in referenced], [s.target for s in referenced]
    return {"samples": len(referenced), "rouge_l": rouge_l(completions, targets)}
