r"""Benchmark `stage: grpo` against a plain TRL GRPOTrainer script with identical settings, on the same model.

    python bench/bench_grpo.py                         # tiny random Qwen2-VL, CPU or GPU
    python bench/bench_grpo.py --preset qwen2_5_vl_3b  # random-weight Qwen2.5-VL-3B architecture (GPU), no download
    python bench/bench_grpo.py --model /path/to/Qwen2.5-VL-3B-Instruct --steps 10 --use-vllm

Each side runs in its own process on the demo data (LoRA rank 16 on the language model's linear layers, vision
tower frozen, gradient checkpointing, beta 0.04, loss grpo, the reference rewards fea_format + fea_emotion +
fea_au_f1, vision tokens suppressed). `stage: grpo` runs through LLaMA-Factory's `run_exp`, which is what
`llamafactory-cli train` calls in a single process, with a step timer added to its callbacks; the TRL script loads
the model with transformers, wraps it with PEFT's LoraConfig and feeds TRL conversational prompts with PIL images.
Reported: seconds per optimizer step (median over the steps after the warm-up ones, all repeats), completions per second, peak
memory (max RSS on CPU, torch.cuda.max_memory_allocated on GPU), and the ratio grpo / TRL.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data_registry" / "demo" / "fea_demo.jsonl"
SYSTEM = "You are a helpful assistant."
LANGUAGE_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def step_timer():
    r"""A TrainerCallback recording the wall time of every optimizer step."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = 0.0
            self.trainable = 0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

        def _now(self) -> float:
            if torch.cuda.is_available():
                torch.cuda.synchronize()

            return time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = self._now()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(self._now() - self.start)

    return StepTimer()


def peak_memory() -> tuple[int, str]:
    r"""Peak memory of this process: CUDA allocated bytes on GPU, else the maximum resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(), "cuda max_memory_allocated"

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "max RSS"


def completion_lengths(log_history: list[dict]) -> list[float]:
    return [log["completions/mean_length"] for log in log_history if "completions/mean_length" in log]


def run_llamafactory(spec: dict) -> dict:
    r"""`stage: grpo` through LLaMA-Factory's run_exp (the single-process path of `llamafactory-cli train`)."""
    from llamafactory.train.tuner import run_exp

    timer = step_timer()
    args = {
        "model_name_or_path": spec["model"],
        "stage": "grpo",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": spec["lora_rank"],
        "lora_alpha": 2 * spec["lora_rank"],
        "lora_target": "all",
        "freeze_vision_tower": True,
        "dataset": "fea_demo",
        "dataset_dir": str(ROOT / "data_registry"),
        "template": "qwen2_vl",
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": spec["output_dir"],
        "overwrite_output_dir": True,
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "plot_loss": False,
        "per_device_train_batch_size": spec["batch"],
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-5,
        "max_steps": spec["steps"] + spec["warmup"],
        "bf16": spec["bf16"],
        "seed": 42,
        "num_generations": spec["num_generations"],
        "max_completion_length": spec["max_completion_length"],
        "beta": 0.04,
        "loss_type": "grpo",
        "reward_clip": None,  # TRL has no clipping
        "use_vllm": spec["use_vllm"],
    }
    run_exp(args, callbacks=[timer])
    state = json.loads((Path(spec["output_dir"]) / "trainer_state.json").read_text(encoding="utf-8"))
    return {"times": timer.times, "trainable": timer.trainable, "lengths": completion_lengths(state["log_history"])}


def demo_dataset():
    r"""The demo set as TRL conversational prompts with PIL images and the label columns."""
    from datasets import Dataset
    from PIL import Image

    rows = []
    for line in DEMO.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        question = row["messages"][0]["content"].removeprefix("<image>")
        image = Image.open(ROOT / "data_registry" / row["images"][0]).convert("RGB")
        prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        rows.append({"prompt": prompt, "images": [image], "emotion": row["emotion"], "aus": row["aus"]})

    return Dataset.from_list(rows)


def run_trl(spec: dict) -> dict:
    r"""The same GRPO run as a plain TRL script."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from llamafactory_fea.rewards import fea_au_f1, fea_emotion, fea_format

    timer = step_timer()
    dtype = torch.bfloat16 if spec["bf16"] else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(spec["model"], dtype=dtype).to(device)
    processor = AutoProcessor.from_pretrained(spec["model"], padding_side="left")
    vision = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    config = GRPOConfig(
        output_dir=spec["output_dir"],
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1,
        learning_rate=1.0e-5,
        max_steps=spec["steps"] + spec["warmup"],
        bf16=spec["bf16"],
        seed=42,
        gradient_checkpointing=True,
        num_generations=spec["num_generations"],
        max_completion_length=spec["max_completion_length"],
        max_prompt_length=None,
        beta=0.04,
        loss_type="grpo",
        generation_kwargs={"suppress_tokens": processor.tokenizer.convert_tokens_to_ids(vision)},
        use_vllm=spec["use_vllm"],
        vllm_mode="colocate",
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(r=spec["lora_rank"], lora_alpha=2 * spec["lora_rank"], target_modules=LANGUAGE_LINEAR)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[fea_format, fea_emotion, fea_au_f1],
        args=config,
        train_dataset=demo_dataset(),
        processing_class=processor,
        peft_config=peft_config,
        callbacks=[timer],
    )
    trainer.train()
    return {
        "times": timer.times,
        "trainable": timer.trainable,
        "lengths": completion_lengths(trainer.state.log_history),
    }


def child(kind: str, spec_path: str) -> None:
    r"""Run one side and write its figures next to the spec."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    spec["output_dir"] = str(Path(spec["workdir"]) / kind)
    result = run_llamafactory(spec) if kind == "grpo" else run_trl(spec)
    memory, memory_kind = peak_memory()
    result.update(memory=memory, memory_kind=memory_kind)
    Path(spec["workdir"], f"{kind}.json").write_text(json.dumps(result), encoding="utf-8")


