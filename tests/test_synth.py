r"""Synthesis with scripted engines: the keep rule, retries with feedback, the journal, resume, shards, the report."""

import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from llamafactory_fea.fea.labels import AU_PATTERN
from llamafactory_fea.fea.parsing import parse_completion
from llamafactory_fea.fea.prompts import PROMPT_SETS, FEAPrompts
from llamafactory_fea.train.synth.args import SynthesisArguments, SynthesisCallbackArguments
from llamafactory_fea.train.synth.engine import Completion, GenerationRequest
from llamafactory_fea.train.synth.job import Journal, SynthesisPassConfig, read_journals, run_synthesis_pass
from llamafactory_fea.train.synth.report import read_passes
from llamafactory_fea.train.synth.samples import SynthSample
from llamafactory_fea.train.synth.synthesizer import KeepRule, Synthesizer, judge


SAD = "<think>The inner brows are raised (AU1), the brows are lowered (AU4), the lip corners drop (AU15).</think><answer>sadness</answer>"
WRONG_EMOTION = "<think>The inner brows are raised (AU1), the brows are lowered (AU4), the lip corners drop (AU15).</think><answer>anger</answer>"
NO_TAGS = "The face is sad, with raised inner brows (AU1) and lowered brows (AU4)."
AU_TOO_MANY = "<think>The inner brows are raised (AU1), the brows are lowered (AU4), the lip corners drop (AU15), the cheeks rise (AU6).</think><answer>sadness</answer>"
AU_MISSING = "<think>The inner brows are raised (AU1) and the brows are lowered (AU4), nothing else.</think><answer>sadness</answer>"
EMPTY_ANSWER = "<think>The inner brows are raised (AU1), the brows are lowered (AU4), the lip corners drop (AU15).</think><answer></answer>"
TWO_EMOTIONS = "<think>The inner brows are raised (AU1), the brows are lowered (AU4), the lip corners drop (AU15).</think><answer>sadness or anger</answer>"


class ScriptedEngine:
    r"""Answers each sample with its scripted completions in turn (the last one repeats); records every request."""

    def __init__(self, scripts: dict[str, list[str]]) -> None:
        self.scripts = {key: list(outputs) for key, outputs in scripts.items()}
        self.requests: list[GenerationRequest] = []
        self.batches: list[int] = []

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        self.requests.extend(requests)
        self.batches.append(len(requests))
        outputs = []
        for request in requests:
            script = self.scripts[request.key]
            outputs.append(script.pop(0) if len(script) > 1 else script[0])

        return outputs

    def prompts(self, key: str) -> list[str]:
        return [request.prompt for request in self.requests if request.key == key]


EMOTION_HINT = re.compile(r"The face shows (\w+): answer")
AUS_HINT = re.compile(r"Its active action units are (.*?): explain")


class HintFollowingEngine:
    r"""A model that follows the guided prompt's hints (only those given), but gets the emotion wrong on the first
    try of every other emotion-hinted sample, answers `neutral` when no emotion is hinted, and never writes tags for
    faces hinted as surprise: some samples are kept at once, some after a retry, some never. Used by the e2e tests
    through `synth_backend: tests.test_synth.hint_following_engine`."""

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        outputs = []
        for request in requests:
            emotion, au_hint = EMOTION_HINT.search(request.prompt), AUS_HINT.search(request.prompt)
            named = AU_PATTERN.findall(au_hint.group(1)) if au_hint else ["4"]
            aus = " and ".join(f"the muscle moves (AU{au})" for au in named)
            if emotion is None:
                outputs.append(f"<think>Here {aus}.</think><answer>neutral</answer>")
            elif emotion.group(1) == "surprise":
                outputs.append("I think it is surprise.")
            elif "rejected" not in request.prompt and sum(map(ord, request.key)) % 2:
                outputs.append(f"<think>Here {aus}.</think><answer>neutral</answer>")
            else:
                outputs.append(f"<think>Here {aus}.</think><answer>{emotion.group(1)}</answer>")

        return outputs


def hint_following_engine(**kwargs) -> HintFollowingEngine:
    r"""Engine factory for `synth_backend` (receives the LLaMA-Factory arguments, needs none)."""
    return HintFollowingEngine()


@pytest.fixture()
def face(tmp_path: Path) -> str:
    path = tmp_path / "face.png"
    Image.new("RGB", (32, 32), (200, 150, 120)).save(path)
    return str(path)


def make_sample(key: str, index: int, image: str, emotion: str | None = "sadness", aus=(1, 4, 15)) -> SynthSample:
    problem = None if emotion is not None or aus is not None else "no_labels"
    return SynthSample(
        key=key,
        index=index,
        id=key,
        source="test",
        image=image,
        emotion=emotion,
        aus=None if aus is None else tuple(aus),
        question="What emotion does this face show?",
        problem=problem,
    )


