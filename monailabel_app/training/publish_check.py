"""Before a retrained reasoner replaces the one clinicians use: is it worse on labels it never trained on?

Held-out labels: a label is held out when a hash of its id falls in the held-out fifth (`HELD_OUT_BUCKETS`), so a
label stays on the same side in every retraining as the site's labels grow: once the check is on, no later run
trains on a held-out label (runs from before, with too few labels to hold any out, trained on all of them, so the
first checked run's starting reasoner may have seen some). Every slice of a volume label goes with its label.

After the run, the reasoner it started from (A) and the new one (B) answer one question per held-out label (its
middle slice: slices of one volume are not independent evidence) greedily, for at most `MAX_CHECK_LABELS`
labels, which bounds the check's time to two reasoners answering 100 questions each. Box IoU per label (an unusable
answer scores 0) is compared with the paired tests of `core.statistics`. The new reasoner is **refused** (not
published) only when it is worse with both the Wilcoxon signed-rank test and the paired bootstrap at p < `ALPHA`;
otherwise it is published as before.

With fewer than `MIN_HELD_OUT` held-out labels the tests can't tell a worse reasoner from noise, so no label is held
out (all train) and the check is recorded as skipped, saying why. The figures go into the run's stats (`/info`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Sequence

from monailabel_app.core.statistics import paired_test
from monailabel_app.data.sample import GroundingSample
from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.greedy_check import greedy_box_ious

MIN_HELD_OUT = 30  # held-out labels the check needs; about a fifth are held out, so about 150 usable saved labels
HELD_OUT_BUCKETS = 5  # a label is held out when its hash is 0 modulo this: about one in five
MAX_CHECK_LABELS = 100
ALPHA = 0.05


def label_of(sample: GroundingSample) -> str:
    """Slices of one saved volume label ("<label>:z<k>") belong to that label."""
    return sample.sample_id.split(":z", 1)[0]


def is_held_out(label: str) -> bool:
    digest = hashlib.sha256(label.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_BUCKETS == 0


def split_held_out(
    samples: Sequence[GroundingSample], min_held_out: int = MIN_HELD_OUT
) -> tuple[list[GroundingSample], list[GroundingSample]]:
    """(training samples, held-out samples); nothing is held out when fewer than `min_held_out` labels would be
    (or `min_held_out` is 0: the check is off)."""
    held_labels = {label_of(sample) for sample in samples if is_held_out(label_of(sample))}
    if min_held_out <= 0 or len(held_labels) < min_held_out:
        return list(samples), []
    return [s for s in samples if label_of(s) not in held_labels], [s for s in samples if label_of(s) in held_labels]


def skipped(samples: Sequence[GroundingSample], min_held_out: int = MIN_HELD_OUT) -> dict:
    labels = {label_of(sample) for sample in samples}
    if min_held_out <= 0:
        return {"status": "skipped", "reason": "the publish check is turned off; the new reasoner was published"}
    held = sum(is_held_out(label) for label in labels)
    return {
        "status": "skipped",
        "reason": f"{len(labels)} usable saved labels would hold out {held}; the check needs at least {min_held_out} "
        f"(about {min_held_out * HELD_OUT_BUCKETS} usable labels), so all trained and the new reasoner was published "
        "unchecked",
    }


def one_slice_per_label(held_out: Sequence[GroundingSample], limit: int = MAX_CHECK_LABELS) -> list[GroundingSample]:
    """The middle slice of each held-out label, for at most `limit` labels (in label order, so runs agree)."""
    slices: dict[str, list[GroundingSample]] = defaultdict(list)
    for sample in held_out:
        slices[label_of(sample)].append(sample)
    chosen = sorted(slices)[:limit]
    return [slices[label][len(slices[label]) // 2] for label in chosen]


def check_before_publish(
    base_reasoner: str, new_reasoner: str, held_out: Sequence[GroundingSample], config: GRPOConfig
) -> dict:
    """{"status": "passed" | "refused", the held-out IoU before and after, both p-values, the rule}."""
    questions = one_slice_per_label(held_out)
    before = greedy_box_ious(base_reasoner, questions, config)
    after = greedy_box_ious(new_reasoner, questions, config)
    test = paired_test(before, after)
    worse = test.mean_difference < 0 and test.wilcoxon_p < ALPHA and test.bootstrap_p < ALPHA
    return {
        "status": "refused" if worse else "passed",
        "held_out_labels": test.count,
        "iou_before": round(100 * test.mean_a, 2),
        "iou_after": round(100 * test.mean_b, 2),
        "wilcoxon_p": test.wilcoxon_p,
        "bootstrap_p": test.bootstrap_p,
        "wins_ties_losses": [test.wins, test.ties, test.losses],
        "rule": f"refused when held-out box IoU is lower with Wilcoxon and paired bootstrap p < {ALPHA}",
    }
