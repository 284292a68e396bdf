r"""Synthesis throughput against the raw batched generation of the same engine, on CPU with the tiny model.

    .venv/bin/python bench/bench_synth.py [--samples 64] [--batch-sizes 1,8,16] [--max-new-tokens 32] [--threads 1]

For each batch size, runs a full synthesis pass (guided prompts, batched greedy generate with left padding, retries
told what was wrong, the journal, the merge and the report) on the demo faces repeated to `--samples`, recording
every request the synthesizer sends to the engine. The same requests, in full batches of the same size, are then
generated twice more with the same engine and settings: through the engine's `generate` (prompt encoding and image
preprocessing included: the raw batched generate) and through the model's `generate` on inputs built beforehand (the
generation floor). One unmeasured batch warms the engine up first. Printed per batch size, by wall time and by this
process's CPU time (steadier on a shared machine): completions per second of each, synthesis as a share of both, and
where the synthesis time went (inside the engine's generate vs. the synthesizer's own work: judging, prompts,
journal, merge). The random model keeps nothing, so every sample uses all its retries (1 + `--retries` each).
"""

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def clock() -> tuple[float, float]:
    r"""Wall and CPU (this process) seconds."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    return tuple(now - then for now, then in zip(clock(), start))


class RecordingEngine:
    r"""Passes batches to an engine and records them with the wall and CPU seconds spent inside its `generate`."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.requests: list = []
        self.seconds = (0.0, 0.0)

    def generate(self, requests):
        start = clock()
        completions = self.engine.generate(requests)
        self.seconds = tuple(total + spent for total, spent in zip(self.seconds, since(start)))
        self.requests.extend(requests)
        return completions


def full_batches(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def raw_engine(engine, requests: list, size: int) -> tuple[float, float]:
    r"""Wall and CPU seconds of the engine's batched generate over `requests` in full batches (from a cold cache)."""
    engine.image_blocks.clear()  # synthesis expanded each sample's image placeholder once: so does this run
    start = clock()
    for batch in full_batches(requests, size):
        engine.generate(batch)

    return since(start)


def raw_model(engine, requests: list, size: int) -> tuple[float, float]:
    r"""Wall and CPU seconds of the model's generate over `requests` in full batches, inputs built beforehand."""
    import torch

    inputs = [engine._batch(batch)[0] for batch in full_batches(requests, size)]
    engine.model.eval()
    start = clock()
    with torch.inference_mode():
        for batch in inputs:
            engine.model.generate(**batch, generation_config=engine.generation_config)

    return since(start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each measurement (medians are reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    from llamafactory_fea.demo.tiny_model import make_tiny_model
    from llamafactory_fea.train.synth.args import SynthesisArguments
    from llamafactory_fea.train.synth.engine import GenerationRequest, HuggingfaceSynthEngine
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
            f"{args.retries} retries, max_new_tokens {args.max_new_tokens}, x{args.repeats} runs (medians)"
        )
        print(
            f"{'batch':>5}{'synthesis':>11}{'engine':>9}{'model':>9}{'share':>8}{'share':>8}"
            f"{'in engine':>11}{'synthesizer':>13}"
        )
        print(f"{'':>5}{'compl/s':>11}{'compl/s':>9}{'compl/s':>9}{'engine':>8}{'model':>8}{'s':>11}{'own s':>13}")
        for batch_size in (int(size) for size in args.batch_sizes.split(",")):
            warm_up = [GenerationRequest(s.key, "Describe the face.", s.load_image()) for s in samples[:batch_size]]
            engine.generate(warm_up)  # first calls of a shape are slower: none of the measured runs pays for them
            figures = []
            for repeat in range(args.repeats):
                synth_args = SynthesisArguments(synth_batch_size=batch_size, synth_max_retries=args.retries)
                run_dir = Path(tmp) / f"run{batch_size}_{repeat}"
                config = SynthesisPassConfig.from_args(synth_args, "bench", ["fea_demo"], run_dir)
                recorder = RecordingEngine(engine)
                start = clock()
                synthesis_pass = run_synthesis_pass(build_synthesizer(recorder, synth_args), samples, config)
                seconds = since(start)
                completions = synthesis_pass.generated + synthesis_pass.retries
                if completions != len(recorder.requests):
                    raise RuntimeError(f"{completions} completions counted, {len(recorder.requests)} requested.")

                engine_seconds = raw_engine(engine, recorder.requests, batch_size)
                model_seconds = raw_model(engine, recorder.requests, batch_size)
                figures.append((completions, seconds, engine_seconds, model_seconds, recorder.seconds))

            completions = figures[0][0]
            for clock_kind, index in (("wall", 0), ("CPU", 1)):
                synth, in_engine, raw, floor = (statistics.median(f[i][index] for f in figures) for i in (1, 4, 2, 3))
                print(
                    f"{batch_size:5d}{completions / synth:11.2f}{completions / raw:9.2f}{completions / floor:9.2f}"
                    f"{raw / synth:8.2f}{floor / synth:8.2f}{in_engine:11.2f}{synth - in_engine:13.2f}  {clock_kind}"
                )


if __name__ == "__main__":
    main()