@pytest.fixture()
def cases(face: str, tmp_path: Path) -> tuple[list[SynthSample], dict[str, list[str]]]:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    scripts = {
        "right": [SAD],
        "wrong_emotion": [WRONG_EMOTION],
        "missing_tags": [NO_TAGS],
        "au_too_many": [AU_TOO_MANY],
        "good_on_second_retry": [WRONG_EMOTION, AU_MISSING, SAD],
        "empty_answer": [EMPTY_ANSWER],
        "two_emotions": [TWO_EMOTIONS],
        "good_on_last_retry": [NO_TAGS, NO_TAGS, SAD],
        "good_too_late": [NO_TAGS, NO_TAGS, NO_TAGS, SAD],
        "no_labels": [SAD],
        "corrupt_image": [SAD],
        "missing_image": [SAD],
    }
    samples = [make_sample(key, i, face) for i, key in enumerate(scripts)]
    samples[9] = make_sample("no_labels", 9, face, emotion=None, aus=None)
    samples[10] = make_sample("corrupt_image", 10, str(corrupt))
    samples[11] = make_sample("missing_image", 11, str(tmp_path / "nowhere.png"))
    return samples, scripts


def test_keep_rule_retries_and_feedback(cases):
    samples, scripts = cases
    engine = ScriptedEngine(scripts)
    synthesizer = Synthesizer(engine, KeepRule(), max_retries=2, batch_size=3)
    results = {result.sample.key: result for result in synthesizer.run(samples)}

    assert {key for key, result in results.items() if result.status == "kept"} == {
        "right",
        "good_on_second_retry",
        "good_on_last_retry",
    }
    statuses = {key: (result.status, result.reason, result.retries) for key, result in results.items()}
    assert statuses == {
        "right": ("kept", None, 0),
        "wrong_emotion": ("rejected", "emotion_mismatch", 2),
        "missing_tags": ("rejected", "missing_tags", 2),
        "au_too_many": ("rejected", "au_mismatch", 2),
        "good_on_second_retry": ("kept", None, 2),
        "empty_answer": ("rejected", "empty_answer", 2),
        "two_emotions": ("rejected", "emotion_mismatch", 2),
        "good_on_last_retry": ("kept", None, 2),
        "good_too_late": ("rejected", "missing_tags", 2),
        "no_labels": ("skipped", "no_labels", 0),
        "corrupt_image": ("skipped", "unreadable_image", 0),
        "missing_image": ("skipped", "unreadable_image", 0),
    }
    assert all(batch <= 3 for batch in engine.batches)
    assert not engine.prompts("no_labels")
    assert not engine.prompts("corrupt_image")

    # the first prompt is the guided one; each retry shows the last answer and says what was wrong with it
    first, second, third = engine.prompts("good_on_second_retry")
    assert first == FEAPrompts().guided("sadness", [1, 4, 15])
    assert "The face shows sadness" in first
    assert "AU15 lip corner depressor" in first
    assert "rejected" not in first
    assert first in second
    assert WRONG_EMOTION in second
    assert "The answer was 'anger' but the face shows sadness: answer sadness." in second
    assert first in third
    assert AU_MISSING in third
    assert WRONG_EMOTION not in third
    assert "left out AU15" in third

    too_many = engine.prompts("au_too_many")[1]
    assert "named AU6, which is not active on this face" in too_many
    assert "name exactly AU1, AU4 and AU15" in too_many
    assert "Put the reasoning inside <think> and </think>." in engine.prompts("missing_tags")[1]
    assert "several emotions" in engine.prompts("two_emotions")[1]


def test_kept_row_is_the_ordinary_question_with_the_kept_reasoning(cases):
    samples, scripts = cases
    results = {r.sample.key: r for r in Synthesizer(ScriptedEngine(scripts), max_retries=2).run(samples)}
    row = results["good_on_second_retry"].row
    assert row["messages"][0] == {"role": "user", "content": "<image>What emotion does this face show?"}
    assert row["messages"][1]["content"] == SAD
    assert row["emotion"] == "sadness"
    assert row["aus"] == [1, 4, 15]
    assert row["id"] == "good_on_second_retry"
    assert results["good_on_second_retry"].reasons == [["emotion_mismatch"], ["au_mismatch"], []]


THINK_SAD = (
    "<think>The inner brows are raised (AU1), the brows are lowered (AU4), the lip corners drop (AU15).</think>"
)
EMOTION_ONLY = {  # emotion "sadness", no AU label: only the answer is checked
    "e_right": SAD,
    "e_other_aus": "<think>The cheeks are raised (AU6).</think><answer>sadness</answer>",
    "e_wrong_emotion": WRONG_EMOTION,
    "e_no_think": "The inner brows are raised (AU1). <answer>sadness</answer>",
    "e_capitalised": f"{THINK_SAD}<answer>Sadness</answer>",
    "e_repeated": f"{THINK_SAD}<answer>sadness, sadness</answer>",
    "e_first_answer": f"{THINK_SAD}<answer>sadness</answer><answer>anger</answer>",
}
AU_ONLY = {  # AUs 1, 4, 15, no emotion label: only the AU set is checked
    "a_right": SAD,
    "a_other_emotion": WRONG_EMOTION,
    "a_missing_au": AU_MISSING,
    "a_au_after_think": "<think>The inner brows are raised (AU1), the brows are lowered (AU4).</think>"
    "<answer>sadness</answer> And AU15.",
    "a_no_tags": "The inner brows are raised (AU1), the brows are lowered (AU4), the lip corners drop (AU15).",
    "a_none_active": "<think>The face is relaxed and still.</think><answer>neutral</answer>",  # labelled aus: []
}
PARTIAL_KEPT = {
    "ours": {"e_right", "e_other_aus", "e_capitalised", "a_right", "a_other_emotion", "a_none_active"},
    "reference": {
        "e_right",
        "e_other_aus",
        "e_no_think",
        "e_repeated",
        "e_first_answer",
        "a_right",
        "a_other_emotion",
        "a_au_after_think",
        "a_no_tags",
    },
}


