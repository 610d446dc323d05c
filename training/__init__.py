"""Training utilities for spawnjoin: data generation, tokenizer, and (later) SFT, GRPO and evaluation.

Importing this package never imports torch; subcommand modules import heavy libraries inside ``run``.
"""
