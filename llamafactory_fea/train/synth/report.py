r"""The synthesis report: per pass, generated, kept, rejected by reason, skipped, retries, acceptance rate, truncations.

`completions` counts every attempt (first tries and retries), `truncated` those that stopped at `max_new_tokens`
(as the engine says: `Completion.truncated`), `labels` the samples generated and kept by the labels they have
(`both`, `emotion`, `aus`).

A synthesis *pass* is one pass over labelled datasets, registered as one dataset (it may take several runs:
the journal resumes it). A *round* is the loop's SFT -> GRPO -> synthesis (`llamafactory_fea.loop`).
"""

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...data.files import atomic_write


REPORT_JSON = "synth_report.json"
REPORT_TEXT = "synth_report.md"


@dataclass
class SynthesisPass:
    r"""What one synthesis pass did (counts over the whole journal, across restarts and ranks)."""

    name: str
    datasets: list[str]
    samples: int = 0
    processed: int = 0
    generated: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    kept_after_retry: int = 0
    completions: int = 0
    truncated: int = 0
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    acceptance_rate: float = 0.0
    complete: bool = False
    dataset_name: str | None = None
    dataset_file: str | None = None
    registered_in: str | None = None
    seconds: float = 0.0
    samples_per_second: float = 0.0

    @classmethod
    def from_entries(
        cls, name: str, datasets: list[str], samples: int, entries: list[dict[str, Any]]
    ) -> "SynthesisPass":
        r"""Count the journal entries of a pass."""
        statuses = Counter(entry["status"] for entry in entries)
        rejected = Counter(entry["reason"] for entry in entries if entry["status"] == "rejected")
        skipped = Counter(entry["reason"] for entry in entries if entry["status"] == "skipped")
        kept = statuses["kept"]
        generated = kept + statuses["rejected"]
        labels: dict[str, dict[str, int]] = {}
        for entry in entries:
            if entry["status"] != "skipped":
                counts = labels.setdefault(entry.get("labels", "both"), {"generated": 0, "kept": 0})
                counts["generated"] += 1
                counts["kept"] += entry["status"] == "kept"
        return cls(
            name=name,
            datasets=datasets,
            samples=samples,
            processed=len(entries),
            generated=generated,
            kept=kept,
            rejected=dict(rejected.most_common()),
            skipped=dict(skipped.most_common()),
            retries=sum(entry["retries"] for entry in entries),
            kept_after_retry=sum(1 for entry in entries if entry["status"] == "kept" and entry["retries"] > 0),
            completions=sum(entry["attempts"] for entry in entries),
            truncated=sum(entry.get("truncated", 0) for entry in entries),
            labels=dict(sorted(labels.items())),
            acceptance_rate=kept / generated if generated else 0.0,
            complete=len(entries) == samples,
        )

    def summary(self) -> str:
        r"""A few readable lines."""
        status = "" if self.complete else f" (incomplete: {self.processed} of {self.samples} processed, run again)"
        lines = [
            f"Synthesis pass {self.name!r} on {', '.join(self.datasets)}{status}:",
            f"  generated {self.generated}, kept {self.kept} ({self.acceptance_rate:.1%}), "
            f"rejected {sum(self.rejected.values())}, skipped {sum(self.skipped.values())}",
        ]
        if self.rejected:
            lines.append("  rejected by reason: " + ", ".join(f"{k} {v}" for k, v in self.rejected.items()))
        if self.skipped:
            lines.append("  skipped by reason: " + ", ".join(f"{k} {v}" for k, v in self.skipped.items()))

        lines.append(f"  retries used {self.retries}; kept after a retry {self.kept_after_retry}")
        if len(self.labels) > 1 or set(self.labels) - {"both"}:
            kinds = {"both": "emotion and AUs", "emotion": "emotion only", "aus": "AUs only"}
            lines.append(
                "  by labels: "
                + ", ".join(
                    f"{kinds.get(kind, kind)} kept {counts['kept']} of {counts['generated']}"
                    for kind, counts in self.labels.items()
                )
            )

        if self.truncated:
            lines.append(
                f"  truncated: {self.truncated} of {self.completions} completions stopped at `max_new_tokens` "
                "(raise it if reasoning is cut)"
            )
        else:
            lines.append(f"  truncated: none of {self.completions} completions stopped at `max_new_tokens`")

        if self.seconds:
            lines.append(f"  this run: {self.seconds:.1f} s, {self.samples_per_second:.2f} samples/s")
        if self.registered_in:
            lines.append(
                f"  dataset {self.dataset_name!r} -> {self.dataset_file} (registered in {self.registered_in})"
            )
        elif self.dataset_file:
            lines.append(f"  no sample kept: {self.dataset_file} written, dataset not registered")

        return "\n".join(lines)


def read_passes(report_dir: "str | Path") -> list[SynthesisPass]:
    r"""The passes of an existing report in a folder (none if there is no report)."""
    path = Path(report_dir) / REPORT_JSON
    if not path.is_file():
        return []

    report = json.loads(path.read_text(encoding="utf-8"))
    return [
        SynthesisPass(**item) for item in report.get("passes", report.get("rounds", []))
    ]  # "rounds": older reports


def write_report(report_dir: "str | Path", synthesis_pass: SynthesisPass) -> list[SynthesisPass]:
    r"""Add (or replace, by name) a pass in the folder's JSON and readable reports, atomically; return all passes."""
    passes = [item for item in read_passes(report_dir) if item.name != synthesis_pass.name] + [synthesis_pass]
    report = {"passes": [asdict(item) for item in passes]}
    atomic_write(Path(report_dir) / REPORT_JSON, json.dumps(report, indent=2) + "\n")
    text = "# Synthesis report\n\n" + "\n\n".join(item.summary() for item in passes) + "\n"
    atomic_write(Path(report_dir) / REPORT_TEXT, text)
    return passes