@pytest.mark.parametrize("rule", ["ours", "reference"])
@pytest.mark.parametrize("labels", ["emotion", "aus"])
def test_partially_labelled_samples_are_kept_by_the_labels_they_have(face: str, rule: str, labels: str):
    scripts = EMOTION_ONLY if labels == "emotion" else AU_ONLY
    samples = []
    for index, key in enumerate(scripts):
        if labels == "emotion":
            samples.append(make_sample(key, index, face, emotion="sadness", aus=None))
        else:
            samples.append(
                make_sample(key, index, face, emotion=None, aus=() if key == "a_none_active" else (1, 4, 15))
            )

    engine = ScriptedEngine({key: [text] for key, text in scripts.items()})
    results = {r.sample.key: r for r in Synthesizer(engine, KeepRule(name=rule), max_retries=0).run(samples)}

    assert {key for key, result in results.items() if result.status == "kept"} == PARTIAL_KEPT[rule] & set(scripts)
    for sample in samples:  # the hinted prompt gives only the hints that exist
        emotion, aus = sample.emotion, None if sample.aus is None else list(sample.aus)
        if rule == "reference" and not aus:
            aus = None  # the released code reads an empty AU list as no label
        if emotion is None and aus is None:
            assert results[sample.key].status == "skipped"
            assert results[sample.key].reason == "no_labels"
            assert not engine.prompts(sample.key)
            continue

        assert engine.prompts(sample.key) == [FEAPrompts().guided(emotion, aus)]
        assert ("The face shows" in engine.prompts(sample.key)[0]) == (labels == "emotion")
        assert ("active action units" in engine.prompts(sample.key)[0]) == (labels == "aus")

    kept = {key: result.row for key, result in results.items() if result.status == "kept"}
    for key, row in kept.items():  # the row carries the sample's labels, null where it has none
        assert (row["emotion"], row["aus"]) == (("sadness", None) if labels == "emotion" else (None, row["aus"]))
        if rule == "reference":
            assert row["messages"][1]["content"] == scripts[key]  # the completion as generated
    if rule == "ours" and labels == "aus":
        assert kept["a_other_emotion"]["messages"][1]["content"] == WRONG_EMOTION  # the model's own answer
        assert kept["a_none_active"]["aus"] == []
    if rule == "ours" and labels == "emotion":
        assert kept["e_capitalised"]["messages"][1]["content"] == f"{THINK_SAD}<answer>sadness</answer>"


def test_reference_rule_feedback_reads_what_it_checks(face: str):
    sample = make_sample("a", 0, face, emotion="sadness")
    engine = ScriptedEngine({"a": ["Brows lowered (AU4), cheeks up (AU6). <answer>anger, fear</answer>", SAD]})
    (result,) = Synthesizer(engine, KeepRule(name="reference"), max_retries=1).run([sample])
    assert result.status == "kept"
    assert result.reasons == [["au_mismatch", "emotion_mismatch"], []]
    retry = engine.prompts("a")[1]
    assert "The answer named AU6, which is not active on this face and left out AU1 and AU15" in retry
    assert "The answer was 'anger, fear' but the face shows sadness" in retry


@pytest.mark.parametrize("history", [False, True])
def test_retries_see_the_last_attempt_or_every_attempt(face: str, history: bool):
    engine = ScriptedEngine({"s": [WRONG_EMOTION, AU_MISSING, NO_TAGS, SAD]})
    synthesizer = Synthesizer(engine, max_retries=3, history=history)
    (result,) = synthesizer.run([make_sample("s", 0, face)])
    assert result.status == "kept"
    first, second, third, fourth = engine.prompts("s")
    wrong_emotion = "The answer was 'anger' but the face shows sadness: answer sadness."
    left_out = "left out AU15"
    assert WRONG_EMOTION in second
    assert wrong_emotion in second
    assert AU_MISSING in third
    assert left_out in third
    assert NO_TAGS in fourth
    assert "Put the reasoning inside <think> and </think>." in fourth
    if history:  # each retry is the previous prompt plus the last answer and what was wrong with it
        assert third.startswith(second)
        assert fourth.startswith(third)
        assert all(text in fourth for text in (WRONG_EMOTION, wrong_emotion, AU_MISSING, left_out, NO_TAGS))
        assert fourth.count("Your previous answer was") == 3
    else:  # each retry is the guided prompt plus the last answer only
        assert all(prompt.startswith(first) for prompt in (second, third, fourth))
        assert WRONG_EMOTION not in third
        assert AU_MISSING not in fourth
        assert fourth.count("Your previous answer was") == 1


OWN_QUESTION = "Which emotion does this person show?"


