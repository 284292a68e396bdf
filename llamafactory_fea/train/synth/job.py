r"""One synthesis pass that never loses work: a per-rank append-only journal, resume by key, merge by rank 0.

Every processed sample (kept, rejected or skipped, with its reason) is one flushed JSON line of
`synth_journal.rank<k>.jsonl` in the pass's folder as soon as it is finished. A restarted run reads every
journal of the folder (any world size), repairs a line cut short by a kill, and skips the keys already there.
Rank `k` of `n` takes samples `k::n` of the source order; rank 0 merges the journals in source order into the
dataset file, registers it atomically and writes the report.
"""

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...data.files import RecordError, json_lines, write_jsonl
from ...data.records import register_dataset
from .._logging import get_logger
from .report import SynthesisPass, write_report


if TYPE_CHECKING:
    from .args import SynthesisArguments
    from .samples import SynthSample
    from .synthesizer import Synthesizer


logger = get_logger(__name__)

JOURNAL_PREFIX = "synth_journal.rank"
SETTINGS_FILE = "synth_settings.json"


class Journal:
    r"""The append-only journal of one rank: one flushed JSON line per processed sample."""

    def __init__(self, run_dir: "str | Path", rank: int) -> None:
        self.path = Path(run_dir) / f"{JOURNAL_PREFIX}{rank}.jsonl"
        self._file = None

    @staticmethod
    def read(path: "str | Path") -> list[dict[str, Any]]:
        r"""The complete entries of a journal file; a last line cut short by a kill is ignored."""
        lines = list(json_lines(path))
        for number, (_, entry) in enumerate(lines, 1):
            if isinstance(entry, RecordError) and number != len(lines):  # only the last line can be cut short
                logger.warning_rank0(f"{entry.source}:{entry.where}: unreadable journal line skipped.")

        return [entry for _, entry in lines if not isinstance(entry, RecordError)]

    def repair(self) -> None:
        r"""Cut a last line left incomplete by a kill, so that appending starts on a fresh line."""
        if not self.path.is_file():
            return

        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return

        head, _, tail = data.rpartition(b"\n")
        try:
            json.loads(tail)
            keep = data + b"\n"  # complete JSON, only the newline was lost
        except json.JSONDecodeError:
            keep = head + b"\n" if head else b""
            logger.warning(f"{self.path}: dropped an incomplete last line (its sample will be redone).")

        with open(self.path, "wb") as f:
            f.write(keep)

    def append(self, entry: dict[str, Any]) -> None:
        r"""Append one entry and flush it to the operating system at once."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

        self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        r"""Flush to disk and close."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def read_journals(run_dir: "str | Path") -> dict[str, dict[str, Any]]:
    r"""Entries of every rank's journal in a folder by sample key (the first entry of a key wins)."""
    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(run_dir).glob(f"{JOURNAL_PREFIX}*.jsonl")):
        for entry in Journal.read(path):
            entries.setdefault(entry["key"], entry)

    return entries


def _barrier() -> None:
    r"""Wait for every rank when running distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def relocate_image(image: str, dataset_dir: Path) -> str:
    r"""An image path for a dataset registered in `dataset_dir`: relative when inside it, else absolute."""
    path = Path(image).resolve()
    try:
        return path.relative_to(dataset_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


@dataclass
class SynthesisPassConfig:
    r"""Where a pass works and what it produces."""

    name: str
    datasets: list[str]
    run_dir: Path
    dataset_dir: Path
    dataset_name: str
    dataset_file: str
    resume: bool = True
    stop_after: int | None = None
    settings: dict[str, Any] | None = None
    report_dir: Path | None = None

    @classmethod
    def from_args(
        cls,
        synth_args: "SynthesisArguments",
        name: str,
        datasets: list[str],
        run_dir: "str | Path",
        report_dir: "str | Path | None" = None,
        **settings: Any,
    ) -> "SynthesisPassConfig":
        r"""A pass of the `synth_*` keys, registered as `name` in `synth_dataset_dir` (default: `run_dir`)."""
        return cls(
            name=name,
            datasets=datasets,
            run_dir=Path(run_dir),
            report_dir=Path(report_dir) if report_dir is not None else None,
            dataset_dir=Path(synth_args.synth_dataset_dir or run_dir),
            dataset_name=name,
            dataset_file=synth_args.synth_dataset_file or f"{name}.jsonl",
            resume=synth_args.synth_resume,
            stop_after=synth_args.synth_stop_after,
            settings={**asdict(synth_args), "datasets": datasets, **settings},
        )


def _check_settings(config: SynthesisPassConfig) -> None:
    r"""Record the pass's settings; warn when a resumed journal was made with other settings."""
    path = config.run_dir / SETTINGS_FILE
    if config.settings is None:
        return

    if path.is_file() and any(config.run_dir.glob(f"{JOURNAL_PREFIX}*.jsonl")):
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(previous) | set(config.settings) if previous.get(k) != config.settings.get(k))
        if changed:
            logger.warning_rank0(
                f"Resuming a journal made with other settings ({', '.join(changed)}); "
                "set `synth_resume: false` or another `output_dir` to start afresh."
            )

    path.write_text(json.dumps(config.settings, indent=2, default=str) + "\n", encoding="utf-8")


