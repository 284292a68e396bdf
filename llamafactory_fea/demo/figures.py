r"""What the demo's stages learned, read from their own logs: the summary it prints and the curves it draws."""

from dataclasses import dataclass, field
from pathlib import Path

from ..data.files import atomic_write
from ..progress import TRAINER_LOG, log_records
from ..train.synth.report import SynthesisPass, read_passes
from .sampling import FORMAT_RATES


CURVES = "curves.png"


def quarter_means(values: list[float]) -> tuple[float, float]:
    r"""Means of the first and the last quarter of a series (at least one value each).

    >>> quarter_means([0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9])
    (0.05, 0.8)
    """
    size = max(1, len(values) // 4)
    return round(sum(values[:size]) / size, 6), round(sum(values[-size:]) / size, 6)


@dataclass
class DemoFigures:
    r"""The series the demo's runs logged: SFT losses and format rates, GRPO rewards, synthesis passes."""

    sft_loss: list[tuple[float, float]] = field(default_factory=list)  # (epoch, loss)
    format_rate: list[tuple[float, float]] = field(default_factory=list)  # (epoch, share well formed)
    rewards: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # name: (step, mean); "total" too
    passes: list[SynthesisPass] = field(default_factory=list)

    @classmethod
    def read(cls, sft_dir: Path, grpo_dir: Path, synth_dir: Path) -> "DemoFigures":
        r"""The series of the three stages' output folders."""
        figures = cls()
        for record in log_records(sft_dir / TRAINER_LOG):
            if "loss" in record:
                figures.sft_loss.append((record.get("epoch", 0.0), record["loss"]))

        figures.format_rate = [
            (record["epoch"], record["format_rate"]) for record in log_records(sft_dir / FORMAT_RATES)
        ]
        for record in log_records(grpo_dir / TRAINER_LOG):
            step = record.get("current_steps", len(figures.rewards.get("total", [])) + 1)
            for key, value in record.items():
                if key == "reward" or (key.startswith("rewards/") and key.endswith("/mean")):
                    name = "total" if key == "reward" else key.split("/")[1]
                    figures.rewards.setdefault(name, []).append((step, value))

        figures.passes = read_passes(synth_dir)
        return figures

    def summary(self) -> list[str]:
        r"""One line per stage: what its own logs say it learned."""
        lines = []
        if self.sft_loss:
            lines.append(f"stage 1 (SFT): loss {self.sft_loss[0][1]:.3g} -> {self.sft_loss[-1][1]:.3g}")

        if self.format_rate:
            rates = ", ".join(f"{rate:.0%} (epoch {epoch:g})" for epoch, rate in self.format_rate)
            lines.append(f"stage 1 (SFT): well-formed answers sampled at temperature 1: {rates}")

        for name, series in self.rewards.items():
            first, last = quarter_means([value for _, value in series])
            lines.append(f"stage 2 (GRPO): {name} reward, mean of the first quarter {first:.3f} -> last {last:.3f}")

        for number, synthesis_pass in enumerate(self.passes, start=1):
            lines.append(
                f"stage 3 (synthesis) pass {number}: kept {synthesis_pass.kept} of {synthesis_pass.generated} generated"
            )

        return lines

    def write_png(self, path: Path) -> Path:
        r"""Four panels (SFT loss, format rate, GRPO rewards, synthesis kept share) as a PNG, written atomically."""
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 4, figsize=(16, 3.6), constrained_layout=True)
        loss, rate, reward, kept = axes
        if self.sft_loss:
            loss.plot(*zip(*self.sft_loss), color="tab:blue")
        loss.set(title="Stage 1: SFT loss", xlabel="epoch", ylabel="loss")
        if self.format_rate:
            rate.plot(*zip(*self.format_rate), marker="o", color="tab:green")
        rate.set(title="Stage 1: well-formed samples", xlabel="epoch", ylabel="share (temperature 1)", ylim=(0, 1.05))
        for name, series in self.rewards.items():
            style = {"linewidth": 2.5, "color": "black"} if name == "total" else {"linewidth": 1, "alpha": 0.8}
            reward.plot(*zip(*series), label=name, **style)
        reward.set(title="Stage 2: GRPO rewards", xlabel="step", ylabel="mean reward")
        if self.rewards:
            reward.legend(fontsize=7, loc="lower right")
        shares = [p.kept / p.generated if p.generated else 0.0 for p in self.passes]
        kept.bar([str(number) for number in range(1, len(shares) + 1)], shares, color="tab:purple")
        for number, (share, synthesis_pass) in enumerate(zip(shares, self.passes)):
            kept.annotate(f"{synthesis_pass.kept}/{synthesis_pass.generated}", (number, share),
                          ha="center", va="bottom", fontsize=8)  # fmt: skip
        kept.set(title="Stage 3: synthesis kept", xlabel="pass", ylabel="share kept", ylim=(0, 1.05))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
        plt.close(figure)
        atomic_write(path, buffer.getvalue())
        return path
