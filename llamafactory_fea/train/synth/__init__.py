r"""Stage 3 of Facial-R1: reward-verified data synthesis (`stage: synth`), the synthesis callback and the loop.

Kept light: `args` is imported at every training start to take the plugin's YAML keys out.
"""
