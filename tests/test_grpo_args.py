r"""The `grpo` stage's YAML keys: parsing, validation with the key named, and the documentation of every key."""

import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from transformers import HfArgumentParser

from llamafactory_fea.hparams import ArgumentError
from llamafactory_fea.train.grpo.args import GRPOArguments

from .conftest import EXAMPLES, ROOT


README = ROOT / "llamafactory_fea" / "train" / "grpo" / "README.md"


def test_defaults_are_the_reference_settings():
    args = GRPOArguments()
    assert args.reward_funcs == ["fea_format", "fea_emotion", "fea_au_f1"]
    assert args.reward_weights is None
    assert (args.num_generations, args.max_completion_length, args.beta) == (8, 256, 0.04)
    assert (args.loss_type, args.scale_rewards, args.reward_clip) == ("grpo", "group", 10.0)
    assert args.suppress_vision_tokens
    assert not args.use_vllm
    assert args.reward_nonfinite == "error"


def test_lists_numbers_and_booleans_are_coerced():
    args = GRPOArguments(
        reward_funcs=" fea_format , fea_strict_emotion,",
        reward_weights="1, 0.5",
        num_generations="4",
        temperature="0.7",
        top_k=0,
        scale_rewards=False,
        use_vllm="false",
        generation_kwargs='{"min_new_tokens": 2}',
        reward_clip=None,
        loss_type="DAPO",
    )
    assert args.reward_funcs == ["fea_format", "fea_strict_emotion"]
    assert args.reward_weights == [1.0, 0.5]
    assert (args.num_generations, args.temperature, args.top_k) == (4, 0.7, None)
    assert (args.scale_rewards, args.use_vllm, args.loss_type) == ("none", False, "dapo")
    assert args.generation_kwargs == {"min_new_tokens": 2}
    assert args.reward_clip is None
    assert GRPOArguments(reward_funcs=["fea_format"], reward_weights=[2]).reward_weights == [2.0]