@pytest.mark.parametrize("stored", ["framed_concise", "reference", "record"])
def test_the_reference_set_guides_with_the_samples_own_question(face: str, stored: str):
    reference = PROMPT_SETS["reference"]
    question = {  # the forms a sample's question arrives in: as converted, or rendered with the run's set
        "framed_concise": f"{OWN_QUESTION}\n\n{PROMPT_SETS['concise'].question()}",
        "reference": reference.question(own=OWN_QUESTION),
        "record": OWN_QUESTION,
    }[stored]
    engine = ScriptedEngine({"s": [WRONG_EMOTION, SAD], "q": [SAD]})
    sample = replace(make_sample("s", 0, face), question=question)
    no_own = replace(make_sample("q", 1, face), question=reference.question())
    results = list(Synthesizer(engine, prompts=reference, max_retries=1).run([sample, no_own]))
    assert [result.status for result in results] == ["kept", "kept"]
    first, retry = engine.prompts("s")
    assert first == reference.guided("sadness", [1, 4, 15], own=OWN_QUESTION)
    assert first.count(OWN_QUESTION) == 1
    assert "You are an expert in facial expression analysis" not in first
    assert retry.startswith(first)
    assert engine.prompts("q") == [reference.guided("sadness", [1, 4, 15])]  # the set's default question
    concise = ScriptedEngine({"s": [SAD]})
    list(Synthesizer(concise).run([replace(sample, key="s")]))
    assert concise.prompts("s") == [PROMPT_SETS["concise"].guided("sadness", [1, 4, 15])]  # concise frames none


def test_synthesis_prompts_are_the_file_else_the_runs_prompt_set_else_concise(tmp_path: Path):
    from llamafactory_fea.train.synth.synthesizer import load_prompts

    custom = tmp_path / "prompts.json"
    custom.write_text(json.dumps({"base": "reference", "emotion_hint_template": "Answer {emotion}."}))
    run_set = SimpleNamespace(fea_prompt_set="reference")
    assert load_prompts(SynthesisArguments(), None) == PROMPT_SETS["concise"]
    assert load_prompts(SynthesisArguments(), SimpleNamespace(fea_prompt_set=None)) == PROMPT_SETS["concise"]
    assert load_prompts(SynthesisArguments(), run_set) == PROMPT_SETS["reference"]
    from_file = load_prompts(SynthesisArguments(synth_prompts_file=str(custom)), run_set)
    assert from_file.emotion_hint_template == "Answer {emotion}."
    assert from_file.question_template == PROMPT_SETS["reference"].question_template


def test_the_synth_stage_takes_fea_prompt_set_through_the_one_prompt_set_key(tmp_path: Path):
    from dataclasses import fields

    from llamafactory_fea.seam import host_train_arguments
    from llamafactory_fea.train import plugin
    from llamafactory_fea.train.grpo.args import GRPOArguments
    from llamafactory_fea.train.prompt_set import PromptSetArguments
    from llamafactory_fea.train.synth.synthesizer import load_prompts

    declared = [
        cls.__name__
        for cls in (SynthesisArguments, SynthesisCallbackArguments, PromptSetArguments, GRPOArguments)
        if "fea_prompt_set" in {field.name for field in fields(cls)}
    ]
    assert declared == ["PromptSetArguments", "GRPOArguments"]  # grpo takes it as its own key, before extensions
    args = {"stage": "synth", "dataset": "fea_demo", "synth_max_retries": 1, "fea_prompt_set": "reference"}
    stage = plugin.STAGES["synth"]
    plugin.check_keys(stage, args, host_train_arguments())  # a known key of the synth stage
    synth_args, rest = plugin.split_plugin_args(stage, args)
    extensions, rest = plugin.split_extension_args(rest)
    ((extension, prompt_args),) = extensions
    assert (extension.name, prompt_args.fea_prompt_set) == ("prompt_set", "reference")
    assert "fea_prompt_set" not in rest
    data_args = SimpleNamespace()
    assert extension.load_callbacks()(prompt_args, None, data_args, None, None, None) == []
    assert load_prompts(synth_args, data_args) == PROMPT_SETS["reference"]
    with_callback = {
        "stage": "sft",
        "synth_callback": True,
        "synth_callback_dataset": "a",
        "fea_prompt_set": "reference",
    }
    used, rest = plugin.split_extension_args(with_callback)
    assert sorted(extension.name for extension, _ in used) == ["prompt_set", "synth_callback"]
    assert rest == {"stage": "sft"}


def test_truncated_completions_are_reported(face: str, tmp_path: Path):
    class CuttingEngine(ScriptedEngine):
        def generate(self, requests):  # what a real engine says of completions that hit max_new_tokens
            return [Completion(text, text == NO_TAGS) for text in super().generate(requests)]

    samples = [make_sample(key, i, face) for i, key in enumerate(["cut_then_good", "good", "always_cut"])]
    engine = CuttingEngine({"cut_then_good": [NO_TAGS, SAD], "good": [SAD], "always_cut": [NO_TAGS]})
    synthesis_pass = run_synthesis_pass(Synthesizer(engine, max_retries=2), samples, _config(tmp_path))
    assert (synthesis_pass.completions, synthesis_pass.truncated) == (2 + 1 + 3, 1 + 3)
    entries = {entry["key"]: entry for entry in Journal.read(tmp_path / "run" / "synth_journal.rank0.jsonl")}
    assert {key: entry["truncated"] for key, entry in entries.items()} == {
        "cut_then_good": 1,
        "good": 0,
        "always_cut": 3,
    }
    report = json.loads((tmp_path / "run" / "synth_report.json").read_text())["passes"][0]
    assert (report["completions"], report["truncated"]) == (6, 4)
    assert (
        "truncated: 4 of 6 completions stopped at `max_new_tokens`"
        in (tmp_path / "run" / "synth_report.md").read_text()
    )


