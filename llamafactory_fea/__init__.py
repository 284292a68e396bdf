r"""Facial emotion analysis with explainable reasoning (Facial-R1) as LLaMA-Factory stages."""

__version__ = "0.1.0"