def summarize(runs: list[dict], spec: dict) -> dict:
    r"""Median seconds of the measured steps over all repeats; peak memory over all repeats."""
    measured = [t for run in runs for t in (run["times"][spec["warmup"] :] or run["times"])]
    seconds = statistics.median(measured)
    memory = max(run["memory"] for run in runs)
    return {"s/step": seconds, "completions/s": spec["batch"] / seconds, "peak GiB": memory / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local model folder (default: build the tiny random Qwen2-VL)")
    parser.add_argument("--preset", help="build a random-weight model of this architecture, e.g. qwen2_5_vl_3b")
    parser.add_argument("--steps", type=int, default=5, help="measured optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="steps run first and not measured")
    parser.add_argument("--batch", type=int, default=4, help="completions per step (per_device_train_batch_size)")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, alternating (medians are reported)")
    parser.add_argument("--use-vllm", action="store_true", help="colocated vLLM rollouts on both sides")
    parser.add_argument("--workdir", help="keep outputs here (default: a temporary folder)")
    parser.add_argument("--child", choices=("grpo", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.spec)

    import torch

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_grpo_"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        from llamafactory_fea.demo.tiny_model import make_tiny_model

        name = args.preset or "tiny_qwen2_vl"
        model = str(workdir / name)
        if not Path(model, "config.json").exists():
            make_tiny_model(model, arch="qwen2_vl", preset=args.preset)

    gpu = torch.cuda.is_available()
    spec = {
        "model": model,
        "workdir": str(workdir),
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": args.batch,
        "num_generations": args.num_generations,
        "max_completion_length": args.max_completion_length,
        "lora_rank": args.lora_rank,
        "use_vllm": args.use_vllm,
        "bf16": gpu,
    }
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "DISABLE_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1", "WANDB_DISABLED": "true"}
    results: dict[str, list[dict]] = {"grpo": [], "trl": []}
    for repeat in range(args.repeats):
        for kind in ("grpo", "trl") if repeat % 2 == 0 else ("trl", "grpo"):
            log = workdir / f"{kind}.log"
            command = [sys.executable, __file__, "--child", kind, "--spec", str(spec_path)]
            with open(log, "w", encoding="utf-8") as f:
                code = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
            if code != 0:
                sys.exit(f"{kind} run failed (exit {code}); see {log}")

            results[kind].append(json.loads((workdir / f"{kind}.json").read_text(encoding="utf-8")))

    device = (
        torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )
    print(f"model {model} | {device} | {args.steps} steps after {args.warmup} warm-up, x{args.repeats} runs per side")
    print(f"{args.batch} completions per step (per_device_train_batch_size), LoRA rank {args.lora_rank}")
    print(f"groups of {args.num_generations}, max {args.max_completion_length} new tokens, vLLM {args.use_vllm}")
    trainable = {kind: f"{results[kind][0]['trainable']:,}" for kind in results}
    print(f"trainable parameters: grpo {trainable['grpo']}, TRL {trainable['trl']}")
    rows = {kind: summarize(results[kind], spec) for kind in ("grpo", "trl")}
    memory_kind = results["grpo"][0]["memory_kind"]
    print(f"{'':24}{'s/step':>10}{'completions/s':>15}{'peak GiB':>10}   ({memory_kind})")
    for kind, label in (("grpo", "stage: grpo (LLaMA-Factory)"), ("trl", "plain TRL GRPOTrainer")):
        row = rows[kind]
        print(f"{label:<28}{row['s/step']:>6.3f}{row['completions/s']:>15.2f}{row['peak GiB']:>10.2f}")

    ratio = {key: rows["grpo"][key] / rows["trl"][key] for key in rows["grpo"]}
    print(f"{'ratio grpo / TRL':<28}{ratio['s/step']:>6.2f}{ratio['completions/s']:>15.2f}{ratio['peak GiB']:>10.2f}")
    for kind in ("grpo", "trl"):
        print(f"per-step seconds {kind}: {[[round(t, 3) for t in run['times']] for run in results[kind]]}")

    for kind in ("grpo", "trl"):
        lengths = [length for run in results[kind] for length in run["lengths"]]
        print(f"mean completion length {kind}: {statistics.mean(lengths) if lengths else float('nan'):.1f} tokens")


if __name__ == "__main__":
    main()
