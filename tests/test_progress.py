r"""The demo and the loop show a running job's progress from the files it writes."""

import io
import json
import sys
from pathlib import Path

from llamafactory_fea.progress import ProgressLine, read_progress, run_job


JOB = r"""
import json, sys
from pathlib import Path
print("a line for the log")
with open(Path(sys.argv[1]) / "trainer_log.jsonl", "a") as log:
    for step in range(1, 5):
        log.write(json.dumps({"current_steps": step, "total_steps": 4, "percentage": step * 25.0, "loss": 1.0 / step}))
        log.write("\n")
sys.exit(3)
"""


def test_a_job_runs_with_its_output_in_the_log_and_its_last_progress_shown(tmp_path: Path, capsys):
    code = run_job([sys.executable, "-c", JOB, str(tmp_path)], tmp_path / "run.log", tmp_path, "[demo] stage 1: SFT")
    assert code == 3
    assert (tmp_path / "run.log").read_text() == "a line for the log\n"
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "[demo] stage 1: SFT: step 4/4 (100%), loss 0.25"


def test_progress_of_synthesis_counts_journal_lines(tmp_path: Path):
    assert read_progress(tmp_path / "missing") == ("starting", None)
    journal = tmp_path / "pass_1" / "synth_journal.rank0.jsonl"
    journal.parent.mkdir()
    journal.write_text("".join(json.dumps({"key": str(i)}) + "\n" for i in range(7)))
    assert read_progress(tmp_path) == ("7 samples synthesized", None)


def test_without_a_terminal_a_line_is_printed_per_further_tenth():
    stream = io.StringIO()
    line = ProgressLine("[loop] round_1/sft", stream)
    for fraction in (0.01, 0.05, 0.12, 0.15, 0.31, 0.31, 1.0):
        line.show(f"{fraction:.0%}", fraction)

    line.show("samples", None)
    line.close()
    assert stream.getvalue().splitlines() == [
        "[loop] round_1/sft: 12%",
        "[loop] round_1/sft: 31%",
        "[loop] round_1/sft: 100%",
    ]