BAD_VALUES = [
    ("policy_loss", "summed"),
    ("think_span_rewards", "fea_au_f2"),
    ("fea_prompt_set", "verbose"),
    ("fea_prompt_set", "missing/prompts.json"),
    ("reward_funcs", ""),
    ("reward_funcs", 3),
    ("reward_weights", "1,x,2"),
    ("reward_clip", 0),
    ("reward_nonfinite", "ignore"),
    ("au_frequency_weighting", "inverse"),
    ("num_generations", 1),
    ("num_generations", "abc"),
    ("num_generations", 2.5),
    ("num_generations", True),
    ("generation_batch_size", 0),
    ("max_completion_length", 0),
    ("max_prompt_length", -3),
    ("temperature", 0),
    ("temperature", "hot"),
    ("top_p", 1.5),
    ("top_p", 0.0),
    ("top_k", -1),
    ("repetition_penalty", 0),
    ("beta", -0.1),
    ("beta", float("nan")),
    ("epsilon", 0),
    ("epsilon_high", -1),
    ("num_iterations", 0),
    ("loss_type", "ppo"),
    ("scale_rewards", "std"),
    ("importance_sampling_level", "word"),
    ("mask_truncated_completions", "maybe"),
    ("suppress_vision_tokens", 2),
    ("generation_kwargs", "{not json"),
    ("generation_kwargs", "[1, 2]"),
    ("use_vllm", "sometimes"),
    ("vllm_mode", "remote"),
    ("vllm_gpu_memory_utilization", 1.2),
    ("vllm_tensor_parallel_size", 0),
    ("vllm_enable_sleep_mode", "x"),
    ("ds3_gather_for_generation", "x"),
    ("log_completions", "x"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_values_are_refused_with_the_key_named(key: str, value):
    with pytest.raises(ArgumentError, match=f"`{key}`"):
        GRPOArguments(**{key: value})


def test_every_key_has_a_bad_value_case():
    checked = {key for key, _ in BAD_VALUES}
    assert {f.name for f in fields(GRPOArguments)} - checked == {"vllm_server_base_url"}


NOT_A_REWARD = 42  # `tests.test_grpo_args.NOT_A_REWARD`: importable, not callable


@pytest.mark.parametrize(
    ("reward_funcs", "message"),
    [
        ("fea_format,fea_emotoin", "Unknown reward 'fea_emotoin'"),
        ("fea_format,no_such_package.rewards.mine", "Cannot import the reward 'no_such_package.rewards.mine'"),
        ("llamafactory_fea.rewards.no_such_reward", "Cannot import the reward"),
        ("tests.test_grpo_args.NOT_A_REWARD", "'tests.test_grpo_args.NOT_A_REWARD' is not a function"),
        ("fea_format,fea_emotion,fea_format", "fea_format twice"),
        ("fea_au_f1,llamafactory_fea.rewards.fea_au_f1", "fea_au_f1 twice"),
    ],
)
def test_rewards_are_resolved_when_the_keys_are_parsed(reward_funcs: str, message: str):
    with pytest.raises(ArgumentError, match=rf"grpo key `reward_funcs`: .*{re.escape(message)}"):
        GRPOArguments(reward_funcs=reward_funcs)


def test_cross_key_checks():
    with pytest.raises(ArgumentError, match="`reward_weights` has 2 values for 3"):
        GRPOArguments(reward_weights="1,1")
    with pytest.raises(ArgumentError, match="`generation_batch_size`"):
        GRPOArguments(num_generations=4, generation_batch_size=6)
    with pytest.raises(ArgumentError, match="`ds3_gather_for_generation"):
        GRPOArguments(use_vllm=True, ds3_gather_for_generation=False)


def test_reward_help_lists_the_registry_and_choices_are_literal_types():
    from typing import Literal, get_args, get_origin

    from llamafactory_fea.rewards import REWARDS

    by_name = {item.name: item for item in fields(GRPOArguments)}
    assert all(name in by_name["reward_funcs"].metadata["help"] for name in REWARDS)
    assert get_origin(by_name["loss_type"].type) is Literal
    assert get_args(by_name["scale_rewards"].type) == ("group", "batch", "none")
    assert GRPOArguments(scale_rewards=True).scale_rewards == "group"  # TRL's true/false spelling
    with pytest.raises(SystemExit):  # argparse refuses a value outside the Literal on the command line
        HfArgumentParser(GRPOArguments).parse_args_into_dataclasses(args=["--loss_type", "ppo"])


def test_hf_argument_parser_reads_the_dataclass_from_a_dict_and_a_command_line():
    parser = HfArgumentParser(GRPOArguments)
    (from_dict,) = parser.parse_dict({"num_generations": 4, "reward_funcs": ["fea_format"]})
    assert from_dict.num_generations == 4
    assert from_dict.reward_funcs == ["fea_format"]
    from_cli, rest = parser.parse_args_into_dataclasses(
        args=["--num_generations", "6", "--beta", "0", "--use_vllm", "false", "--stage", "grpo"],
        return_remaining_strings=True,
    )
    assert (from_cli.num_generations, from_cli.beta, from_cli.use_vllm) == (6, 0.0, False)
    assert rest == ["--stage", "grpo"]


def test_every_key_is_documented_with_help_in_the_readme_and_the_example():
    readme = README.read_text(encoding="utf-8")
    example = yaml.safe_load((EXAMPLES / "fea_grpo.yaml").read_text(encoding="utf-8"))
    for item in fields(GRPOArguments):
        assert item.metadata.get("help"), item.name
        assert f"{item.name}:" in readme, item.name
        assert item.name in example, item.name


@pytest.mark.parametrize("name", ["fea_grpo.yaml", "fea_grpo_full_zero3.yaml"])
def test_example_yaml_parses_into_grpo_and_llamafactory_arguments(name: str):
    from llamafactory.hparams.parser import _TRAIN_ARGS

    config = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    assert config["stage"] == "grpo"
    grpo_keys = {f.name for f in fields(GRPOArguments)}
    (grpo_args,) = HfArgumentParser(GRPOArguments).parse_dict({k: v for k, v in config.items() if k in grpo_keys})
    assert grpo_args.reward_funcs
    known = {f.name for cls in _TRAIN_ARGS for f in fields(cls)}
    assert set(config) - grpo_keys - known == set()
    deepspeed = config.get("deepspeed")
    if deepspeed:
        assert (ROOT / deepspeed).is_file()


def test_deepspeed_configs_are_valid_json():
    import json

    for stage in (2, 3):
        config = json.loads(Path(EXAMPLES / "deepspeed" / f"ds_z{stage}_config.json").read_text(encoding="utf-8"))
        assert config["zero_optimization"]["stage"] == stage
        assert config["train_micro_batch_size_per_gpu"] == "auto"


def test_old_au_weighting_names_still_work_with_a_future_warning():
    with pytest.warns(FutureWarning, match="reference is now called reward_minmax"):
        assert GRPOArguments(au_frequency_weighting="reference").au_frequency_weighting == "reward_minmax"

    with pytest.warns(FutureWarning, match="balanced is now called reward_mean_one"):
        assert GRPOArguments(au_frequency_weighting="balanced").au_frequency_weighting == "reward_mean_one"


def test_the_reference_loss_refuses_dapo_and_names_the_think_span_terms():
    from llamafactory_fea.train.grpo.workflow import think_span_terms

    with pytest.raises(ArgumentError, match="`policy_loss: per_reward`"):
        GRPOArguments(policy_loss="per_reward", loss_type="dapo")

    args = GRPOArguments(reward_funcs="fea_format,fea_au_f1,fea_emotion", policy_loss="per_reward")
    assert think_span_terms(args) == [False, True, False]
    assert think_span_terms(GRPOArguments()) is None