def test_report_counts_samples_by_the_labels_they_have(face: str, tmp_path: Path):
    samples = [
        make_sample("both", 0, face),
        make_sample("emotion", 1, face, aus=None),
        make_sample("aus", 2, face, emotion=None),
        make_sample("aus_wrong", 3, face, emotion=None),
        make_sample("none", 4, face, emotion=None, aus=None),
    ]
    engine = ScriptedEngine({"both": [SAD], "emotion": [SAD], "aus": [SAD], "aus_wrong": [AU_MISSING], "none": [SAD]})
    synthesis_pass = run_synthesis_pass(Synthesizer(engine, max_retries=0), samples, _config(tmp_path))
    assert synthesis_pass.labels == {
        "aus": {"generated": 2, "kept": 1},
        "both": {"generated": 1, "kept": 1},
        "emotion": {"generated": 1, "kept": 1},
    }
    assert synthesis_pass.skipped == {"no_labels": 1}
    text = (tmp_path / "run" / "synth_report.md").read_text()
    assert "by labels: AUs only kept 1 of 2, emotion and AUs kept 1 of 1, emotion only kept 1 of 1" in text


def test_relaxed_thresholds(cases):
    samples, scripts = cases
    rule = KeepRule(min_au_f1=0.8, require_emotion=False)
    results = {r.sample.key: r for r in Synthesizer(ScriptedEngine(scripts), rule, max_retries=0).run(samples)}
    kept = {key for key, result in results.items() if result.status == "kept"}
    # F1 of {1,4,15,6} vs {1,4,15} is 6/7 >= 0.8; a wrong or double emotion passes; empty tags never do
    assert kept == {"right", "wrong_emotion", "au_too_many", "two_emotions", "good_on_second_retry"}
    assert results["wrong_emotion"].row["messages"][1]["content"].endswith("<answer>sadness</answer>")


def test_strict_format_rejects_what_the_reference_rule_keeps(face: str):
    bare = "<think>AU1 AU4 AU15</think><answer>sadness</answer>"
    sample = make_sample("bare", 0, face)
    reference = judge(parse_completion(bare), "sadness", frozenset({1, 4, 15}), KeepRule())
    strict = judge(parse_completion(bare), "sadness", frozenset({1, 4, 15}), KeepRule(strict_format=True))
    assert reference.kept
    assert not strict.kept
    assert strict.reason == "format"
    results = list(
        Synthesizer(ScriptedEngine({"bare": [bare]}), KeepRule(strict_format=True), max_retries=1).run([sample])
    )
    assert results[0].status == "rejected"
    assert results[0].retries == 1


def _config(tmp_path: Path, **kwargs) -> SynthesisPassConfig:
    return SynthesisPassConfig(
        name="fea_synth_test",
        datasets=["test"],
        run_dir=tmp_path / "run",
        dataset_dir=tmp_path / "registry",
        dataset_name="fea_synth_test",
        dataset_file="synth/fea_synth_test.jsonl",
        **kwargs,
    )


def _keys(run_dir: Path) -> list[str]:
    return [entry["key"] for path in sorted(run_dir.glob("synth_journal.rank*.jsonl")) for entry in Journal.read(path)]


def test_pass_journal_resume_and_report(cases, tmp_path: Path):
    samples, scripts = cases
    config = _config(tmp_path, stop_after=5)
    first = run_synthesis_pass(Synthesizer(ScriptedEngine(scripts), max_retries=2, batch_size=2), samples, config)
    assert len(_keys(config.run_dir)) == 5
    assert not first.complete

    engine = ScriptedEngine(scripts)
    config.stop_after = None
    synthesis_pass = run_synthesis_pass(Synthesizer(engine, max_retries=2, batch_size=2), samples, config)
    keys = _keys(config.run_dir)
    assert sorted(keys) == sorted(sample.key for sample in samples)  # every sample exactly once
    assert {request.key for request in engine.requests}.isdisjoint(set(keys[:5]))  # nothing redone

    rows = [json.loads(line) for line in (config.dataset_dir / config.dataset_file).read_text().splitlines()]
    assert [row["id"] for row in rows] == ["right", "good_on_second_retry", "good_on_last_retry"]  # source order
    assert rows[0]["images"] == [samples[0].image]  # outside the registry folder: absolute
    info = json.loads((config.dataset_dir / "dataset_info.json").read_text())
    assert info["fea_synth_test"]["file_name"] == "synth/fea_synth_test.jsonl"

    assert synthesis_pass.complete
    assert (synthesis_pass.generated, synthesis_pass.kept, synthesis_pass.processed) == (9, 3, 12)
    assert synthesis_pass.rejected == {"emotion_mismatch": 2, "missing_tags": 2, "au_mismatch": 1, "empty_answer": 1}
    assert synthesis_pass.skipped == {"unreadable_image": 2, "no_labels": 1}
    assert synthesis_pass.retries == 6 * 2 + 2 + 2
    assert synthesis_pass.kept_after_retry == 2
    assert synthesis_pass.acceptance_rate == pytest.approx(3 / 9)
    report = json.loads((config.run_dir / "synth_report.json").read_text())
    assert report["passes"][0]["kept"] == 3
    assert [r.name for r in read_passes(config.run_dir)] == ["fea_synth_test"]
    assert "kept 3 (33.3%)" in (config.run_dir / "synth_report.md").read_text()


