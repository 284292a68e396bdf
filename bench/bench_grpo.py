r"""Benchmark `stage: grpo` against a plain TRL GRPOTrainer script with identical settings, on the same model.

    python bench/bench_grpo.py --repeats 4             # tiny random Qwen2-VL, CPU or GPU
    python bench/bench_grpo.py --preset qwen2_5_vl_3b  # random-weight Qwen2.5-VL-3B architecture (GPU), no download
    python bench/bench_grpo.py --model /path/to/Qwen2.5-VL-3B-Instruct --steps 10 --use-vllm
    python bench/bench_grpo.py --profile               # also a cProfile of the measured steps of each side

Each side runs in its own process on the demo data (LoRA rank 16 on the language model's linear layers, vision
tower frozen, gradient checkpointing, beta 0.04, loss grpo, the reference rewards fea_format + fea_emotion +
fea_au_f1, vision tokens suppressed). `stage: grpo` runs through LLaMA-Factory's `run_exp`, which is what
`llamafactory-cli train` calls in a single process, with a step timer added to its callbacks; the TRL script loads
the model with transformers, wraps it with PEFT's LoraConfig and feeds TRL conversational prompts with PIL images.
Both sides seed the global RNGs with the same seed right before PEFT creates the adapter, so the initial LoRA
matrices are the same.

Identity checks, before any figure: both sides must start from identical weights (trainable ones compared bitwise,
frozen ones by float64 sums) and produce identical first-step completions (token ids); otherwise the bench stops.
Reported: seconds per optimizer step (the wall time between two step ends, so data loading, rewards, logging and
callbacks count; median over the steps after the warm-up ones), completions per second, peak memory (max RSS on CPU,
torch.cuda.max_memory_allocated from the start of training on GPU), CPU seconds per step (steadier than wall time on
a shared machine; `--threads 1` steadies it more), and the ratios grpo / TRL: the median over repeats of each
repeat's ratio, the sides run alternately (grpo, TRL, TRL, grpo, ...). `--profile` adds a cProfile (CPU time) of
the measured steps of the last run of each side: seconds per step in each phase, and the functions whose own time
differs most between the sides.
"""

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data_registry" / "demo" / "fea_demo.jsonl"
SYSTEM = "You are a helpful assistant."
LANGUAGE_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
SEED = 42
PROFILED = (  # (label, file suffix, function name): the phases of a step, cumulative seconds in the profile
    ("data: next batch", "transformers/trainer.py", "get_batch_samples"),
    ("rollout + scoring", "trl/trainer/grpo_trainer.py", "_generate_and_score_completions"),
    ("  generate", "transformers/generation/utils.py", "generate"),
    ("  rewards (+FEA metrics)", "trl/trainer/grpo_trainer.py", "_calculate_rewards"),
    ("  FEA metrics", "llamafactory_fea/train/grpo/trainer.py", "fea_metrics"),
    ("  processor call", "qwen2_vl/processing_qwen2_vl.py", "__call__"),
    ("loss forward", "trl/trainer/grpo_trainer.py", "_compute_loss"),
    ("backward", "accelerate/accelerator.py", "backward"),
    ("optimizer step", "accelerate/optimizer.py", "step"),
    ("callbacks", "transformers/trainer_callback.py", "call_event"),
    ("trainer.log", "trl/trainer/grpo_trainer.py", "log"),
)


