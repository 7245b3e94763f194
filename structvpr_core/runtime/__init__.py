"""Inference: image -> descriptor encoders (trained checkpoints and baselines)."""
