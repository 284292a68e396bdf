r"""The plugin's training stages, each in its own subpackage whose `__init__` declares it (see `plugin.py`)."""

from . import grpo, synth  # noqa: F401  (light: the declarations, in LLaMA Board's order)
