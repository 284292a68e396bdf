r"""Reward-verified synthesis: guided prompts, the keep rules, retries told what was wrong, continuous batching.

A sample is checked only on the labels it has (emotion-only data: the answer; AU-only data: the AU set; both: both).
Two keep rules (`synth_keep_rule`): `ours` (default) wants both tags non-empty, the AU set named in `<think>` equal to
the labelled set (or an AU F1 of at least `min_au_f1`) and the answer equal to the labelled emotion; `reference` is the
released code's check: the AUs are every `AU<digits>` anywhere in the output, the emotion is the first `<answer>` split
on commas, compared as a set with the label, and no tag is required. A rejected answer is retried up to `max_retries`
times, told what was wrong with the last attempt, or (`history`) with every earlier attempt and what was wrong with each.
"""

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...data.records import FEARecord
from ...fea.aus import format_au
from ...fea.labels import ANSWER_TAGS, AU_PATTERN, first_block
from ...fea.parsing import ParsedCompletion, parse_completion
from ...fea.prompts import FEAPrompts, load_prompt_set
from ...rewards import au_f1
from ..prompt_set import active_prompt_set, own_question
from .args import KEEP_RULES
from .engine import GenerationRequest
from .samples import NO_LABELS, UNREADABLE_IMAGE


if TYPE_CHECKING:
    from llamafactory.hparams import DataArguments
    from PIL.Image import Image

    from .args import SynthesisArguments
    from .engine import SynthesisEngine
    from .samples import SynthSample


# rejection reasons, most basic first: a rejected answer is reported under the first that applies
MISSING_TAGS = "missing_tags"
EMPTY_REASONING = "empty_reasoning"
EMPTY_ANSWER = "empty_answer"
FORMAT = "format"
AU_MISMATCH = "au_mismatch"
EMOTION_MISMATCH = "emotion_mismatch"

REFERENCE_ANSWER_SPLIT = re.compile("[,\u3001\uff0c]")  # the released code splits answers on , 、 and ，


@dataclass(frozen=True)
class KeepRule:
    r"""When a completion is good enough to keep: `ours` with its thresholds, or the released code's `reference` check."""

    min_au_f1: float = 1.0
    require_emotion: bool = True
    strict_format: bool = False
    name: str = "ours"

    def __post_init__(self) -> None:
        if self.name not in KEEP_RULES:
            raise ValueError(f"Unknown keep rule {self.name!r}: use one of {', '.join(KEEP_RULES)}.")

    def labels(self, emotion: str | None, aus: "Iterable[int] | None") -> tuple[str | None, frozenset[int] | None]:
        r"""The labels this rule checks: the reference reads an empty AU list as "not labelled", as the released code.

        >>> KeepRule(name="reference").labels(None, []), KeepRule().labels(None, [])
        ((None, None), (None, frozenset()))
        """
        aus = None if aus is None else frozenset(aus)
        if self.name == "reference" and not aus:
            aus = None

        return emotion, aus


@dataclass(frozen=True)
class Verdict:
    r"""The judgement of one completion: kept or not, every reason against it, and feedback for a retry."""

    kept: bool
    reasons: tuple[str, ...]
    feedback: str
    au_f1: float | None = None

    @property
    def reason(self) -> str | None:
        r"""The main reason of a rejection (None when kept)."""
        return self.reasons[0] if self.reasons else None


def _names(aus: Iterable[int | str]) -> str:
    r"""AUs as a list in words: numbers as `AU4`, names as written.

    >>> _names([15, 1, 4]), _names(["AU04"])
    ('AU1, AU4 and AU15', 'AU04')
    """
    ordered = sorted(aus, key=lambda au: (isinstance(au, str), au))
    names = [format_au(au) if isinstance(au, int) else au for au in ordered]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def au_feedback(named: frozenset, labelled: frozenset, where: str = "The reasoning") -> str:
    r"""A sentence saying how the AUs an answer named differ from the labelled ones."""
    extra, missing = named - labelled, labelled - named
    wrong = []
    if extra:
        wrong.append(f"named {_names(extra)}, which {'is' if len(extra) == 1 else 'are'} not active on this face")
    if missing:
        wrong.append(f"left out {_names(missing)}")

    exactly = f"name exactly {_names(labelled)}" if labelled else "name no action unit"
    return f"{where} {' and '.join(wrong)}: {exactly}."


