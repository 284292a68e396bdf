r"""FEA data in LLaMA-Factory's format: records, registration, converters and validation."""
