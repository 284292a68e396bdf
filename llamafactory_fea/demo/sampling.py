r"""How often a model's sampled answers are well formed: the demo's measure of what stage 1 taught, per checkpoint."""

import json
import re
from pathlib import Path
from typing import Any

from ..data.files import atomic_write
from ..data.records import dataset_objects
from ..rewards import fea_format


FORMAT_RATES = "format_rate.jsonl"
CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    r"""(global step, folder) of every checkpoint of a run, in step order."""
    found = [(int(match.group(1)), path) for path in output_dir.iterdir() if (match := CHECKPOINT.search(path.name))]
    return sorted(found)


def sample_completions(
    model_dir: Path, rows: list[dict[str, Any]], samples: int, max_new_tokens: int, seed: int = 0
) -> list[str]:
    r"""`samples` completions per row at temperature 1, batched, by a model loaded as LLaMA-Factory loads it."""
    import torch
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.extras.constants import IMAGE_PLACEHOLDER
    from llamafactory.hparams import get_infer_args
    from llamafactory.model import load_model, load_tokenizer
    from PIL import Image

    from ..train.synth.engine import GenerationRequest, HuggingfaceSynthEngine

    model_args, data_args, finetuning_args, generating_args = get_infer_args(
        {"model_name_or_path": str(model_dir), "template": "qwen2_vl", "max_new_tokens": max_new_tokens}
    )
    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=False)
    engine = HuggingfaceSynthEngine(model, template, generating_args, tokenizer, tokenizer_module["processor"])
    engine.generation_config.do_sample, engine.generation_config.temperature = True, 1.0  # the engine is greedy
    requests = []
    for index, row in enumerate(rows):
        with Image.open(row["images"][0]) as image:
            image = image.convert("RGB")

        question = row["messages"][0]["content"].replace(IMAGE_PLACEHOLDER, "")
        requests += [GenerationRequest(f"{index}/{sample}", question, image) for sample in range(samples)]

    torch.manual_seed(seed)
    return [str(completion) for completion in engine.generate(requests)]


def write_format_rates(
    output_dir: Path, dataset_file: Path, steps_per_epoch: int, samples: int = 4, max_new_tokens: int = 192
) -> list[dict[str, float]]:
    r"""Sample every checkpoint of an SFT run on a dataset's prompts; write `output_dir/format_rate.jsonl`."""
    rows = [row for _, row in dataset_objects(dataset_file)]
    records = []
    for step, folder in checkpoints(output_dir):
        completions = sample_completions(folder, rows, samples, max_new_tokens)
        rewards = fea_format([[{"role": "assistant", "content": text}] for text in completions])
        record = {"step": step, "epoch": step / steps_per_epoch, "format_rate": sum(rewards) / len(rewards)}
        records.append({**record, "samples": len(rewards)})
        print(
            f"[demo] stage 1: checkpoint of epoch {record['epoch']:g}: {record['format_rate']:.0%} of "
            f"{len(rewards)} answers sampled at temperature 1 are well formed",
            flush=True,
        )

    atomic_write(output_dir / FORMAT_RATES, "".join(json.dumps(record) + "\n" for record in records))
    return records
