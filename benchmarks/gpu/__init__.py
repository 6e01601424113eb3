"""The parts of `benchmarks/gpu_suite.py`, the command that measures a GPU host (its docstring says why it is shaped
so). Read in this order: `plan` (sizes), `bench` and `measuring` (what rows share), `inputs` and `reasoner` (what is
measured), the rows (`reasoner_rows`, `segmenters`, `vllm_row`, `grpo`, `grpo_trl`, with `bandwidth` for the decode
floor), then `suite` (the run) and `table` (the markdown)."""
