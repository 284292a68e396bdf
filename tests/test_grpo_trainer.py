r"""GRPO stage pieces: GRPOConfig from LLaMA-Factory's arguments, rollouts without vision tokens, clipping, logging."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from llamafactory_fea.rewards import fea_format
from llamafactory_fea.seam import use_grpo_log_callback
from llamafactory_fea.train.grpo.args import GRPOArguments
from llamafactory_fea.train.grpo.rollout import check_vllm, generation_kwargs, vision_tokens
from llamafactory_fea.train.grpo.trainer import RewardChecks, clip_reward_sums, fea_metrics
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
    config = build_grpo_config(model_args, training_args, finetuning_args, grpo_args, {"suppress_tokens": [5]})
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
    assert own == {  # the README's
        "reward_funcs",
        "reward_clip",
        "reward_nonfinite",
        "au_frequency_weighting",
        "policy_loss",
        "think_span_rewards",
        "fea_prompt_set",
        "suppress_vision_tokens",
    }
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
    config = build_grpo_config(model_args, training_args, finetuning_args, grpo_args, None)
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
    config = build_grpo_config(model_args, training_args, finetuning_args, GRPOArguments(num_generations=4), None)
    assert config.model_init_kwargs["dtype"] == model_args.compute_dtype


@pytest.mark.parametrize("trust", [False, True])
def test_reference_model_honours_trust_remote_code(tiny_model: Path, tmp_path: Path, trust: bool):
    model_args, _, training_args, finetuning_args, _ = train_args(
        tiny_model, tmp_path, finetuning_type="freeze", trust_remote_code=trust
    )
    config = build_grpo_config(model_args, training_args, finetuning_args, GRPOArguments(num_generations=4), None)
    assert config.model_init_kwargs["trust_remote_code"] is trust


def test_batch_must_hold_whole_groups(tiny_model: Path, tmp_path: Path):
    model_args, _, training_args, finetuning_args, _ = train_args(tiny_model, tmp_path)
    with pytest.raises(ValueError, match=r"\(4 completions\).*`num_generations` \(8\)"):
        build_grpo_config(model_args, training_args, finetuning_args, GRPOArguments(), None)


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


def test_checked_and_weighted_rewards_keep_their_names():
    funcs = load_reward_funcs(GRPOArguments(au_frequency_weighting="balanced"), RewardChecks())
    assert [func.__name__ for func in funcs] == ["fea_format", "fea_emotion", "fea_au_f1"]
    assert funcs[0](["x"], au_weight=[2.0]) == fea_format(["x"])
    checked = load_reward_funcs(GRPOArguments(), RewardChecks())[1]
    assert checked.__name__ == "fea_emotion"
    assert checked(completions=["<answer>sadness</answer>"], emotion=["sadness"]) == [1.0]


def test_batch_sizes_are_checked_before_the_dataset_and_the_model_load(tiny_model: Path, tmp_path: Path, monkeypatch):
    from llamafactory_fea.train.grpo import workflow

    def too_late(*args, **kwargs):
        raise AssertionError("loaded before the batch sizes were checked")

    monkeypatch.setattr(workflow, "get_grpo_dataset", too_late)
    monkeypatch.setattr(workflow, "load_model", too_late)
    model_args, data_args, training_args, finetuning_args, generating_args = train_args(tiny_model, tmp_path)
    for grpo_args, message in [
        (GRPOArguments(), r"\(4 completions\).*`num_generations` \(8\)"),
        (GRPOArguments(num_generations=3, generation_batch_size=3), r"generation_batch_size \(3\) must be divisible"),
    ]:
        with pytest.raises(ValueError, match=message):
            workflow.run_grpo(model_args, data_args, training_args, finetuning_args, generating_args, grpo_args)


def user_reward(completions, **kwargs):
    r"""Stands for a user's reward; each test sets what it returns (`user_reward.output`) or raises."""
    if isinstance(user_reward.output, Exception):
        raise user_reward.output

    return user_reward.output


BATCH = ["<think>Brows down (AU4).</think><answer>anger</answer>", "<answer>sadness</answer>" + "x" * 500]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (
            ZeroDivisionError("division by zero"),
            r"Reward tests\.test_grpo_trainer\.user_reward raised ZeroDivisionError: division by zero on a "
            r"batch of 2 completions \(the first: '<think>Brows down",
        ),
        (
            [1.0],
            r"Reward tests\.test_grpo_trainer\.user_reward returned 1 values for a batch of 2 completions.*First completion: '<think>",
        ),
        ([1.0, 0.0, 1.0], "returned 3 values for a batch of 2 completions"),
        (0.5, "returned a float, not a list of 2 values"),
        ({"a": 1.0, "b": 2.0}, "returned a dict, not a list of 2 values"),
        (
            [1.0, "high"],
            r"returned 'high' \(str\) for completion 1 of a batch of 2, not a number or None: '<answer>sad",
        ),
        ([1.0, [0.5]], r"returned \[0.5\] \(list\) for completion 1"),
        ([float("nan"), 1.0], r"returned nan for completion 0 of a batch of 2: '<think>.*`reward_nonfinite: skip`"),
        ([1.0, float("-inf")], r"returned -inf for completion 1 .*x{100}"),
        ([1.0, 1e39], r"returned 1e\+39 for completion 1"),  # inf once TRL makes it float32
    ],
)
def test_a_misbehaving_reward_is_named_with_the_batch_and_the_completion(monkeypatch, output, message):
    monkeypatch.setattr(user_reward, "output", output, raising=False)
    checked = RewardChecks().wrap(user_reward, "tests.test_grpo_trainer.user_reward")
    with pytest.raises(ValueError, match=message):
        checked(prompts=["p", "p"], completions=BATCH, trainer_state=None)


