"""The check before a retrained reasoner is published: held-out labels split by label, both reasoners answering them
greedily, a worse one refused, and a site with too few labels told the check was skipped."""

from __future__ import annotations

import dataclasses

import pytest

from monailabel_app.training.config import HOSPITAL_PRESET
from monailabel_app.training.publish_check import check_before_publish, label_of, skipped, split_held_out
from tests.grounding_datasets import lesion_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
CONFIG = HOSPITAL_PRESET.replace(max_new_tokens=96)  # the format-tuned toy's answer is about 70 tokens


def volume_slices(labels: int, slices: int = 3):
    """Samples as a volume datastore gives them: "<label>:z<k>" per labelled slice."""
    sample = lesion_samples(1, pictures=1)[0]
    return [
        dataclasses.replace(sample, sample_id=f"label-{label}:z{k}") for label in range(labels) for k in range(slices)
    ]


def test_too_few_labels_hold_nothing_out_and_say_so():
    samples = volume_slices(40)  # 40 labels hold out 8 < 30
    training, held_out = split_held_out(samples)
    assert training == samples and held_out == []
    assert "40 saved labels would hold out 8; the check needs at least 30" in skipped(samples)["reason"]


def test_held_out_labels_keep_a_volumes_slices_together_and_are_seeded():
    samples = volume_slices(20)
    training, held_out = split_held_out(samples, min_held_out=2)
    held_labels = {label_of(sample) for sample in held_out}
    assert len(held_labels) == 4 and len(held_out) == 12 and len(training) == 48
    assert held_labels.isdisjoint(label_of(sample) for sample in training)
    assert split_held_out(samples, min_held_out=2)[1] == held_out  # the same split every run
    assert split_held_out(samples, min_held_out=0)[1] == []  # 0 turns the check off


def test_a_worse_reasoner_is_refused_and_a_better_or_equal_one_passes(tiny_reasoner_dir, format_tuned_reasoner_dir):
    held_out = lesion_samples(12, pictures=3)  # the format-tuned toy's fixed box overlaps these lesions
    tuned, untrained = str(format_tuned_reasoner_dir), str(tiny_reasoner_dir)  # the untrained one never grounds
    worse = check_before_publish(tuned, untrained, held_out, CONFIG)
    assert worse["status"] == "refused" and worse["iou_after"] == 0 and worse["iou_before"] > 10
    assert worse["held_out"] == 12 and worse["wilcoxon_p"] < 0.05 and worse["wins_ties_losses"][0] == 0
    better = check_before_publish(untrained, tuned, held_out, CONFIG)
    assert better["status"] == "passed" and better["iou_after"] == worse["iou_before"]
    same = check_before_publish(tuned, tuned, held_out, CONFIG)
    assert same["status"] == "passed" and same["wilcoxon_p"] == 1.0 and same["wins_ties_losses"] == [0, 12, 0]
