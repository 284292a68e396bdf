r"""Every YAML under examples/ parses as its run would (LLaMA-Factory's parser plus the plugin's argument classes).

No model is loaded: `llamafactory_fea.plan` parses each training YAML as `llamafactory-cli train` does, and each
loop YAML's step YAMLs as the loop writes them, so no example can rot.
"""

import pytest
import yaml

from llamafactory_fea.plan import is_loop_config, loop_step_configs, parse_stage, plan

from .conftest import EXAMPLES, ROOT


YAMLS = sorted(path.relative_to(EXAMPLES).as_posix() for path in EXAMPLES.rglob("*.yaml"))
PAPER = sorted(path.name for path in (EXAMPLES / "paper").glob("*.yaml"))


def test_the_examples_are_found():
    assert "fea_grpo.yaml" in YAMLS
    assert "paper/loop_later.yaml" in YAMLS
    assert {"stage1_sft_full.yaml", "stage2_grpo_later.yaml", "stage2_grpo_earlier.yaml", "stage3_synth.yaml"} <= set(
        PAPER
    )


@pytest.mark.parametrize("name", YAMLS)
def test_every_example_yaml_parses(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)  # the YAMLs name each other and the DeepSpeed configs from the repository root
    monkeypatch.delenv("FORCE_TORCHRUN", raising=False)
    config = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    steps = list(loop_step_configs(EXAMPLES / name)) if is_loop_config(config) else [(name, config)]
    parsed = [parse_stage(step, title) for title, step in steps if step]
    assert parsed
    for stage in parsed:
        assert stage.model_args.model_name_or_path
        assert stage.data_args.dataset or stage.data_args.eval_dataset
        if stage.stage == "grpo":
            assert stage.plugin_args.reward_funcs


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_name_the_reference_they_mirror_and_are_listed(name: str):
    head = (EXAMPLES / "paper" / name).read_text(encoding="utf-8").split("\n\n")[0]
    assert "reference" in head, name  # which script ...
    assert "commit" in head, name  # ... and which version
    assert f"paper/{name}" in (EXAMPLES / "README.md").read_text(encoding="utf-8"), name


def test_plan_prints_the_batch_arithmetic_and_the_loss_of_each_variant(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    later = plan(EXAMPLES / "paper" / "stage2_grpo_later.yaml", processes=8)
    assert "256 completions = 32 prompts x 8 per optimizer step" in later
    assert "loss_batch_sum" in later
    assert "prompt set         reference" in later
    earlier = plan(EXAMPLES / "paper" / "stage2_grpo_earlier.yaml", processes=8)
    assert "32 completions = 4 prompts x 8" in earlier
    assert "fea_au_f1 over <think> tokens" in earlier
    loop = plan(EXAMPLES / "paper" / "loop_later.yaml", processes=8)
    assert loop.count("== round 1:") == 3
    assert "previous round's last trained model" in loop
    assert plan(
        EXAMPLES / "fea_grpo.yaml", ["per_device_train_batch_size=3", "gradient_accumulation_steps=1"], processes=1
    ).count("NOT a multiple")
