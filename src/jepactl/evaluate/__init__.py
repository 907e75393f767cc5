"""Evaluation: the only place that trains probes and heads (probe, finetune, embed)."""
