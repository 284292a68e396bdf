r"""Reward-verified synthesis: guided prompts, the keep rule, retries told what was wrong, continuous batching.

A sample is kept by the reference rule (both tags non-empty, the AU set named in `<think>` equal to the labelled
set, the answer equal to the labelled emotion) unless the thresholds are relaxed; a rejected answer is retried
up to `max_retries` times with the parser's findings and the AU/emotion mismatch in the prompt.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...data.records import FEARecord
from ...fea.aus import format_au
from ...fea.parsing import ParsedCompletion, parse_completion
from ...fea.prompts import FEAPrompts
from ...rewards import au_f1
from .engine import GenerationRequest
from .samples import UNREADABLE_IMAGE


if TYPE_CHECKING:
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


@dataclass(frozen=True)
class KeepRule:
    r"""When a completion is good enough to keep (defaults: the reference rule)."""

    min_au_f1: float = 1.0
    require_emotion: bool = True
    strict_format: bool = False


@dataclass(frozen=True)
class Verdict:
    r"""The judgement of one completion: kept or not, every reason against it, and feedback for a retry."""

    kept: bool
    reasons: tuple[str, ...]
    feedback: str
    au_f1: float

    @property
    def reason(self) -> str | None:
        r"""The main reason of a rejection (None when kept)."""
        return self.reasons[0] if self.reasons else None


def _au_list(aus: Iterable[int]) -> str:
    names = [format_au(au) for au in sorted(aus)]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def mismatch_feedback(parsed: ParsedCompletion, emotion: str, aus: frozenset[int]) -> list[str]:
    r"""Sentences saying how the answer's AUs and emotion differ from the hinted labels."""
    sentences = []
    if parsed.reasoning and parsed.aus != aus:
        extra, missing = parsed.aus - aus, aus - parsed.aus
        wrong = []
        if extra:
            wrong.append(
                f"named {_au_list(extra)}, which {'is' if len(extra) == 1 else 'are'} not active on this face"
            )
        if missing:
            wrong.append(f"left out {_au_list(missing)}")

        sentences.append(f"The reasoning {' and '.join(wrong)}: name exactly {_au_list(aus)}.")

    if parsed.answer and parsed.emotion != emotion:
        sentences.append(f"The answer was {parsed.answer!r} but the face shows {emotion}: answer {emotion}.")

    return sentences


def judge(parsed: ParsedCompletion, emotion: str, aus: frozenset[int], rule: KeepRule) -> Verdict:
    r"""Judge a completion against the labels with a keep rule.

    >>> v = judge(
    ...     parse_completion("<think>Brows lowered (AU4).</think><answer>sadness</answer>"),
    ...     "sadness",
    ...     frozenset({4}),
    ...     KeepRule(),
    ... )
    >>> v.kept, v.reasons
    (True, ())
    """
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
    if parsed.reasoning is not None and f1 < rule.min_au_f1:
        reasons.append(AU_MISMATCH)
    if parsed.answer is not None and rule.require_emotion and parsed.emotion != emotion:
        reasons.append(EMOTION_MISMATCH)

    feedback = " ".join([*parsed.problems, *mismatch_feedback(parsed, emotion, aus)])
    return Verdict(kept=not reasons, reasons=tuple(dict.fromkeys(reasons)), feedback=feedback, au_f1=f1)


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
        r"""The journal line of this sample (the last prompt is left out: it is rebuilt from the sample)."""
        return {
            "key": self.sample.key,
            "index": self.sample.index,
            "id": self.sample.id,
            "source": self.sample.source,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "attempts": self.attempts,
            "retries": self.retries,
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


def kept_row(sample: "SynthSample", parsed: ParsedCompletion, image: str | None = None) -> dict[str, Any]:
    r"""The FEA row of a kept sample: the ordinary question, the kept reasoning and the labelled emotion."""
    record = FEARecord(
        id=sample.id,
        image=image or sample.image or "",
        emotion=sample.emotion,
        aus=list(sample.aus),
        reasoning=parsed.reasoning,
        dataset=sample.dataset,
        question=sample.question,
    )
    return record.to_row()


def build_synthesizer(engine: "SynthesisEngine", synth_args: "SynthesisArguments") -> "Synthesizer":
    r"""A synthesizer with the keep rule, prompts, retries and batch size of the `synth_*` keys."""
    rule = KeepRule(
        min_au_f1=synth_args.synth_min_au_f1,
        require_emotion=synth_args.synth_require_emotion,
        strict_format=synth_args.synth_strict_format,
    )
    return Synthesizer(
        engine, rule, load_prompts(synth_args), synth_args.synth_max_retries, synth_args.synth_batch_size
    )


def load_prompts(synth_args: "SynthesisArguments") -> FEAPrompts:
    r"""The FEA prompts, with the templates of `synth_prompts_file` when given."""
    return FEAPrompts.from_file(synth_args.synth_prompts_file) if synth_args.synth_prompts_file else FEAPrompts()


class Synthesizer:
    r"""Runs samples through an engine with retries; first tries and retries share batches of `batch_size`."""

    def __init__(
        self,
        engine: "SynthesisEngine",
        rule: KeepRule | None = None,
        prompts: FEAPrompts | None = None,
        max_retries: int = 5,
        batch_size: int = 8,
    ) -> None:
        self.engine = engine
        self.rule = rule or KeepRule()
        self.prompts = prompts or FEAPrompts()
        self.max_retries = max_retries
        self.batch_size = batch_size

    def _start(self, sample: "SynthSample") -> "_Pending | SampleResult":
        r"""The pending state of a usable sample, or the skipped result of one that cannot be synthesized."""
        if sample.problem is not None:
            return SampleResult(sample, "skipped", reason=sample.problem)

        try:
            image = sample.load_image()
        except Exception as err:  # a missing or corrupt image is reported and skipped, never fatal
            return SampleResult(sample, "skipped", reason=UNREADABLE_IMAGE, detail=f"{sample.image}: {err}")

        guided = self.prompts.guided(sample.emotion, list(sample.aus), sample.label_space)
        return _Pending(sample, image, guided, guided, SampleResult(sample, "rejected"))

    def _advance(self, pending: _Pending, completion: str) -> SampleResult | None:
        r"""Judge one completion; return the finished result, or None after preparing the retry prompt."""
        sample, result = pending.sample, pending.result
        parsed = parse_completion(completion)
        verdict = judge(parsed, sample.emotion, frozenset(sample.aus), self.rule)
        result.prompts.append(pending.prompt)
        result.completions.append(completion)
        result.reasons.append(list(verdict.reasons))
        if verdict.kept:
            result.status, result.reason, result.row = "kept", None, kept_row(sample, parsed)
            return result

        if result.retries >= self.max_retries:
            result.reason = verdict.reason
            return result

        pending.prompt = self.prompts.retry(pending.guided, completion.strip(), verdict.feedback)
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
