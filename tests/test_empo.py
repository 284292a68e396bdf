r"""The `empo` stage: its objective by hand, the same loss as stock `stage: dpo` on response pairs, one e2e run."""

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llamafactory_fea.cli import main
from llamafactory_fea.data.pairs import PAIR_KINDS
from llamafactory_fea.train.empo.args import EMPOArguments
from llamafactory_fea.train.empo.trainer import EMPOTrainer

from .conftest import DATA_REGISTRY, EXAMPLES, python_path, run_cli


WEIGHTS = {"response": 1.0, "instruction": 0.5, "image": 2.0}


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r"""The demo set and its pairs of every kind (`demo_pairs`, `demo_pairs_response`)."""
    root = tmp_path_factory.mktemp("empo_data")
    shutil.copytree(DATA_REGISTRY / "demo", root / "demo")
    shutil.copy(DATA_REGISTRY / "dataset_info.json", root / "dataset_info.json")
    assert main(["data", "pairs", "--dataset", "fea_demo", "--name", "demo_pairs", "--dataset-dir", str(root)]) == 0
    return root


def bare_trainer(beta: float) -> EMPOTrainer:
    r"""An EMPOTrainer holding only what the loss reads (no model): LLaMA-Factory's DPO settings, sigmoid loss."""
    trainer = object.__new__(EMPOTrainer)
    trainer.finetuning_args = SimpleNamespace(use_ref_model=True)
    trainer.accelerator = SimpleNamespace(device=torch.device("cpu"))
    trainer.beta, trainer.loss_type, trainer.label_smoothing, trainer.ftx_gamma, trainer.bco_gemma = (
        beta,
        "sigmoid",
        0,
        0,
        0,
    )
    trainer.f_divergence_type, trainer.reference_free = "reverse_kl", False
    trainer.kind_weights = torch.tensor([WEIGHTS[kind] for kind in PAIR_KINDS])
    trainer._kind_stats = {split: torch.zeros(len(PAIR_KINDS), 4) for split in ("train", "eval")}
    trainer._batch_kinds, trainer._batch_split = None, "train"
    return trainer


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_objective_equals_a_hand_computation(kind: str):
    beta = 0.1
    policy = {"chosen": [-10.0, -20.0], "rejected": [-12.0, -19.0]}
    reference = {"chosen": [-11.0, -20.5], "rejected": [-11.5, -18.0]}
    trainer = bare_trainer(beta)

    def forward(model, batch, is_ref_model=False):
        logps = reference if is_ref_model else policy
        return {
            "chosen_logps": torch.tensor(logps["chosen"]),
            "rejected_logps": torch.tensor(logps["rejected"]),
            "chosen_logits": torch.zeros(2, 3, 5),
            "rejected_logits": torch.zeros(2, 3, 5),
            "chosen_logps_avg": torch.tensor(logps["chosen"]) / 3,
        }

    trainer.concatenated_forward = forward
    trainer.compute_reference_log_probs = lambda model, batch: (
        torch.tensor(reference["chosen"]),
        torch.tensor(reference["rejected"]),
    )
    batch = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "pair_kinds": torch.full((2,), PAIR_KINDS.index(kind))}
    loss, metrics = trainer.get_batch_loss_metrics(None, batch)

    margins = [
        beta * ((pc - rc) - (pr - rr))
        for pc, pr, rc, rr in zip(policy["chosen"], policy["rejected"], reference["chosen"], reference["rejected"])
    ]  # 0.1 * (1 - (-0.5)) = 0.15 and 0.1 * (0.5 - (-1)) = 0.15
    per_pair = [math.log1p(math.exp(-margin)) for margin in margins]  # -log(sigmoid(margin))
    assert loss.item() == pytest.approx(WEIGHTS[kind] * sum(per_pair) / 2, rel=1e-6)
    assert "pair_kinds" not in batch
    assert metrics["rewards/margins"] == pytest.approx(sum(margins) / 2, rel=1e-5)
    stats = trainer._kind_stats["train"][PAIR_KINDS.index(kind)].tolist()
    assert stats == pytest.approx([sum(per_pair), sum(margins), 2.0, 2.0], rel=1e-5)  # unweighted, per kind
    assert trainer._kind_stats["train"].sum().item() == pytest.approx(sum(stats))  # no other kind touched


