r"""GRPO stage pieces: GRPOConfig from LLaMA-Factory's arguments, rollouts without vision tokens, clipping, logging."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from llamafactory_fea.rewards import fea_emotion, fea_format
from llamafactory_fea.seam import use_grpo_log_callback
from llamafactory_fea.train.grpo.args import GRPOArguments
from llamafactory_fea.train.grpo.rollout import check_vllm, generation_kwargs, vision_tokens
from llamafactory_fea.train.grpo.trainer import clip_reward_sums, fea_metrics
from llamafactory_fea.train.grpo.workflow import build_grpo_config, load_reward_funcs

from .conftest import DATA_REGISTRY


QWEN_VISION_TOKENS = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def train_args(tiny_model: Path, tmp_path: Path, **overrides):
    from llamafactory.hparams import get_train_args

    args = dict(
        stage="sft",
        model_name_or_path=str(tiny_model),
        dataset="fea_demo",
        dataset_dir=str(DATA_REGISTRY),
        template="qwen2_vl",
        output_dir=str(tmp_path / "out"),
        do_train=True,
        report_to="none",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=3e-5,
    )
    return get_train_args({**args, **overrides})


def test_grpo_config_carries_llamafactory_and_grpo_keys(tiny_model: Path, tmp_path: Path):
    model_args, _, training_args, finetuning_args, _ = train_args(tiny_model, tmp_path, disable_shuffling=True)
    grpo_args = GRPOArguments(num_generations=4, beta=0.0, temperature=0.7, loss_type="dapo")
    config = build_grpo_config(None, model_args, training_args, finetuning_args, grpo_args, {"suppress_tokens": [5]})
    assert (config.learning_rate, config.per_device_train_batch_size, config.gradient_accumulation_steps) == (
        3e-5,
        2,
        2,
    )
    assert config.output_dir == training_args.output_dir
    assert (config.num_generations, config.beta, config.temperature, config.loss_type) == (4, 0.0, 0.7, "dapo")
    assert config.remove_unused_columns is False
    assert config.shuffle_dataset is False
    assert config.generation_kwargs == {"suppress_tokens": [5]}
    assert config.generation_batch_size == 4
    assert config.steps_per_generation == 2
    assert config.model_init_kwargs is None


def test_every_grpo_key_trl_knows_reaches_grpo_config(tiny_model: Path, tmp_path: Path):
    from dataclasses import fields

    from trl import GRPOConfig

    own = {f.name for f in fields(GRPOArguments)} - {f.name for f in fields(GRPOConfig)}
    assert own == {"reward_funcs", "reward_clip", "au_frequency_weighting", "suppress_vision_tokens"}  # the README's
    model_args, _, training_args, finetuning_args, _ = train_args(tiny_model, tmp_path)
    grpo_args = GRPOArguments(
        num_generations=4,
        reward_weights="1,2,3",
        top_k=5,
        epsilon_high=0.28,
        scale_rewards="batch",
        importance_sampling_level="sequence",
        mask_truncated_completions=True,
        log_completions=True,
    )
    config = build_grpo_config(None, model_args, training_args, finetuning_args, grpo_args, None)
    for key in (
        "reward_weights",
        "top_k",
        "epsilon_high",
        "scale_rewards",
        "importance_sampling_level",
        "mask_truncated_completions",
        "log_completions",
    ):
        assert getattr(config, key) == getattr(grpo_args, key), key


def test_reference_model_dtype_for_full_tuning(tiny_model: Path, tmp_path: Path):
    model_args, _, training_args, finetuning_args, _ = train_args(tiny_model, tmp_path, finetuning_type="full")
    config = build_grpo_config(
        None, model_args, training_args, finetuning_args, GRPOArguments(num_generations=4), None
    )
    assert config.model_init_kwargs["dtype"] == model_args.compute_dtype


def test_batch_must_hold_whole_groups(tiny_model: Path, tmp_path: Path):
    model_args, _, training_args, finetuning_args, _ = train_args(tiny_model, tmp_path)
    with pytest.raises(ValueError, match=r"\(4 completions\).*`num_generations` \(8\)"):
        build_grpo_config(None, model_args, training_args, finetuning_args, GRPOArguments(), None)


def test_vision_tokens_are_suppressed_in_generate_and_banned_in_vllm(tokenizer):
    assert vision_tokens(tokenizer) == QWEN_VISION_TOKENS
    ids = tokenizer.convert_tokens_to_ids(QWEN_VISION_TOKENS)
    assert generation_kwargs(GRPOArguments(), tokenizer) == {"suppress_tokens": ids}
    assert generation_kwargs(GRPOArguments(use_vllm=True), tokenizer) == {"bad_words": QWEN_VISION_TOKENS}
    assert generation_kwargs(GRPOArguments(suppress_vision_tokens=False), tokenizer) is None
    custom = generation_kwargs(GRPOArguments(generation_kwargs={"min_new_tokens": 3}), tokenizer)
    assert custom == {"suppress_tokens": ids, "min_new_tokens": 3}


def test_suppression_holds_even_when_the_model_prefers_vision_tokens(tiny_model: Path, tokenizer):
    from transformers import AutoModelForImageTextToText, GenerationConfig

    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    ids = tokenizer.convert_tokens_to_ids(QWEN_VISION_TOKENS)
    prompt = tokenizer(
        "<|im_start|>user\nHow does this face look?<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt"
    )
    bias = {(token,): 50.0 for token in ids}  # make the random model want nothing but vision tokens
    common = dict(max_new_tokens=12, do_sample=True, sequence_bias=bias, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    plain = model.generate(**prompt, generation_config=GenerationConfig(**common))
    assert set(plain[0, prompt.input_ids.shape[1] :].tolist()) <= set(ids)
    kwargs = generation_kwargs(GRPOArguments(), tokenizer)
    suppressed = model.generate(**prompt, generation_config=GenerationConfig(**common, **kwargs))
    assert not set(suppressed[0, prompt.input_ids.shape[1] :].tolist()) & set(ids)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_use_vllm_without_vllm_says_how_to_fix_it():
    with pytest.raises(ImportError, match=r"`use_vllm: true` needs vLLM 0\.10\.2"):
        check_vllm(GRPOArguments(use_vllm=True))

    check_vllm(GRPOArguments())


def test_reward_sums_are_clipped_like_the_reference():
    rewards = torch.tensor([[10.0, 10.0, float("nan")], [0.5, -0.5, 1.0], [-30.0, 0.0, 0.0]])
    weights = torch.tensor([1.0, 0.5, 2.0])
    clipped, mask = clip_reward_sums(rewards, weights, 10.0)
    sums = (clipped * weights).nansum(dim=1)
    assert sums.tolist() == pytest.approx([10.0, 2.25, -10.0])
    assert mask.tolist() == [True, False, True]
    assert math.isnan(clipped[0, 2].item())


def test_fea_metrics_ignore_the_reward_choice():
    good = "<think>Brows lowered and pulled together (AU4), lip corners down (AU15).</think><answer>sadness</answer>"
    rows = fea_metrics([good, "<answer>anger</answer>"], ["sadness", None], [[4, 15], []])
    assert rows[0] == [1.0, 1.0, 1.0, 1.0]
    assert rows[1][:2] == [0.0, 0.0]
    assert math.isnan(rows[1][2])
    assert math.isnan(rows[1][3])


def test_weighted_rewards_keep_their_names():
    funcs = load_reward_funcs(GRPOArguments(au_frequency_weighting="balanced"))
    assert [func.__name__ for func in funcs] == ["fea_format", "fea_emotion", "fea_au_f1"]
    assert funcs[0](["x"], au_weight=[2.0]) == fea_format(["x"])
    assert load_reward_funcs(GRPOArguments())[1] is fea_emotion


def test_log_callback_writes_every_metric_to_trainer_log(tmp_path: Path):
    from llamafactory.train.callbacks import LogCallback
    from transformers import TrainerControl, TrainerState, TrainingArguments

    callback = LogCallback()
    use_grpo_log_callback([callback])
    assert type(callback).__name__ == "GRPOLogCallback"
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    state, control = TrainerState(max_steps=2), TrainerControl()
    callback.on_train_begin(args, state, control)
    for step in (1, 2):
        state.global_step = step
        state.log_history.append({"loss": 0.5, "rewards/fea_emotion/mean": step / 4, "kl": 0.01, "step": step})
        callback.on_log(args, state, control)

    callback.on_train_end(args, state, control)
    logs = [json.loads(line) for line in (tmp_path / "trainer_log.jsonl").read_text().splitlines()]
    assert [(log["current_steps"], log["rewards/fea_emotion/mean"], log["kl"]) for log in logs] == [
        (1, 0.25, 0.01),
        (2, 0.5, 0.01),
    ]
    assert all(log["loss"] == 0.5 and "percentage" in log for log in logs)
