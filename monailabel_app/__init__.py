"""MedReasoner core: implicit-query grounding (reasoner + frozen promptable segmenter), rewards, GRPO, data, metrics.

This package never imports the MONAI Label server; `lib/` holds the thin MONAI Label adapters.
"""