def mismatch_feedback(parsed: ParsedCompletion, emotion: str | None, aus: frozenset[int] | None) -> list[str]:
    r"""Sentences saying how the answer's AUs and emotion differ from the labels the sample has."""
    sentences = []
    if aus is not None and parsed.reasoning and parsed.aus != aus:
        sentences.append(au_feedback(parsed.aus, aus))

    if emotion is not None and parsed.answer and parsed.emotion != emotion:
        sentences.append(f"The answer was {parsed.answer!r} but the face shows {emotion}: answer {emotion}.")

    return sentences


def judge(parsed: ParsedCompletion, emotion: str | None, aus: frozenset[int] | None, rule: KeepRule) -> Verdict:
    r"""Judge a completion with our keep rule against the labels the sample has (None: not labelled, not checked).

    >>> done = parse_completion("<think>Brows lowered (AU4).</think><answer>anger</answer>")
    >>> judge(done, "sadness", frozenset({4}), KeepRule()).reasons, judge(done, None, frozenset({4}), KeepRule()).kept
    (('emotion_mismatch',), True)
    """
    f1 = None
    if aus is not None:
        f1 = 1.0 if parsed.aus == aus else au_f1(parsed.aus, aus)

    reasons = []
    if parsed.reasoning is None or parsed.answer is None:
        reasons.append(MISSING_TAGS)
    if parsed.reasoning == "":
        reasons.append(EMPTY_REASONING)
    if parsed.answer == "":
        reasons.append(EMPTY_ANSWER)
    if rule.strict_format and parsed.problems:
        reasons.append(FORMAT)
    if f1 is not None and parsed.reasoning is not None and f1 < rule.min_au_f1:
        reasons.append(AU_MISMATCH)
    if emotion is not None and parsed.answer is not None and rule.require_emotion and parsed.emotion != emotion:
        reasons.append(EMOTION_MISMATCH)

    feedback = " ".join([*parsed.problems, *mismatch_feedback(parsed, emotion, aus)])
    return Verdict(kept=not reasons, reasons=tuple(dict.fromkeys(reasons)), feedback=feedback, au_f1=f1)


def reference_readings(completion: str) -> tuple[frozenset[str], frozenset[str]]:
    r"""What the released synthesis check reads: every `AU<digits>` of the whole output, and the first answer's parts.

    >>> aus, answers = reference_readings("AU4 (AU15) <answer>sadness, anger</answer><answer>fear</answer>")
    >>> sorted(aus), sorted(answers)
    (['AU15', 'AU4'], ['anger', 'sadness'])
    """
    aus = frozenset(f"AU{digits}" for digits in AU_PATTERN.findall(completion))
    answer = first_block(completion, ANSWER_TAGS)
    parts = REFERENCE_ANSWER_SPLIT.split(answer) if answer is not None else []
    return aus, frozenset(part.strip() for part in parts if part.strip())


def judge_reference(completion: str, emotion: str | None, aus: frozenset[int] | None) -> Verdict:
    r"""Judge a completion with the released code's keep rule (tags not required), each label only where it exists.

    >>> judge_reference("Brows lowered (AU4). <answer>sadness</answer>", "sadness", frozenset({4})).kept
    True
    >>> judge_reference("<think>(AU4)</think><answer>Sadness</answer>", "sadness", None).reasons
    ('emotion_mismatch',)
    """
    named, answered = reference_readings(completion)
    labelled = frozenset(f"AU{number}" for number in aus) if aus else None
    reasons, sentences = [], []
    if labelled is not None and named != labelled:
        reasons.append(AU_MISMATCH)
        sentences.append(au_feedback(named, labelled, "The answer"))
    if emotion is not None and answered != {emotion}:
        reasons.append(EMOTION_MISMATCH)
        if answered:
            said = ", ".join(sorted(answered))
            sentences.append(f"The answer was {said!r} but the face shows {emotion}: answer exactly {emotion}.")
        else:
            sentences.append(
                f"No <answer> named the emotion: the face shows {emotion}, answer <answer>{emotion}</answer>."
            )

    f1 = au_f1(named, labelled) if labelled is not None else None
    feedback = " ".join([*parse_completion(completion).problems, *sentences])
    return Verdict(kept=not reasons, reasons=tuple(reasons), feedback=feedback, au_f1=f1)