def test_a_mixed_batch_weighs_each_pair_by_its_kind():
    trainer = bare_trainer(1.0)
    chosen, rejected = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-2.0, -2.0, -1.0])
    trainer._batch_kinds = torch.tensor([0, 1, 2])
    losses, _, _ = trainer.compute_preference_loss(chosen, rejected, torch.zeros(3), torch.zeros(3))
    expected = [w * math.log1p(math.exp(-m)) for w, m in zip(WEIGHTS.values(), (1.0, 0.0, -2.0))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)


def test_weights_are_checked():
    assert EMPOArguments(empo_image_weight=0.5).kind_weights == [1.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="empo_image_weight"):
        EMPOArguments(empo_image_weight=-1.0)


def dpo_args(tiny_model: Path, pairs_dir: Path, dataset: str, output_dir: Path, max_samples: int):
    from llamafactory.hparams import get_train_args

    return get_train_args(
        dict(
            stage="dpo",
            model_name_or_path=str(tiny_model),
            do_train=True,
            finetuning_type="lora",
            lora_target="all",
            pref_beta=0.5,
            dataset=dataset,
            dataset_dir=str(pairs_dir),
            max_samples=max_samples,
            template="qwen2_vl",
            cutoff_len=1024,
            image_max_pixels=12544,
            output_dir=str(output_dir),
            overwrite_output_dir=True,
            per_device_train_batch_size=2,
            seed=7,
            report_to="none",
        )
    )


def test_response_pairs_load_in_stock_dpo_and_give_its_loss(tiny_model: Path, pairs_dir: Path, tmp_path: Path):
    r"""Stock `stage: dpo` reads `<name>_response`; `stage: empo` on it, equal weights, gives the same batches and loss."""
    from llamafactory.data import PairwiseDataCollatorWithPadding, get_dataset, get_template_and_fix_tokenizer
    from llamafactory.extras.constants import IGNORE_INDEX
    from llamafactory.model import load_model, load_tokenizer
    from llamafactory.train.dpo.trainer import CustomDPOTrainer

    from llamafactory_fea.train.empo.data import EMPODataCollator, get_empo_dataset
    from llamafactory_fea.train.empo.workflow import check_empo_args

    model_args, data_args, training_args, finetuning_args, _ = dpo_args(
        tiny_model, pairs_dir, "demo_pairs_response", tmp_path, max_samples=6
    )
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    stock_data = get_dataset(template, model_args, data_args, training_args, stage="rm", **tokenizer_module)
    empo_data = get_empo_dataset(template, model_args, data_args, training_args, **tokenizer_module)
    assert len(stock_data["train_dataset"]) == len(empo_data["train_dataset"]) == 6
    for key in ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "images"):
        assert stock_data["train_dataset"][key] == empo_data["train_dataset"][key]

    check_empo_args(data_args, training_args, finetuning_args)
    model = load_model(tokenizer_module["tokenizer"], model_args, finetuning_args, is_trainable=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter, so that the policy differs from the reference
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))

    losses = []
    collator_kwargs = dict(template=template, model=model, pad_to_multiple_of=8, label_pad_token_id=IGNORE_INDEX)
    for trainer_cls, collator_cls, data, extra in (
        (CustomDPOTrainer, PairwiseDataCollatorWithPadding, stock_data, {}),
        (EMPOTrainer, EMPODataCollator, empo_data, {"kind_weights": [1.0, 1.0, 1.0]}),
    ):
        trainer = trainer_cls(
            model=model,
            ref_model=None,
            args=training_args,
            finetuning_args=finetuning_args,
            data_collator=collator_cls(**collator_kwargs, **tokenizer_module),
            **data,
            **tokenizer_module,
            **extra,
        )
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        with torch.no_grad():
            losses.append(trainer.compute_loss(model, batch).item())

    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert abs(losses[0] - math.log(2)) > 1e-4  # the policy differs from the reference: a real comparison