def test_well_behaved_outputs_pass_and_nonfinite_values_can_be_skipped(monkeypatch):
    import numpy as np

    checks = RewardChecks()
    for output in ([1, None], (0.5, True), np.array([0.25, 1.0]), torch.tensor([0.5, -1.0]), [np.float32(0.5), None]):
        monkeypatch.setattr(user_reward, "output", output, raising=False)
        values = checks.wrap(user_reward, "user_reward")(completions=BATCH)
        assert len(values) == 2
        assert all(value is None or type(value) is float for value in values)

    skipping = RewardChecks("skip")
    monkeypatch.setattr(user_reward, "output", [float("nan"), float("inf")], raising=False)
    assert skipping.wrap(user_reward, "user_reward")(completions=BATCH) == [None, None]
    monkeypatch.setattr(user_reward, "output", [1e39, 0.5], raising=False)
    assert skipping.wrap(user_reward, "user_reward")(completions=BATCH) == [None, 0.5]
    assert skipping.skipped == 3


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


def test_the_trainer_logs_skipped_rewards_and_no_nan_reaches_the_advantages(tiny_model: Path, tmp_path: Path):
    from datasets import Dataset
    from llamafactory.hparams import FinetuningArguments
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from trl import GRPOConfig

    from llamafactory_fea.train.grpo.trainer import CustomGRPOTrainer

    def broken(completions, **kwargs):
        return [float("nan"), float("inf"), 1.0, float("nan")]

    checks = RewardChecks("skip")
    config = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, report_to="none", use_cpu=True
    )
    trainer = CustomGRPOTrainer(
        model=AutoModelForImageTextToText.from_pretrained(tiny_model),
        reward_funcs=[checks.wrap(broken, "broken"), checks.wrap(fea_format, "fea_format")],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        finetuning_args=FinetuningArguments(),
        reward_clip=10.0,
        reward_checks=checks,
    )
    assert trainer.reward_func_names == ["broken", "fea_format"]
    trainer.model.train()
    completions = ["<think>x</think><answer>anger</answer>", "anger", "anger", "anger"]
    inputs = [{"prompt": "a", "emotion": "anger", "aus": [4]}] * 4
    rewards = trainer._calculate_rewards(inputs, ["a"] * 4, completions, [[1]] * 4)
    assert not torch.isinf(rewards).any()
    assert torch.isfinite((rewards * trainer.reward_weights).nansum(dim=1)).all()
    assert rewards[:, 0].isnan().tolist() == [True, True, False, True]  # left out of the sum, as None is
    assert rewards[:, 1].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert trainer._metrics["train"]["fea/skipped_rewards"] == [3]
    trainer._calculate_rewards(inputs, ["a"] * 4, completions, [[1]] * 4)
    assert trainer._metrics["train"]["fea/skipped_rewards"] == [3, 3]  # a count per step, not a running total

    trainer.reward_funcs[0] = checks.wrap(lambda completions, **kwargs: [1.0] * 3, "tests.short")
    with pytest.raises(ValueError, match="Reward tests.short returned 3 values for a batch of 4 completions"):
        trainer._calculate_rewards(inputs, ["a"] * 4, completions, [[1]] * 4)


THINK = "The brows are lowered (AU4) and pressed (AU24)."


def loss_trainer(tiny_model: Path, tmp_path: Path, beta: float, **kwargs):
    r"""A CustomGRPOTrainer on the tiny model with two rewards (an AU reward first), ready for `_compute_loss`."""
    from datasets import Dataset
    from llamafactory.hparams import FinetuningArguments
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from trl import GRPOConfig

    from llamafactory_fea.rewards import fea_au_f1
    from llamafactory_fea.train.grpo.trainer import CustomGRPOTrainer

    torch.manual_seed(0)
    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=2,
        report_to="none",
        use_cpu=True,
        beta=beta,
        loss_type="grpo",
    )
    trainer = CustomGRPOTrainer(
        model=AutoModelForImageTextToText.from_pretrained(tiny_model),
        reward_funcs=[fea_au_f1, fea_format],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}),
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
        finetuning_args=FinetuningArguments(),
        **kwargs,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def loss_inputs(tokenizer, completions: list[str]) -> dict:
    r"""TRL's per-step inputs for text completions (right-padded, EOS-free) with fixed advantages."""
    prompt = tokenizer("Which emotion?", return_tensors="pt")["input_ids"].repeat(len(completions), 1)
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in completions]
    width = max(map(len, encoded))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in encoded])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in encoded])
    return {
        "prompt_ids": prompt,
        "prompt_mask": torch.ones_like(prompt),
        "completion_ids": ids,
        "completion_mask": mask,
        "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5])[: len(completions)],
        "num_items_in_batch": mask.sum(),
    }


