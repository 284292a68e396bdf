r"""Synthesis throughput (samples/s) on CPU with the tiny random-weight model and the real HF engine.

    .venv/bin/python bench/bench_synth.py [--samples 64] [--batch-sizes 1,8,16] [--max-new-tokens 32] [--threads 1]

Runs a full synthesis pass (guided prompts, batched generate with left padding, retries told what was wrong,
the journal and the merge) on the demo faces repeated to `--samples`, for each batch size, and prints generated
samples per second and completions per second. The random model keeps nothing, so every sample uses all its
retries: the figure is the worst case per sample (1 + `--retries` completions each).
"""

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    from llamafactory_fea.demo.tiny_model import make_tiny_model
    from llamafactory_fea.train.synth.args import SynthesisArguments
    from llamafactory_fea.train.synth.engine import HuggingfaceSynthEngine
    from llamafactory_fea.train.synth.job import SynthesisPassConfig, run_synthesis_pass
    from llamafactory_fea.train.synth.samples import load_samples
    from llamafactory_fea.train.synth.synthesizer import build_synthesizer

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_tiny_model(Path(tmp) / "tiny")
        model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(
            {
                "model_name_or_path": str(model_dir),
                "stage": "sft",
                "template": "qwen2_vl",
                "dataset": "fea_demo",
                "dataset_dir": str(ROOT / "data_registry"),
                "output_dir": str(Path(tmp) / "out"),
                "max_new_tokens": args.max_new_tokens,
                "preprocessing_num_workers": 1,
                "report_to": "none",
            }
        )
        tokenizer_module = load_tokenizer(model_args)
        tokenizer_module["tokenizer"].padding_side = "left"
        template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
        model = load_model(tokenizer_module["tokenizer"], model_args, finetuning_args, is_trainable=False)
        demo = load_samples(data_args.dataset, model_args, data_args, training_args)
        samples = [
            dataclasses.replace(demo[i % len(demo)], key=f"bench/{i}", id=str(i), index=i) for i in range(args.samples)
        ]
        engine = HuggingfaceSynthEngine(model, template, generating_args, **tokenizer_module)
        print(
            f"tiny Qwen2-VL on CPU ({torch.get_num_threads()} threads), {args.samples} samples, "
            f"{args.retries} retries, max_new_tokens {args.max_new_tokens}"
        )
        for batch_size in (int(size) for size in args.batch_sizes.split(",")):
            synth_args = SynthesisArguments(synth_batch_size=batch_size, synth_max_retries=args.retries)
            config = SynthesisPassConfig.from_args(synth_args, "bench", ["fea_demo"], Path(tmp) / f"run{batch_size}")
            start = time.perf_counter()
            synthesis_pass = run_synthesis_pass(build_synthesizer(engine, synth_args), samples, config)
            seconds = time.perf_counter() - start
            completions = synthesis_pass.generated + synthesis_pass.retries
            print(
                f"batch {batch_size:3d}: {synthesis_pass.generated / seconds:7.2f} samples/s, "
                f"{completions / seconds:7.2f} completions/s ({seconds:.1f} s, kept {synthesis_pass.kept})"
            )


if __name__ == "__main__":
    main()