def step_timer(warmup: int, profile: bool):
    r"""A TrainerCallback recording the wall time between step ends and the starting weights; optionally profiling."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu_times: list[float] = []
            self.last = self.last_cpu = 0.0
            self.trainable = 0
            self.weights: dict[str, Any] = {}
            self.profiler = cProfile.Profile(time.process_time) if profile else None

        def _now(self) -> float:
            if torch.cuda.is_available():
                torch.cuda.synchronize()

            return time.perf_counter()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.weights = weight_digest(model)
            if torch.cuda.is_available():  # the peak is the training's, not the digest's temporary copies
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            if not self.times and not self.last:  # the first step starts here (its batch is loaded: warm-up)
                self.last, self.last_cpu = self._now(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            now, cpu = self._now(), time.process_time()
            self.times.append(now - self.last)
            self.cpu_times.append(cpu - self.last_cpu)
            self.last, self.last_cpu = now, cpu
            if self.profiler is not None and len(self.times) == warmup:
                self.profiler.enable()

        def on_train_end(self, args, state, control, **kwargs):
            if self.profiler is not None:
                self.profiler.disable()

    return StepTimer()


def weight_digest(model) -> dict[str, Any]:
    r"""Per parameter: a SHA-256 of the bytes of trainable ones, float64 sum and sum of squares of frozen ones."""
    import torch

    digest = {}
    for name, param in model.named_parameters():
        data = param.detach()
        if param.requires_grad:
            raw = data.cpu().contiguous().view(torch.uint8).numpy().tobytes()
            digest[name] = ["sha256", hashlib.sha256(raw).hexdigest(), str(data.dtype)]
        else:
            wide = data.float()
            sums = [wide.sum(dtype=torch.float64).item(), wide.square().sum(dtype=torch.float64).item()]
            digest[name] = ["sums", *sums, str(data.dtype)]

    return digest


def record_first_rollout(store: dict[str, Any]) -> None:
    r"""Keep the prompt and completion token ids of the first rollout (TRL's `_generate_and_score_completions`)."""
    from trl import GRPOTrainer

    original = GRPOTrainer._generate_and_score_completions

    def generate_and_score(self, inputs):
        output = original(self, inputs)
        if not store:
            for key in ("prompt", "completion"):
                ids, mask = output[f"{key}_ids"], output[f"{key}_mask"]
                store[key] = [row[row_mask.bool()].tolist() for row, row_mask in zip(ids.cpu(), mask.cpu())]

        return output

    GRPOTrainer._generate_and_score_completions = generate_and_score


def seed_before_adapter(module) -> None:
    r"""Make `module.get_peft_model` seed the global RNGs first, so both sides draw the same initial LoRA matrices."""
    from transformers import set_seed

    original = module.get_peft_model

    def get_peft_model(*args, **kwargs):
        set_seed(SEED)
        return original(*args, **kwargs)

    module.get_peft_model = get_peft_model


def peak_memory() -> tuple[int, str]:
    r"""Peak memory of this process: CUDA allocated bytes on GPU, else the maximum resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(), "cuda max_memory_allocated"

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "max RSS"


def completion_lengths(log_history: list[dict]) -> list[float]:
    return [log["completions/mean_length"] for log in log_history if "completions/mean_length" in log]


def run_llamafactory(spec: dict, timer) -> dict:
    r"""`stage: grpo` through LLaMA-Factory's run_exp (the single-process path of `llamafactory-cli train`)."""
    import llamafactory.model.adapter
    from llamafactory.train.tuner import run_exp

    seed_before_adapter(llamafactory.model.adapter)
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
        "seed": SEED,
        "num_generations": spec["num_generations"],
        "max_completion_length": spec["max_completion_length"],
        "beta": 0.04,
        "loss_type": "grpo",
        "reward_clip": None,  # TRL has no clipping
        "use_vllm": spec["use_vllm"],
    }
    run_exp(args, callbacks=[timer])
    state = json.loads((Path(spec["output_dir"]) / "trainer_state.json").read_text(encoding="utf-8"))
    return {"lengths": completion_lengths(state["log_history"])}


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


def run_trl(spec: dict, timer) -> dict:
    r"""The same GRPO run as a plain TRL script."""
    import torch
    import trl.models.utils
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from llamafactory_fea.rewards import fea_au_f1, fea_emotion, fea_format

    seed_before_adapter(trl.models.utils)
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
        seed=SEED,
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
    return {"lengths": completion_lengths(trainer.state.log_history)}


