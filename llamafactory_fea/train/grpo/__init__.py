r"""The `grpo` stage: GRPO with Facial-R1's rewards on TRL's GRPOTrainer (see README.md; light to import)."""
