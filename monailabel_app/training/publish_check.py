"""Before a retrained reasoner replaces the one clinicians use: is it worse on labels it never trained on?

When a site has enough saved labels, a seeded share of them (whole labels: every slice of one volume stays on one
side) is held out of training. After the run, the reasoner it started from (A) and the new one (B) answer every held-out
question greedily; box IoU per sample (an unusable answer scores 0) is compared with the paired tests of
`core.statistics`. The new reasoner is **refused** (not published) only when it is worse with both the Wilcoxon
signed-rank test and the paired bootstrap at p < `ALPHA`; otherwise it is published as before.

With fewer than `MIN_HELD_OUT` held-out labels the tests can't tell a worse reasoner from noise, so no label is held
out (all train) and the check is recorded as skipped, saying why. The figures go into the run's stats (`/info`).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

from monailabel_app.core.statistics import paired_test
from monailabel_app.data.sample import GroundingSample
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.greedy_check import greedy_box_ious

MIN_HELD_OUT = 30  # held-out labels the check needs; with the share below, a site needs 150 saved labels
HELD_OUT_SHARE = 0.2
ALPHA = 0.05
SPLIT_SEED = 0


def label_of(sample: GroundingSample) -> str:
    """Slices of one saved volume label ("<label>:z<k>") belong to that label."""
    return sample.sample_id.split(":z", 1)[0]


def split_held_out(
    samples: Sequence[GroundingSample], min_held_out: int = MIN_HELD_OUT, share: float = HELD_OUT_SHARE
) -> tuple[list[GroundingSample], list[GroundingSample]]:
    """(training samples, held-out samples); nothing is held out when fewer than `min_held_out` labels would be."""
    labels = sorted({label_of(sample) for sample in samples})
    held_count = math.ceil(share * len(labels))
    if min_held_out <= 0 or held_count < min_held_out:
        return list(samples), []
    held = set(random.Random(SPLIT_SEED).sample(labels, held_count))
    return [s for s in samples if label_of(s) not in held], [s for s in samples if label_of(s) in held]


def skipped(samples: Sequence[GroundingSample], min_held_out: int = MIN_HELD_OUT) -> dict:
    labels = len({label_of(sample) for sample in samples})
    return {
        "status": "skipped",
        "reason": f"{labels} saved labels would hold out {math.ceil(HELD_OUT_SHARE * labels)}; the check needs at "
        f"least {min_held_out} (about {math.ceil(min_held_out / HELD_OUT_SHARE)} saved labels), so all trained "
        "and the new reasoner was published unchecked",
    }


def check_before_publish(
    base_reasoner: str, new_reasoner: str, held_out: Sequence[GroundingSample], config: GRPOConfig
) -> dict:
    """{"status": "passed" | "refused", the held-out IoU before and after, both p-values, the rule}."""
    before = greedy_box_ious(base_reasoner, held_out, config)
    after = greedy_box_ious(new_reasoner, held_out, config)
    test = paired_test(before, after)
    worse = test.mean_difference < 0 and test.wilcoxon_p < ALPHA and test.bootstrap_p < ALPHA
    return {
        "status": "refused" if worse else "passed",
        "held_out": test.count,
        "iou_before": round(100 * test.mean_a, 2),
        "iou_after": round(100 * test.mean_b, 2),
        "wilcoxon_p": test.wilcoxon_p,
        "bootstrap_p": test.bootstrap_p,
        "wins_ties_losses": [test.wins, test.ties, test.losses],
        "rule": f"refused when held-out box IoU is lower with Wilcoxon and paired bootstrap p < {ALPHA}",
    }
