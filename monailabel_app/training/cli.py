"""`python -m monailabel_app.train`, the GRPO command line (see `training/run.py` for what a run does and writes).

    python -m monailabel_app.train --config hospital --data train.parquet --model /models/Lingshu-7B --output runs/site

`--config` is a preset (`paper`, `hospital`: `training/presets/`) or a YAML/JSON file; `--set key=value` changes one
setting. A parquet data set is read lazily (a sample is decoded when a step needs it); a folder or a datastore's
labels are read whole. A mistake of the user's (a setting, a missing file or model) prints `error: ...` and exits with
status 2; a failed run exits with 1 and says why in `OUTPUT/result.json`. Lightning, DeepSpeed and the model load only
once the arguments are known, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from monailabel_app.core.errors import RequestError, UnavailableError

logger = logging.getLogger(__name__)
USER_ERRORS = (RequestError, UnavailableError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monailabel_app.train", description="GRPO training of the MedReasoner grounding reasoner."
    )
    parser.add_argument("--config", required=True, help="a preset (paper | hospital) or a YAML/JSON config file")
    parser.add_argument("--data", required=True, help="a U-MRG parquet file, or a folder with an index.json")
    parser.add_argument("--model", required=True, help="Qwen2.5-VL checkpoint folder (or hub id) to start from")
    parser.add_argument("--output", required=True, help="run folder: checkpoints, logs, progress, the trained model")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.ckpt if present")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stop-file", help="create this file to stop after the current step")
    parser.add_argument("--allow-download", action="store_true", help="let a hub id download the model")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from monailabel_app.data.load_report import LoadReport
    from monailabel_app.training.run import RESULT_FILE, load_config, train_reasoner, write_failure

    output_dir, started, report = Path(args.output), time.perf_counter(), LoadReport()
    try:
        config = load_config(args.config, args.overrides)
        samples = training_samples(args.data, report)
        result = train_reasoner(
            samples,
            config,
            args.model,
            output_dir,
            resume=args.resume,
            stop_file=args.stop_file,
            allow_download=args.allow_download,
        )
    except USER_ERRORS as error:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_failure(output_dir, error, started)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception:
        logger.exception("GRPO training failed; see %s", output_dir / RESULT_FILE)
        return 1
    finally:
        logger.info("training data: %s", report.summary())
    print(json.dumps({k: v for k, v in result.items() if k != "reward_curve"}, indent=2))
    return 0


def training_samples(data: str, report):
    """A parquet as a lazy sequence of its usable rows; anything else through `load_samples`."""
    from monailabel_app.data.loaders import load_samples
    from monailabel_app.data.umrg_parquet import UmrgParquet

    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".parquet":
        return UmrgParquet(path).usable(report)
    return load_samples(data, report)
