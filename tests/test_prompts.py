r"""Prompt sets: partial hints, the `reference` set, the row's own label space, and `fea_prompt_set` rendering."""

import json
from pathlib import Path

import pytest

from llamafactory_fea.data.converters import fea20k
from llamafactory_fea.data.converters.fea20k import QUESTION_MODES
from llamafactory_fea.fea.aus import AU_CATALOGUE
from llamafactory_fea.fea.emotions import BASIC_EMOTIONS, EMOTIONS, LABEL_SPACES, source_key, source_label_space
from llamafactory_fea.fea.prompts import PROMPT_SETS, FEAPrompts, label_space_of, load_prompt_set
from llamafactory_fea.train.prompt_set import own_question, render_prompt, render_question

from .conftest import DATA_REGISTRY, EXAMPLES


CONCISE, REFERENCE = PROMPT_SETS["concise"], PROMPT_SETS["reference"]


@pytest.mark.parametrize("prompts", [CONCISE, REFERENCE], ids=["concise", "reference"])
def test_guided_gives_only_the_hints_that_exist(prompts: FEAPrompts):
    both = prompts.guided("sadness", [15, 1])
    emotion_only = prompts.guided("sadness", None)
    aus_only = prompts.guided(None, [15, 1])
    assert both.startswith(prompts.question())
    assert "AU1 inner brow raiser, AU15 lip corner depressor" in both
    assert "sadness" in emotion_only.removeprefix(prompts.question())
    assert "AU1" not in emotion_only.removeprefix(prompts.question())
    assert "AU1 inner brow raiser" in aus_only
    assert "sadness" not in aus_only.removeprefix(prompts.question())
    assert "none" in prompts.guided("neutral", [])  # [] is a label: no active AU
    assert prompts.guided(None, None) == prompts.question()


def test_the_reference_set_carries_the_reference_content():
    question = REFERENCE.question(("anger", "sadness"), own="What does this face feel?")
    assert "What does this face feel?" in question  # the record's own question
    assert all(f"- AU{number}: {unit.name}" in question for number, unit in AU_CATALOGUE.items())
    assert len(AU_CATALOGUE) == 30
    assert "(AU4)" in question  # AU numbers in parentheses
    assert '"maybe"' in question  # no hedged or negated AU claims
    assert question.count("<answer>") >= 2  # the format rule and one worked example
    assert "anger, sadness" in question
    assert "happiness" not in question.split("## Action units")[0]  # only the offered choices
    assert len(REFERENCE.question()) > 1.5 * len(CONCISE.question())
    guided = REFERENCE.guided("anger", [4])
    assert "must be exactly this emotion: anger" in guided  # hints stated as commands
    assert "must name exactly these action units: AU4 brow lowerer" in guided


def test_the_choices_are_the_rows_own_label_space():
    assert label_space_of("affectnet") == EMOTIONS
    assert label_space_of("rafdb") == BASIC_EMOTIONS
    assert label_space_of("raf_au") == LABEL_SPACES["raf_au"]
    assert label_space_of("unknown_source") == BASIC_EMOTIONS
    assert label_space_of("rafdb", "contempt") == EMOTIONS  # a label outside its space is offered
    rafdb = render_question("<image>How does she feel?", REFERENCE, "rafdb", "anger")
    affectnet = render_question("<image>How does she feel?", REFERENCE, "affectnet", "anger")
    assert "contempt" not in rafdb
    assert "contempt" in affectnet


@pytest.mark.parametrize("spelling", ["RAF-DB", "raf_db", "RafDB", "AffectNet", "CK+", "RAF-AU", "raf_au", "FER2013"])
def test_every_source_spelling_the_converter_accepts_has_its_label_space(spelling: str):
    assert label_space_of(spelling) == source_label_space(spelling) == LABEL_SPACES[source_key(spelling)]
    assert label_space_of(source_key(spelling)) == label_space_of(spelling)  # the converter's `dataset` column


@pytest.mark.parametrize("converter_set", ["concise", "reference"])
@pytest.mark.parametrize("mode", QUESTION_MODES)
def test_every_converter_question_form_is_rendered_with_the_records_question_once(mode: str, converter_set: str):
    own = "Look at this person: which basic emotion is on the face?"
    context = fea20k._Context(Path("."), {}, None, PROMPT_SETS[converter_set], mode, frozenset())
    space = source_label_space("RAF-DB")
    stored = "<image>" + fea20k._question({"question": own}, space, context)
    rendered = render_question(stored, REFERENCE, "rafdb", "sadness")
    assert rendered.count(own) == (0 if mode == "fea" else 1)  # `fea` writes the plain FEA question
    assert CONCISE.question(space) not in rendered
    assert "You are an expert in facial expression analysis" not in rendered
    assert rendered == "<image>" + REFERENCE.question(space, None if mode == "fea" else own)
    assert render_question(rendered, REFERENCE, "rafdb", "sadness") == rendered  # idempotent


