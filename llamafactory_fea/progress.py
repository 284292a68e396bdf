r"""Run one `llamafactory-cli` job with its output in a log file while its progress shows on the terminal.

The progress is read from what the job writes anyway: LLaMA-Factory's `trainer_log.jsonl` (steps, percentage,
time left, loss or reward) and the synthesis journals (samples done). On a terminal one line is rewritten in place;
otherwise a line is printed at every further tenth of the run, so a CI log stays short.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from .data.files import json_lines


POLL_SECONDS = 1.0
TRAINER_LOG = "trainer_log.jsonl"  # LLaMA-Factory's LogCallback file (llamafactory.extras.constants.TRAINER_LOG)
JOURNALS = "synth_journal.rank*.jsonl"  # train.synth.job.JOURNAL_PREFIX


def log_records(path: Path) -> list[dict]:
    r"""The complete JSON objects of a JSONL log a job appends to ([] when there is none yet)."""
    return [record for _, record in json_lines(path) if isinstance(record, dict)] if path.is_file() else []


def read_progress(output_dir: "str | Path") -> tuple[str, float | None]:
    r"""A short progress text for a job's output folder and its fraction done (None when unknown)."""
    output_dir = Path(output_dir)
    records = log_records(output_dir / TRAINER_LOG)
    record = records[-1] if records else None
    if record is not None and "total_steps" in record:
        text = f"step {record.get('current_steps', 0)}/{record['total_steps']} ({record.get('percentage', 0):.0f}%)"
        for key in ("loss", "reward"):
            if isinstance(record.get(key), (int, float)):
                text += f", {key} {record[key]:.4g}"

        if record.get("remaining_time"):
            text += f", {record['remaining_time']} left"

        return text, record.get("percentage", 0) / 100

    samples = sum(path.read_bytes().count(b"\n") for path in output_dir.rglob(JOURNALS)) if output_dir.is_dir() else 0
    if samples:
        return f"{samples} samples synthesized", None

    return "starting", None


class ProgressLine:
    r"""Shows a job's progress: one line rewritten on a terminal, else a line per further tenth done."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.shown_tenths = 0
        self.width = 0

    def show(self, text: str, fraction: float | None) -> None:
        r"""Show the latest progress (printed only when it adds something)."""
        line = f"{self.label}: {text}"
        if self.live:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.stream.flush()
        elif fraction is not None and int(fraction * 10) > self.shown_tenths:
            self.shown_tenths = int(fraction * 10)
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        r"""End the rewritten line."""
        if self.live and self.width:
            self.stream.write("\n")
            self.stream.flush()


def run_job(
    command: list[str],
    log_path: Path,
    output_dir: "str | Path",
    label: str,
    cwd: "str | Path | None" = None,
    env: dict[str, str] | None = None,
) -> int:
    r"""Run `command` with stdout and stderr in `log_path`, showing its progress; return its exit status.

    Interrupting (Ctrl-C) stops the job too, so that no orphan keeps training.
    """
    progress = ProgressLine(label)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                time.sleep(POLL_SECONDS)
                progress.show(*read_progress(output_dir))

            progress.show(*read_progress(output_dir))  # where it ended, however fast it was
        except BaseException:
            process.terminate()
            process.wait()
            raise
        finally:
            progress.close()

    return process.returncode
