"""A GRPO run on CPU through DeepSpeed with one or more ranks: `python tests/support/deepspeed_ranks.py DATA MODEL OUT
ZERO_STAGE DEVICES SEED [--resume] [KEY=VALUE ...]`.

The command line can't pick the test-only CPU DeepSpeed strategy, so this script stands in for it; Lightning starts
the other ranks by running this same script again (its subprocess launcher), as it runs the command line on GPUs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monailabel_app.data.load_report import LoadReport  # noqa: E402
from monailabel_app.data.loaders import load_samples  # noqa: E402
from monailabel_app.training.run import load_config, train_reasoner  # noqa: E402
from tests.support.cpu_deepspeed import cpu_deepspeed_strategy  # noqa: E402


def main(argv: list[str]) -> None:
    data, model, out, zero_stage, devices, seed, *rest = argv
    resume = "--resume" in rest
    overrides = [f"zero_stage={zero_stage}", f"devices={devices}", f"seed={seed}"] + [a for a in rest if "=" in a]
    config = load_config("hospital", overrides)
    samples = load_samples(data, LoadReport())
    train_reasoner(samples, config, model, out, resume=resume, strategy=cpu_deepspeed_strategy(config))


if __name__ == "__main__":
    main(sys.argv[1:])
