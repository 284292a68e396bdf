r"""The converter registry and the report every conversion gives (counts read, written, rejected with reasons)."""

import argparse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ConversionReport:
    r"""What a conversion did: records read, written per split, and each rejected record with its reason."""

    source: str
    read: int = 0
    written: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)

    def reject(self, error: Exception) -> None:
        r"""Record a rejected input with its reason (the error names file, line and fix)."""
        self.rejected.append(str(error))

    def reasons(self) -> Counter:
        r"""Rejections counted by reason (the text after the location)."""
        return Counter(message.split(": ", 1)[-1].split(":")[0] for message in self.rejected)

    def summary(self) -> str:
        r"""A few lines for people: counts, then every rejected record."""
        written = ", ".join(f"{split} {count}" for split, count in self.written.items()) or "none"
        lines = [f"{self.source}: read {self.read}, written {written}, rejected {len(self.rejected)}."]
        lines += [f"  rejected {message}" for message in self.rejected]
        if self.registered:
            lines.append(f"  registered datasets: {', '.join(self.registered)}")

        return "\n".join(lines)


@dataclass(frozen=True)
class Converter:
    r"""A source dataset converter: its command-line options and the function that runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], ConversionReport]


CONVERTERS: dict[str, Converter] = {}


def register_converter(converter: Converter) -> Converter:
    r"""Register a converter under its name; duplicates are refused."""
    if converter.name in CONVERTERS:
        raise ValueError(f"Converter {converter.name} already exists.")

    CONVERTERS[converter.name] = converter
    return converter