def test_a_line_cut_by_a_kill_is_redone(cases, tmp_path: Path):
    samples, scripts = cases
    config = _config(tmp_path, stop_after=3)
    run_synthesis_pass(Synthesizer(ScriptedEngine(scripts), max_retries=2), samples, config)
    journal = config.run_dir / "synth_journal.rank0.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:2]) + lines[2][:40])  # killed in the middle of the third line

    assert [entry["key"] for entry in Journal.read(journal)] == [samples[0].key, samples[1].key]
    config.stop_after = None
    run_synthesis_pass(Synthesizer(ScriptedEngine(scripts), max_retries=2), samples, config)
    assert sorted(_keys(config.run_dir)) == sorted(sample.key for sample in samples)
    assert all(line.endswith("}") for line in journal.read_text().splitlines())


def test_shards_are_merged_in_source_order(cases, tmp_path: Path):
    samples, scripts = cases
    config = _config(tmp_path)
    engines = {rank: ScriptedEngine(scripts) for rank in (0, 1)}
    assert run_synthesis_pass(Synthesizer(engines[1], max_retries=2), samples, config, rank=1, world_size=2) is None
    synthesis_pass = run_synthesis_pass(Synthesizer(engines[0], max_retries=2), samples, config, rank=0, world_size=2)

    assert {r.key for r in engines[1].requests} <= {s.key for s in samples[1::2]}
    assert {r.key for r in engines[0].requests} <= {s.key for s in samples[0::2]}
    rank1 = Journal.read(config.run_dir / "synth_journal.rank1.jsonl")
    assert sorted(entry["key"] for entry in rank1) == sorted(s.key for s in samples[1::2])
    rows = (config.dataset_dir / config.dataset_file).read_text().splitlines()
    assert [json.loads(row)["id"] for row in rows] == ["right", "good_on_second_retry", "good_on_last_retry"]
    assert synthesis_pass.complete
    assert len(read_journals(config.run_dir)) == len(samples)


def test_no_resume_starts_afresh(cases, tmp_path: Path):
    samples, scripts = cases
    config = _config(tmp_path)
    run_synthesis_pass(Synthesizer(ScriptedEngine(scripts), max_retries=0), samples, config)
    config.resume = False
    engine = ScriptedEngine(scripts)
    run_synthesis_pass(Synthesizer(engine, max_retries=0), samples, config)
    assert len(_keys(config.run_dir)) == len(samples)
    assert len(engine.requests) == 9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"synth_max_retries": -1}, "synth_max_retries"),
        ({"synth_min_au_f1": 1.5}, "synth_min_au_f1"),
        ({"synth_batch_size": 0}, "synth_batch_size"),
        ({"synth_backend": "tgi"}, "synth_backend"),
        ({"synth_dataset_name": "a b"}, "synth_dataset_name"),
        ({"synth_keep_rule": "paper"}, "synth_keep_rule` must be ours or reference"),
        ({"synth_retry_feedback": "all"}, "synth_retry_feedback` must be last or history"),
        ({"synth_keep_rule": "reference", "synth_min_au_f1": 0.5}, "`synth_min_au_f1` set the `ours` keep rule"),
    ],
)
def test_arguments_are_validated(overrides: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SynthesisArguments(**overrides)


def test_callback_arguments_need_a_dataset():
    with pytest.raises(ValueError, match="synth_callback_dataset"):
        SynthesisCallbackArguments(synth_callback=True)

    assert SynthesisCallbackArguments(synth_callback=True, synth_callback_dataset="fea_demo").synth_max_retries == 5


def test_callback_keys_of_the_old_spelling_still_work_with_a_deprecation_warning():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(SynthesisCallbackArguments)
    with pytest.warns(FutureWarning) as warned:
        (args,) = parser.parse_dict(
            {"synthesis_callback": True, "synthesis_dataset": "a,b", "synthesis_every_n_epochs": "2"}
        )
    assert (args.synth_callback, args.synth_callback_dataset, args.synth_callback_every_n_epochs) == (True, "a,b", 2)
    assert {str(warning.message) for warning in warned} == {
        "synth key `synthesis_callback` is deprecated: use `synth_callback`.",
        "synth key `synthesis_dataset` is deprecated: use `synth_callback_dataset`.",
        "synth key `synthesis_every_n_epochs` is deprecated: use `synth_callback_every_n_epochs`.",
    }
    with pytest.warns(FutureWarning):
        args, _ = parser.parse_args_into_dataclasses(
            ["--synthesis_callback", "true", "--synthesis_dataset=fea_demo"], return_remaining_strings=True
        )
    assert (args.synth_callback, args.synth_callback_dataset) == (True, "fea_demo")
    with pytest.raises(ValueError, match="needs `synth_callback_dataset`"), pytest.warns(FutureWarning):
        SynthesisCallbackArguments(synthesis_callback=True)
    with pytest.raises(ValueError, match="`synthesis_dataset` is the deprecated spelling of `synth_callback_dataset`"):
        SynthesisCallbackArguments(synth_callback_dataset="a", synthesis_dataset="b")


def load_registered_samples(folder: Path, rows: list[dict], workers: int = 1) -> list:
    r"""Register `rows` as `fea_set` in `folder` and load them as synthesis samples through LLaMA-Factory's loader."""
    from llamafactory.hparams import get_train_args

    from llamafactory_fea.data.files import write_jsonl
    from llamafactory_fea.data.records import register_dataset
    from llamafactory_fea.train.synth.samples import load_samples

    write_jsonl(folder / "set.jsonl", rows)
    register_dataset(folder, "fea_set", "set.jsonl")
    model_args, data_args, training_args, _, _ = get_train_args(
        {
            "model_name_or_path": "unused",
            "stage": "sft",
            "dataset": "fea_set",
            "dataset_dir": str(folder),
            "output_dir": str(folder / "out"),
            "template": "qwen2_vl",
            "preprocessing_num_workers": workers,
        }
    )
    return load_samples(data_args.dataset, model_args, data_args, training_args)


def test_samples_come_from_llamafactorys_loader_with_labels_and_unique_keys(tmp_path: Path, face: str):
    from llamafactory_fea.data.records import FEARecord

    Image.open(face).save(tmp_path / "a.png")
    rows = [
        FEARecord("x", "a.png", "sadness", [1, 4, 15], "r (AU1)", "rafdb", question="Which emotion?").to_row(),
        FEARecord("x", "a.png", "contempt", [12, 14], "r (AU12)", "rafdb").to_row(),  # same id, outside rafdb's space
        {
            "messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": SAD}],
            "images": ["a.png"],
        },
        FEARecord("y", "missing.png", None, None, None, "demo").to_row(),  # no label at all
        FEARecord("e", "a.png", "anger", None, None, "fer2013").to_row(),  # emotion only
        FEARecord("u", "a.png", None, [4, 7], None, "disfa").to_row(),  # AUs only
        FEARecord("n", "a.png", None, [], None, "disfa").to_row(),  # labelled: no active AU
        FEARecord("b", "a.png", "bored", [4], None, "demo").to_row(),  # not an FEA emotion
    ]
    samples = load_registered_samples(tmp_path, rows)

    keys = ["x", "x#1", "2", "y", "e", "u", "n", "b"]
    assert [s.key for s in samples] == [f"fea_set/{key}" for key in keys]
    assert [s.index for s in samples] == list(range(8))
    assert (samples[0].question, samples[0].emotion, samples[0].aus) == ("Which emotion?", "sadness", (1, 4, 15))
    assert samples[0].image == str(tmp_path / "a.png")
    assert "contempt" in samples[1].label_space
    assert (samples[2].emotion, samples[2].aus, samples[2].question) == ("sadness", (1, 4, 15), "Q")  # parsed
    assert [(s.emotion, s.aus) for s in samples[4:7]] == [("anger", None), (None, (4, 7)), (None, ())]
    assert [s.problem for s in samples] == [None, None, None, "no_labels", None, None, None, "unknown_emotion"]