COMPLETIONS = [
    f"<think>{THINK}</think><answer>anger</answer>",
    "<answer>anger</answer>",  # no <think>: the AU term has no tokens in this row
    f"<think>{THINK} Anger.</think><answer>anger</answer>",
    "<think>unclosed",
]


def test_think_mask_covers_exactly_the_think_span(tokenizer):
    from llamafactory_fea.train.grpo.trainer import think_span_mask

    inputs = loss_inputs(tokenizer, COMPLETIONS)
    mask = think_span_mask(inputs["completion_ids"], inputs["completion_mask"], tokenizer)
    for row, text in enumerate(COMPLETIONS):
        ids = inputs["completion_ids"][row]
        inside = tokenizer.decode(ids[mask[row].bool()])
        if "</think>" not in text:
            assert not mask[row].any()
            continue

        interior = text[len("<think>") : text.index("</think>")]
        start = inside.index(interior)  # every inner character is covered ...
        head, tail = inside[:start], inside[start + len(interior) :]
        assert "<think>".endswith(head)  # ... and at most parts of the tags
        assert "</think>".startswith(tail)
        outside = tokenizer.decode(ids[(1 - mask[row]).bool() & inputs["completion_mask"][row].bool()])
        assert "answer" in outside
        assert not any(word in outside for word in ("brows", "AU4", "pressed"))


def test_per_reward_loss_without_an_au_term_is_trl_loss_exactly(tiny_model: Path, tmp_path: Path, tokenizer):
    trl = loss_trainer(tiny_model, tmp_path, beta=0.0)
    ours = loss_trainer(tiny_model, tmp_path, beta=0.0, think_span_terms=[False, False])
    inputs = loss_inputs(tokenizer, COMPLETIONS)
    assert torch.equal(trl._compute_loss(trl.model, inputs), ours._compute_loss(ours.model, inputs))


def test_per_reward_loss_matches_a_hand_computation(tiny_model: Path, tmp_path: Path, tokenizer):
    from llamafactory_fea.train.grpo.trainer import LOSS_WEIGHT_KEY, think_span_mask

    beta = 0.04
    trainer = loss_trainer(tiny_model, tmp_path, beta=beta, think_span_terms=[True, False])
    inputs = loss_inputs(tokenizer, COMPLETIONS)
    completion_mask = inputs["completion_mask"].float()
    shift = torch.arange(completion_mask.numel(), dtype=torch.float32).view_as(completion_mask) * 0.01
    with torch.no_grad():
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention, inputs["completion_ids"].size(1)
        )

    inputs["ref_per_token_logps"] = logps + shift
    # by hand: the ratio is 1, so a token's loss is -advantage + beta * (e^shift - shift - 1)
    per_token = -inputs["advantages"].unsqueeze(1) + beta * (shift.exp() - shift - 1)
    think = think_span_mask(inputs["completion_ids"], inputs["completion_mask"], tokenizer).float()
    assert think.sum(1).tolist()[1] == 0  # no <think>
    assert think.sum(1).tolist()[3] == 0  # not closed

    def term(mask):
        return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()

    expected = (term(think) + term(completion_mask)) / 2
    loss = trainer._compute_loss(trainer.model, inputs)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert len(trainer._metrics["train"]["kl"]) == 1  # TRL's metrics once per step, of the all-token term

    loss.backward()  # one graph for both terms
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())

    weighted = loss_trainer(
        tiny_model, tmp_path, beta=beta, think_span_terms=[True, False], loss_weight_column="au_weight"
    )
    inputs[LOSS_WEIGHT_KEY] = torch.tensor([0.0, 2.5, 10.0, 1.5])
    loss = weighted._compute_loss(weighted.model, inputs)
    assert loss.item() == pytest.approx(expected.item() * 14.0, rel=1e-5, abs=1e-6)  # the batch's weight sum


@pytest.mark.e2e
def test_grpo_with_the_reference_loss_weighting_and_prompt_set(tiny_model: Path, tmp_path: Path):
    from .test_grpo_e2e import assert_grpo_metrics_logged, read_records, run_grpo, step_logs

    output_dir, record = tmp_path / "reference", tmp_path / "record.jsonl"
    result = run_grpo(
        tiny_model,
        output_dir,
        record,
        "policy_loss=per_reward",
        "au_frequency_weighting=loss_batch_sum",
        "fea_prompt_set=reference",
        "max_steps=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_records(record)
    logs = step_logs(output_dir)
    assert_grpo_metrics_logged(logs)
    assert all(math.isfinite(log["loss"]) for log in logs)