def child(kind: str, spec_path: str) -> None:
    r"""Run one side and write its figures (and profile) next to the spec."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    spec["output_dir"] = str(Path(spec["workdir"]) / kind)
    if spec["threads"]:
        import torch

        torch.set_num_threads(spec["threads"])

    timer = step_timer(spec["warmup"], spec["profile"])
    first_rollout: dict[str, Any] = {}
    record_first_rollout(first_rollout)
    result = run_llamafactory(spec, timer) if kind == "grpo" else run_trl(spec, timer)
    memory, memory_kind = peak_memory()
    result.update(
        times=timer.times,
        cpu_times=timer.cpu_times,
        trainable=timer.trainable,
        weights=timer.weights,
        first_rollout=first_rollout,
        memory=memory,
        memory_kind=memory_kind,
    )
    if timer.profiler is not None:
        timer.profiler.dump_stats(str(Path(spec["workdir"]) / f"{kind}.prof"))

    Path(spec["workdir"], f"{kind}.json").write_text(json.dumps(result), encoding="utf-8")


def check_identity(grpo: dict, trl: dict) -> list[str]:
    r"""The identity checks as printable lines; exits naming the first difference when a check fails."""
    names = sorted(set(grpo["weights"]) | set(trl["weights"]))
    missing = [name for name in names if name not in grpo["weights"] or name not in trl["weights"]]
    if missing:
        sys.exit(f"identity check failed: parameter {missing[0]} exists on one side only ({len(missing)} such).")

    differing = [name for name in names if grpo["weights"][name] != trl["weights"][name]]
    if differing:
        name = differing[0]
        sys.exit(
            f"identity check failed: {len(differing)} of {len(names)} parameters differ at the start, e.g. {name}: "
            f"grpo {grpo['weights'][name]} vs TRL {trl['weights'][name]}."
        )

    trainable = [name for name in names if grpo["weights"][name][0] == "sha256"]
    lines = [f"identical starting weights: {len(names)} parameters ({len(trainable)} trainable, bitwise)"]
    for key in ("prompt", "completion"):
        ours, theirs = grpo["first_rollout"].get(key), trl["first_rollout"].get(key)
        if not ours or ours != theirs:
            row = next((i for i, (a, b) in enumerate(zip(ours or [], theirs or [])) if a != b), None)
            sys.exit(
                f"identity check failed: the first step's {key} token ids differ (first differing row: {row}; "
                f"{len(ours or [])} vs {len(theirs or [])} rows)."
            )

        tokens = sum(len(row) for row in ours)
        lines.append(f"identical first-step {key}s: {len(ours)} rows, {tokens} tokens")

    return lines


def profile_rows(path: Path) -> dict[str, float]:
    r"""Cumulative seconds of the phases in PROFILED from a cProfile dump."""
    stats = pstats.Stats(str(path)).stats
    rows = {}
    for label, suffix, function in PROFILED:
        seconds = 0.0
        for (filename, _, name), (_, _, _, cumulative, _) in stats.items():
            if name == function and filename.replace(os.sep, "/").endswith(suffix):
                seconds = max(seconds, cumulative)  # recursion-free phases: the outermost entry

        rows[label] = seconds

    return rows


def print_profiles(workdir: Path, steps: int, top: int) -> None:
    r"""Per-phase seconds per measured step of both sides, then the functions whose own time differs most."""
    paths = {kind: workdir / f"{kind}.prof" for kind in ("grpo", "trl")}
    rows = {kind: profile_rows(path) for kind, path in paths.items()}
    print(f"\ncProfile (CPU time) of the {steps} measured steps of the last runs, seconds per step (cumulative):")
    print(f"{'phase':<30}{'grpo':>9}{'TRL':>9}{'grpo-TRL':>10}")
    for label, _, _ in PROFILED:
        ours, theirs = rows["grpo"][label] / steps, rows["trl"][label] / steps
        print(f"{label:<30}{ours:>9.4f}{theirs:>9.4f}{ours - theirs:>+10.4f}")

    own = {}
    for kind, path in paths.items():
        for (filename, line, name), (_, _, tottime, _, _) in pstats.Stats(str(path)).stats.items():
            key = f"{Path(filename).parent.name}/{Path(filename).name}:{name}"
            own.setdefault(key, {"grpo": 0.0, "trl": 0.0})[kind] += tottime / steps

    ranked = sorted(own.items(), key=lambda item: -abs(item[1]["grpo"] - item[1]["trl"]))[:top]
    print("functions whose own time per step differs most (grpo - TRL, seconds):")
    for key, seconds in ranked:
        print(
            f"  {seconds['grpo'] - seconds['trl']:+.4f}  {key} (grpo {seconds['grpo']:.4f}, TRL {seconds['trl']:.4f})"
        )


def median_step(run: dict, warmup: int, key: str = "times") -> float:
    return statistics.median(run[key][warmup:] or run[key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a local model folder (default: build the tiny random Qwen2-VL)")
    parser.add_argument("--preset", help="build a random-weight model of this architecture, e.g. qwen2_5_vl_3b")
    parser.add_argument("--steps", type=int, default=8, help="measured optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not measured")
    parser.add_argument("--batch", type=int, default=4, help="completions per step (per_device_train_batch_size)")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating (medians are reported)")
    parser.add_argument("--use-vllm", action="store_true", help="colocated vLLM rollouts on both sides")
    parser.add_argument("--threads", type=int, help="torch CPU threads of each side (default: torch's choice)")
    parser.add_argument("--profile", action="store_true", help="cProfile (CPU time) the measured steps of each side")
    parser.add_argument("--top", type=int, default=15, help="functions listed with --profile")
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
        "profile": args.profile,
        "threads": args.threads,
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

        if repeat == 0:
            for line in check_identity(results["grpo"][0], results["trl"][0]):
                print(line, flush=True)

    device = (
        torch.cuda.get_device_name()
        if gpu
        else f"CPU ({os.cpu_count()} cores, {args.threads or torch.get_num_threads()} threads)"
    )
    print(f"model {model} | {device} | {args.steps} steps after {args.warmup} warm-up, x{args.repeats} runs per side")
    print(f"{args.batch} completions per step (per_device_train_batch_size), LoRA rank {args.lora_rank}")
    print(f"groups of {args.num_generations}, max {args.max_completion_length} new tokens, vLLM {args.use_vllm}")
    trainable = {kind: f"{results[kind][0]['trainable']:,}" for kind in results}
    print(f"trainable parameters: grpo {trainable['grpo']}, TRL {trainable['trl']}")
    memory_kind = results["grpo"][0]["memory_kind"]
    seconds = {kind: [median_step(run, args.warmup) for run in results[kind]] for kind in results}
    cpu = {kind: [median_step(run, args.warmup, "cpu_times") for run in results[kind]] for kind in results}
    memory = {kind: [run["memory"] / 2**30 for run in results[kind]] for kind in results}
    print(f"{'':28}{'s/step':>7}{'completions/s':>15}{'peak GiB':>10}{'CPU s/step':>12}   ({memory_kind})")
    for kind, label in (("grpo", "stage: grpo (LLaMA-Factory)"), ("trl", "plain TRL GRPOTrainer")):
        step, cpu_step = statistics.median(seconds[kind]), statistics.median(cpu[kind])
        memory_gib = statistics.median(memory[kind])
        print(f"{label:<28}{step:>7.3f}{args.batch / step:>15.2f}{memory_gib:>10.2f}{cpu_step:>12.3f}")

    ratios = {
        name: [ours / theirs for ours, theirs in zip(values["grpo"], values["trl"])]
        for name, values in (("wall", seconds), ("memory", memory), ("cpu", cpu))
    }
    ratio = {name: statistics.median(values) for name, values in ratios.items()}
    print(
        f"{'ratio grpo / TRL':<28}{ratio['wall']:>7.3f}{1 / ratio['wall']:>15.3f}{ratio['memory']:>10.3f}"
        f"{ratio['cpu']:>12.3f}   (median over repeats of each repeat's ratio)"
    )
    print(
        f"s/step ratio per repeat: wall {[round(r, 3) for r in ratios['wall']]}, CPU {[round(r, 3) for r in ratios['cpu']]}"
    )
    for kind in ("grpo", "trl"):
        print(f"per-step seconds {kind}: {[[round(t, 3) for t in run['times']] for run in results[kind]]}")

    for kind in ("grpo", "trl"):
        lengths = [length for run in results[kind] for length in run["lengths"]]
        print(f"mean completion length {kind}: {statistics.mean(lengths) if lengths else float('nan'):.1f} tokens")

    if args.profile:
        print_profiles(workdir, args.steps, args.top)


if __name__ == "__main__":
    main()