def test_collator_gives_each_side_its_own_images(tiny_model: Path, pairs_dir: Path, tmp_path: Path):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.model import load_tokenizer

    from llamafactory_fea.train.empo.data import EMPODataCollator, get_empo_dataset

    model_args, data_args, training_args, _, _ = dpo_args(tiny_model, pairs_dir, "demo_pairs", tmp_path, max_samples=9)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    dataset = get_empo_dataset(template, model_args, data_args, training_args, **tokenizer_module)["train_dataset"]
    rows = list(dataset)
    kinds = {row["pair_kind"] for row in rows}
    assert kinds == {0, 1, 2}
    image_row = next(row for row in rows if row["pair_kind"] == 2)
    instruction_row = next(row for row in rows if row["pair_kind"] == 1)
    assert image_row["images"] != image_row["rejected_images"]
    assert instruction_row["chosen_input_ids"] != instruction_row["rejected_input_ids"]
    assert instruction_row["chosen_labels"][-5:] == instruction_row["rejected_labels"][-5:]  # the same response

    collator = EMPODataCollator(template=template, model=None, pad_to_multiple_of=8, **tokenizer_module)
    batch = collator([dict(image_row)])
    assert batch["pair_kinds"].tolist() == [2]
    chosen_pixels, rejected_pixels = batch["pixel_values"].chunk(2)
    assert not torch.equal(chosen_pixels, rejected_pixels)


def test_empo_e2e_all_kinds_adapter_saved_and_reloaded(tiny_model: Path, pairs_dir: Path, tmp_path: Path):
    output_dir = tmp_path / "empo"
    overrides = [
        f"model_name_or_path={tiny_model}",
        "adapter_name_or_path=null",
        "create_new_adapter=false",
        f"dataset_dir={pairs_dir}",
        "dataset=demo_pairs",
        f"output_dir={output_dir}",
        "bf16=false",
        "max_steps=2",
        "logging_steps=1",
        "save_steps=2",
        "learning_rate=0.01",
        "warmup_ratio=0",
        "per_device_train_batch_size=6",
        "gradient_accumulation_steps=1",
        "image_max_pixels=12544",
        "preprocessing_num_workers=1",
        "dataloader_num_workers=0",
        "disable_shuffling=true",
        "empo_image_weight=0.5",
    ]
    env = {"PYTHONPATH": python_path(), "OMP_NUM_THREADS": "1"}
    result = run_cli(["llamafactory-cli", "train", str(EXAMPLES / "fea_empo.yaml"), *overrides], **env)
    assert result.returncode == 0, result.stderr[-3000:]

    logs = [json.loads(line) for line in (output_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [log for log in logs if "loss" in log]
    assert len(steps) == 2
    for kind in PAIR_KINDS:
        assert sum(log.get(f"pairs/{kind}", 0) for log in steps) > 0
        for log in (log for log in steps if f"pairs/{kind}" in log):
            assert math.isfinite(log[f"loss/{kind}"])
            assert 0 <= log[f"rewards/{kind}/accuracies"] <= 1
            assert f"rewards/{kind}/margins" in log

    assert (output_dir / "adapter_model.safetensors").is_file()
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer
    from safetensors.torch import load_file

    model_args, _, finetuning_args, _ = get_infer_args(
        dict(model_name_or_path=str(tiny_model), adapter_name_or_path=str(output_dir), template="qwen2_vl")
    )
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    merged = load_model(tokenizer, model_args, finetuning_args, is_trainable=False).state_dict()
    base_args, _, base_finetuning, _ = get_infer_args(dict(model_name_or_path=str(tiny_model), template="qwen2_vl"))
    base = load_model(tokenizer, base_args, base_finetuning, is_trainable=False).state_dict()
    saved = load_file(output_dir / "adapter_model.safetensors")
    assert any("lora_B" in key and value.abs().sum() > 0 for key, value in saved.items())
    assert any(not torch.equal(merged[key], base[key]) for key in base), "the reloaded adapter changed nothing"