def merge_pass(
    config: SynthesisPassConfig, samples: list["SynthSample"], seconds: float, generated_now: int
) -> SynthesisPass:
    r"""Rank 0: merge the journals in source order, write and register the dataset, write the report."""
    entries = read_journals(config.run_dir)
    ordered = [entries[sample.key] for sample in samples if sample.key in entries]
    rows = []
    for entry in ordered:
        if entry["status"] == "kept" and entry.get("row"):
            row = dict(entry["row"])
            row["images"] = [relocate_image(image, config.dataset_dir) for image in row["images"]]
            rows.append(row)

    synthesis_pass = SynthesisPass.from_entries(config.name, config.datasets, len(samples), ordered)
    synthesis_pass.seconds = seconds
    synthesis_pass.samples_per_second = generated_now / seconds if seconds > 0 else 0.0
    dataset_path = config.dataset_dir / config.dataset_file
    write_jsonl(dataset_path, rows)
    synthesis_pass.dataset_name, synthesis_pass.dataset_file = config.dataset_name, str(dataset_path)
    if rows:
        info_path = register_dataset(config.dataset_dir, config.dataset_name, config.dataset_file)
        synthesis_pass.registered_in = str(info_path)
    else:
        logger.warning_rank0("No sample was kept: the dataset file is empty and was not registered.")

    write_report(config.report_dir or config.run_dir, synthesis_pass)
    return synthesis_pass


def run_synthesis_pass(
    synthesizer: "Synthesizer",
    samples: list["SynthSample"],
    config: SynthesisPassConfig,
    rank: int = 0,
    world_size: int = 1,
) -> SynthesisPass | None:
    r"""Synthesize this rank's shard of the samples, resuming from the journals; rank 0 returns the pass."""
    from tqdm.auto import tqdm

    config.run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        if not config.resume:
            for path in config.run_dir.glob(f"{JOURNAL_PREFIX}*.jsonl"):
                path.unlink()

        _check_settings(config)

    _barrier()
    journal = Journal(config.run_dir, rank)
    journal.repair()
    done = read_journals(config.run_dir)
    pending = [sample for sample in samples[rank::world_size] if sample.key not in done]
    if done:
        logger.info_rank0(f"Resuming synthesis: {len(done)} samples already processed, {len(pending)} to go (rank 0).")

    if config.stop_after is not None:
        pending = pending[: config.stop_after]

    start, generated = time.perf_counter(), 0
    progress = tqdm(total=len(pending), desc=f"Synthesis {config.name}", unit="sample", disable=rank != 0)
    kept = retries = 0
    try:
        for result in synthesizer.run(pending):
            journal.append(result.to_json())
            generated += result.status != "skipped"
            kept += result.status == "kept"
            retries += result.retries
            progress.update(1)
            progress.set_postfix(kept=kept, retries=retries, refresh=False)
    finally:
        progress.close()
        journal.close()

    seconds = time.perf_counter() - start
    _barrier()
    if rank != 0:
        return None

    synthesis_pass = merge_pass(config, samples, seconds, generated)
    logger.info_rank0("\n" + synthesis_pass.summary())
    return synthesis_pass