def test_rendering_keeps_own_questions_and_replaces_shipped_renderings():
    stored = "<image>" + CONCISE.question()
    reference = render_question(stored, REFERENCE, "fea20k", None)
    assert reference == "<image>" + REFERENCE.question(BASIC_EMOTIONS)
    assert render_question(reference, CONCISE, "fea20k", None) == stored  # and back
    assert render_question(reference, REFERENCE, "fea20k", None) == reference  # idempotent
    own = render_question("<image>Is she happy?", REFERENCE, "fea20k", None)
    assert "## Task\nIs she happy?\n" in own
    assert own_question(own.removeprefix("<image>")) == "Is she happy?"
    assert render_question(own, CONCISE, "fea20k", None) == "<image>Is she happy?"


def test_render_prompt_touches_the_first_user_turn_only():
    output = {
        "_prompt": [{"role": "user", "content": "<image>" + CONCISE.question()}],
        "_response": [{"role": "assistant", "content": "<think>(AU4)</think><answer>anger</answer>"}],
    }
    rendered = render_prompt(output, {"dataset": "affectnet", "emotion": "anger", "aus": [4]}, REFERENCE)
    assert rendered["_prompt"][0]["content"] == "<image>" + REFERENCE.question(EMOTIONS)
    assert rendered["_response"] == output["_response"]
    assert output["_prompt"][0]["content"] == "<image>" + CONCISE.question()  # the input is left as it was


def test_a_json_file_of_templates_is_a_prompt_set(tmp_path: Path):
    placeholders = load_prompt_set(str(EXAMPLES / "prompts_reference_placeholders.json"))
    assert "### Ground Truth" in placeholders.guided("anger", [4])
    assert placeholders.retry_template == REFERENCE.retry_template  # the rest from `base`
    custom = tmp_path / "prompts.json"
    custom.write_text(json.dumps({"question_template": "Q: {question} [{emotions}]", "base": "concise"}))
    prompts = load_prompt_set(str(custom))
    assert prompts.question(("anger",), own="Why?") == "Q: Why? [anger]"
    stored = "<image>" + prompts.question(BASIC_EMOTIONS, own="Why?")
    expected = "<image>" + prompts.question(EMOTIONS, own="Why?")
    assert render_question(stored, prompts, "affectnet", None) == expected  # its own renderings are recognised too
    for bad, message in (({"questions": "x"}, "unknown prompt keys"), ({"base": "long"}, "unknown base set")):
        custom.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            load_prompt_set(str(custom))

    with pytest.raises(ValueError, match="Unknown prompt set 'verbose'"):
        load_prompt_set("verbose")


def sft_config(tiny_model: Path, tmp_path: Path) -> dict:
    r"""An SFT run on two demo rows, as LLaMA-Factory parses it (no model loaded)."""
    return {
        "stage": "sft",
        "model_name_or_path": str(tiny_model),
        "dataset": "fea_demo",
        "dataset_dir": str(DATA_REGISTRY),
        "template": "qwen2_vl",
        "output_dir": str(tmp_path / "out"),
        "do_train": True,
        "max_samples": 2,
        "overwrite_cache": True,
        "report_to": "none",
    }


def test_sft_data_is_rendered_when_llamafactory_loads_it(tiny_model: Path, tmp_path: Path):
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.data.converter import DATASET_CONVERTERS, SharegptDatasetConverter
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    from llamafactory_fea.train.plugin import split_extension_args

    config = {**sft_config(tiny_model, tmp_path), "fea_prompt_set": "reference"}
    extensions, rest = split_extension_args(config)
    assert [extension.name for extension, _ in extensions] == ["prompt_set"]
    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(rest)
    ((extension, extension_args),) = extensions
    extension.load_callbacks()(extension_args, model_args, data_args, training_args, finetuning_args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    with extension.load_run_context()(extension_args):  # what the seam holds for the run
        assert DATASET_CONVERTERS["sharegpt"] is not SharegptDatasetConverter
        splits = get_dataset(template, model_args, data_args, training_args, "sft", **tokenizer_module)

    assert DATASET_CONVERTERS["sharegpt"] is SharegptDatasetConverter  # stock again after the run
    text = tokenizer_module["tokenizer"].decode(splits["train_dataset"][0]["input_ids"])
    assert "## Action units" in text
    assert "You are an expert in facial expression analysis" not in text


def test_grpo_and_synthesis_rows_are_rendered_by_the_label_converters(tiny_model: Path, tmp_path: Path):
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import get_train_args

    from llamafactory_fea.train.labelled_data import decode_labels, load_labelled_dataset
    from llamafactory_fea.train.prompt_set import use_prompt_set

    model_args, data_args, training_args, _, _ = get_train_args(sft_config(tiny_model, tmp_path))
    (attr,) = get_dataset_list(["fea_demo"], str(DATA_REGISTRY))
    stored = load_labelled_dataset("fea_demo", attr, model_args, data_args, training_args, "test")[0]
    use_prompt_set(data_args, "reference")  # what the grpo stage does with its `fea_prompt_set`
    rendered = load_labelled_dataset("fea_demo", attr, model_args, data_args, training_args, "test")[0]
    assert stored["_prompt"][0]["content"] == "<image>" + CONCISE.question()
    space = label_space_of(decode_labels(rendered)["dataset"], decode_labels(rendered)["emotion"])
    assert rendered["_prompt"][0]["content"] == "<image>" + REFERENCE.question(space)
    assert decode_labels(rendered) == decode_labels(stored)  # the labels travel unchanged
