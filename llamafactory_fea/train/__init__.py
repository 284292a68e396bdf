r"""The plugin's training stages, each in its own subpackage whose `__init__` declares it (see `plugin.py`)."""

# light: the declarations (LLaMA Board's order: grpo, synth, empo) and the fea_prompt_set key of every stage
from . import empo, grpo, prompt_set, synth  # noqa: F401