def test_unreadable_images_of_usable_samples_are_found_and_said_at_load_time(
    tmp_path: Path, face: str, caplog: pytest.LogCaptureFixture
):
    from llamafactory_fea.data.records import FEARecord

    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows = [
        FEARecord("a", face, "sadness", [1, 4, 15], "r (AU1)", "rafdb").to_row(),
        FEARecord("b", "missing.png", None, None, None, "demo").to_row(),  # no labels: skipped, never opened
        FEARecord("c", "corrupt.png", "sadness", [1, 4, 15], "r (AU1)", "rafdb").to_row(),
    ]
    logger = logging.getLogger("llamafactory_fea")
    logger.addHandler(caplog.handler)
    try:
        samples = load_registered_samples(tmp_path, rows, workers=2)
        assert [sample.problem for sample in samples] == [None, "no_labels", "unreadable_image"]
        assert re.search(r"Dataset fea_set, record c: image .*corrupt.png cannot be read as an image", caplog.text)
        assert "missing.png" not in caplog.text  # a sample without labels is skipped without opening its image

        rows[2] = FEARecord("c", "gone.png", "sadness", [1, 4, 15], "r (AU1)", "rafdb").to_row()
        samples = load_registered_samples(tmp_path, rows, workers=2)
        assert samples[2].problem == "unreadable_image"
        assert re.search(r"Dataset fea_set, record c: image .*gone.png does not exist", caplog.text)
    finally:
        logger.removeHandler(caplog.handler)


def test_model_chain_follows_llamafactorys_adapter_rules():
    from llamafactory_fea.loop import ModelChain

    base = ModelChain("base")
    sft = base.after_training({"finetuning_type": "lora"}, "sft")
    assert sft.keys() == {"model_name_or_path": "base", "adapter_name_or_path": "sft"}
    grpo = sft.after_training({"finetuning_type": "lora", "create_new_adapter": True}, "grpo")
    assert grpo.adapters == ["sft", "grpo"]
    assert grpo.after_training({"finetuning_type": "lora"}, "more").adapters == ["sft", "more"]  # resumes the last
    assert grpo.after_training({"finetuning_type": "full"}, "full").keys() == {
        "model_name_or_path": "full",
        "adapter_name_or_path": None,
    }