def label_kind(emotion: str | None, aus: "Iterable[int] | None") -> str:
    r"""Which labels a sample has: `both`, `emotion` or `aus` (`none` without any)."""
    if emotion is not None and aus is not None:
        return "both"

    return "emotion" if emotion is not None else "aus" if aus is not None else "none"


@dataclass
class SampleResult:
    r"""What synthesis made of one sample: kept (with its FEA row) or rejected/skipped with the reason."""

    sample: "SynthSample"
    status: str  # "kept", "rejected" or "skipped"
    reason: str | None = None
    detail: str | None = None
    completions: list[str] = field(default_factory=list)
    reasons: list[list[str]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    row: dict[str, Any] | None = None

    @property
    def attempts(self) -> int:
        r"""Completions generated for this sample (first try plus retries)."""
        return len(self.completions)

    @property
    def retries(self) -> int:
        r"""Retries used (attempts after the first)."""
        return max(self.attempts - 1, 0)

    def to_json(self) -> dict[str, Any]:
        r"""The journal line of this sample (the prompts are left out: they are rebuilt from the sample)."""
        return {
            "key": self.sample.key,
            "index": self.sample.index,
            "id": self.sample.id,
            "source": self.sample.source,
            "labels": label_kind(self.sample.emotion, self.sample.aus),
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "attempts": self.attempts,
            "retries": self.retries,
            "truncated": sum(self.truncated),
            "reasons": self.reasons,
            "completion": self.completions[-1] if self.completions else None,
            "row": self.row,
        }


@dataclass
class _Pending:
    r"""A sample being synthesized: its image, the guided prompt and the prompt of the next attempt."""

    sample: "SynthSample"
    image: "Image"
    guided: str
    prompt: str
    result: SampleResult


def kept_row(
    sample: "SynthSample", parsed: ParsedCompletion, image: str | None = None, as_generated: bool = False
) -> dict[str, Any]:
    r"""The FEA row of a kept sample under the ordinary question, with the sample's labels (null where it has none).

    The assistant turn is `<think>kept reasoning</think><answer>labelled emotion</answer>` (the model's own answer
    when the sample has no emotion label), or the completion as generated (`as_generated`, the reference's rule).
    """
    record = FEARecord(
        id=sample.id,
        image=image or sample.image or "",
        emotion=sample.emotion,
        aus=None if sample.aus is None else list(sample.aus),
        reasoning=parsed.reasoning,
        dataset=sample.dataset,
        question=sample.question,
    )
    row = record.to_row()
    if as_generated:
        row["messages"][1]["content"] = parsed.text.strip()
    elif sample.emotion is None:
        row["messages"][1]["content"] = (
            f"<think>{parsed.reasoning}</think><answer>{parsed.emotion or parsed.answer}</answer>"
        )

    return row


def build_synthesizer(
    engine: "SynthesisEngine", synth_args: "SynthesisArguments", data_args: "DataArguments | None" = None
) -> "Synthesizer":
    r"""A synthesizer with the keep rule, retries and batch size of the `synth_*` keys and the run's prompts."""
    rule = KeepRule(
        min_au_f1=synth_args.synth_min_au_f1,
        require_emotion=synth_args.synth_require_emotion,
        strict_format=synth_args.synth_strict_format,
        name=synth_args.synth_keep_rule,
    )
    return Synthesizer(
        engine,
        rule,
        load_prompts(synth_args, data_args),
        synth_args.synth_max_retries,
        synth_args.synth_batch_size,
        history=synth_args.synth_retry_feedback == "history",
    )


def load_prompts(synth_args: "SynthesisArguments", data_args: "DataArguments | None" = None) -> FEAPrompts:
    r"""The synthesis prompts: `synth_prompts_file` if set, else the run's `fea_prompt_set`, else `concise`.

    The run's set is read from its data arguments, where the stage that declares `fea_prompt_set` (grpo) or the
    `prompt_set` extension (synth, sft) puts it (`train/prompt_set.py`).
    """
    if synth_args.synth_prompts_file:
        return FEAPrompts.from_file(synth_args.synth_prompts_file)

    return active_prompt_set(data_args) or load_prompt_set(None)


class Synthesizer:
    r"""Runs samples through an engine with retries; first tries and retries share batches of `batch_size`.

    A retry prompt repeats the guided prompt, shows the last rejected answer and says what was wrong with it; with
    `history` it is the previous prompt plus that, so each retry sees every earlier attempt (the reference's way).
    """

    def __init__(
        self,
        engine: "SynthesisEngine",
        rule: KeepRule | None = None,
        prompts: FEAPrompts | None = None,
        max_retries: int = 5,
        batch_size: int = 8,
        history: bool = False,
    ) -> None:
        self.engine = engine
        self.rule = rule or KeepRule()
        self.prompts = prompts or FEAPrompts()
        self.max_retries = max_retries
        self.batch_size = batch_size
        self.history = history

    def _start(self, sample: "SynthSample") -> "_Pending | SampleResult":
        r"""The pending state of a usable sample, or the skipped result of one that cannot be synthesized."""
        if sample.problem is not None:
            return SampleResult(sample, "skipped", reason=sample.problem)

        emotion, aus = self.rule.labels(sample.emotion, sample.aus)
        if emotion is None and aus is None:  # the reference rule reads `aus: []` as no label
            return SampleResult(sample, "skipped", reason=NO_LABELS)

        try:
            image = sample.load_image()
        except Exception as err:  # a missing or corrupt image is reported and skipped, never fatal
            return SampleResult(sample, "skipped", reason=UNREADABLE_IMAGE, detail=f"{sample.image}: {err}")

        hinted_aus = None if aus is None else sorted(aus)
        own = own_question(sample.question, self.prompts) if "{question}" in self.prompts.question_template else None
        guided = self.prompts.guided(emotion, hinted_aus, sample.label_space, own=own)
        return _Pending(sample, image, guided, guided, SampleResult(sample, "rejected"))

    def _judge(self, completion: str, parsed: ParsedCompletion, sample: "SynthSample") -> Verdict:
        r"""The verdict of the keep rule on one completion."""
        emotion, aus = self.rule.labels(sample.emotion, sample.aus)
        if self.rule.name == "reference":
            return judge_reference(completion, emotion, aus)

        return judge(parsed, emotion, aus, self.rule)

    def _advance(self, pending: _Pending, completion: str) -> SampleResult | None:
        r"""Judge one completion; return the finished result, or None after preparing the retry prompt."""
        sample, result = pending.sample, pending.result
        parsed = parse_completion(completion)
        verdict = self._judge(completion, parsed, sample)
        result.prompts.append(pending.prompt)
        result.completions.append(str(completion))
        result.reasons.append(list(verdict.reasons))
        result.truncated.append(bool(getattr(completion, "truncated", False)))
        if verdict.kept:
            result.status, result.reason = "kept", None
            result.row = kept_row(sample, parsed, as_generated=self.rule.name == "reference")
            return result

        if result.retries >= self.max_retries:
            result.reason = verdict.reason
            return result

        base = pending.prompt if self.history else pending.guided
        pending.prompt = self.prompts.retry(base, completion.strip(), verdict.feedback)
        return None

    def run(self, samples: Iterable["SynthSample"]) -> Iterator[SampleResult]:
        r"""Yield one result per sample as soon as it is finished (not necessarily in input order)."""
        queue = iter(samples)
        active: list[_Pending] = []
        exhausted = False
        while True:
            while not exhausted and len(active) < self.batch_size:
                sample = next(queue, None)
                if sample is None:
                    exhausted = True
                    break

                state = self._start(sample)
                if isinstance(state, SampleResult):
                    yield state
                else:
                    active.append(state)

            if not active:
                return

            requests = [GenerationRequest(state.sample.key, state.prompt, state.image) for state in active]
            completions = self.engine.generate(requests)
            if len(completions) != len(requests):
                raise RuntimeError(f"The engine returned {len(completions)} completions for {len(requests)} prompts.")

            still_active = []
            for state, completion in zip(active, completions):
                result = self._advance(state, completion)
                if result is None:
                    still_active.append(state)
                else:
                    yield result

            active = still_active