def test_loop_stops_when_acceptance_stops_improving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from llamafactory_fea import loop
    from llamafactory_fea.data.records import register_dataset

    register_dataset(tmp_path / "data", "seed", "seed.jsonl")
    (tmp_path / "sft.yaml").write_text("model_name_or_path: base\nstage: sft\n")
    config = tmp_path / "loop.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'loop'}\nrounds: 5\nmin_improvement: 0.05\nseed_dataset: seed\n"
        f"dataset_dir: {tmp_path / 'data'}\nsft: {tmp_path / 'sft.yaml'}\ngrpo: null\n"
    )
    rates = iter([0.2, 0.5, 0.52, 0.9])
    seen = []

    def run_round(self, k, chain, previous_synth):
        seen.append((k, chain.model_name_or_path, previous_synth))
        rate = next(rates)
        record = {"round": k, "generated": 10, "kept": int(rate * 10), "acceptance_rate": rate}
        return {**record, "synth_dataset": f"s{k}", "eval": None}, loop.ModelChain(f"model{k}")

    monkeypatch.setattr(loop.Loop, "run_round", run_round)
    records = loop.Loop(loop.LoopArguments.from_yaml(config, ["sft_init=previous"])).run()

    assert [r["round"] for r in records] == [1, 2, 3]  # +0.02 after round 3 is no improvement
    assert seen == [(1, "base", None), (2, "model1", "s1"), (3, "model2", "s2")]
    report = json.loads((tmp_path / "loop" / "loop_report.json").read_text())
    assert report["stopped"] == "acceptance stopped improving after round 3"
    assert "| 3 | 10 | 5 | 52.0% | s3 | - | - | - |" in (tmp_path / "loop" / "loop_report.md").read_text()
    registry = json.loads((tmp_path / "loop" / "data" / "dataset_info.json").read_text())
    assert registry["seed"]["file_name"] == str(tmp_path / "data" / "seed.jsonl")


def test_loop_refuses_unknown_keys(tmp_path: Path):
    from llamafactory_fea.loop import LoopArguments

    config = tmp_path / "loop.yaml"
    config.write_text("output_dir: out\nseed_dataset: seed\nround: 2\n")
    with pytest.raises(ValueError, match="unknown loop keys"):
        LoopArguments.from_yaml(config)


def test_loop_synthesis_dataset_is_a_key_of_synth_args(tmp_path: Path):
    from llamafactory_fea.loop import LoopArguments

    config = tmp_path / "loop.yaml"
    config.write_text("output_dir: out\nseed_dataset: seed\nsynthesis_dataset: labelled\n")
    with pytest.warns(FutureWarning, match="`synthesis_dataset` is deprecated: use `synth_args.dataset`"):
        args = LoopArguments.from_yaml(config)

    assert args.synth_args == {"dataset": "labelled"}
    assert LoopArguments.from_yaml(config, ["synthesis_dataset=null", "synth_args.dataset=x"]).synth_args == {
        "dataset": "x"
    }


@pytest.mark.parametrize(
    "args",
    [
        {
            "stage": "sft",
            "synth_callback": True,
            "synth_callback_dataset": "fea_demo",
            "synth_max_retries": 2,
            "lr": 1,
        },
        [
            "--stage",
            "sft",
            "--synth_callback",
            "true",
            "--synth_callback_dataset=fea_demo",
            "--synth_max_retries",
            "2",
        ],
    ],
)
def test_extension_keys_are_taken_out_for_any_stage(args):
    from llamafactory_fea.train import plugin

    (extension, extension_args), *others = plugin.split_extension_args(args)[0]
    rest = plugin.split_extension_args(args)[1]
    assert not others
    assert extension.name == "synth_callback"
    assert (extension_args.synth_callback_dataset, extension_args.synth_max_retries) == ("fea_demo", 2)
    assert all("synth" not in key for key in rest)
    assert plugin.split_extension_args({"stage": "sft", "lr": 1}) == ([], {"stage": "sft", "lr": 1})


def test_extension_callbacks_join_the_run_after_argument_parsing():
    import types

    from llamafactory_fea import seam
    from llamafactory_fea.train import plugin
    from llamafactory_fea.train.synth.callback import SynthesisCallback

    parsed = (types.SimpleNamespace(), types.SimpleNamespace(), types.SimpleNamespace(fsdp=""), None, None)
    tuner = types.SimpleNamespace(get_train_args=lambda args: parsed)
    callbacks = []
    extensions, _ = plugin.split_extension_args({"synth_callback": True, "synth_callback_dataset": "a,b"})
    with seam._train_args_hook(tuner, None, extensions, callbacks):
        assert tuner.get_train_args({}) == parsed

    assert tuner.get_train_args({}) == parsed
    (callback,) = callbacks
    assert isinstance(callback, SynthesisCallback)
    assert callback.datasets == ["a", "b"]


def test_vllm_backend_says_how_to_install_it():
    from llamafactory.extras.packages import is_vllm_available

    from llamafactory_fea.train.synth.engine import VllmSynthEngine

    if is_vllm_available():
        pytest.skip("vLLM is installed here")

    with pytest.raises(ImportError, match="pip install vllm"):
        VllmSynthEngine(template=None, model_args=None, generating_args=None, tokenizer=None)


def test_engine_factory_by_dotted_path():
    from llamafactory_fea.train.synth.engine import create_engine

    def create(backend: str):
        synth_args = SynthesisArguments(synth_backend=backend)
        return create_engine(synth_args, None, None, None, None, None, tokenizer=None)

    assert isinstance(create("tests.test_synth.hint_following_engine"), HintFollowingEngine)
    with pytest.raises(ValueError, match="Cannot import the synthesis engine factory"):
        create("tests.test_synth.no_such_factory")
    with pytest.raises(ValueError, match="needs a loaded model"):
        create("hf")
