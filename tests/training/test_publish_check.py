"""The check before a retrained reasoner is published: held-out labels chosen by a stable hash (a volume's slices
together), one question per label, both reasoners answering greedily, a worse one refused, and a site with too few
labels told the check was skipped."""

from __future__ import annotations

import dataclasses

import pytest

from monailabel_app.training.config import HOSPITAL_PRESET
from monailabel_app.training.publish_check import (
    check_before_publish,
    is_held_out,
    label_of,
    one_slice_per_label,
    skipped,
    split_held_out,
)
from tests.support.grounding_datasets import lesion_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
CONFIG = HOSPITAL_PRESET.replace(max_new_tokens=96)  # the format-tuned toy's answer is about 70 tokens


def volume_slices(labels: int, slices: int = 3):
    """Samples as a volume datastore gives them: "<label>:z<k>" per labelled slice."""
    sample = lesion_samples(1, pictures=1)[0]
    return [
        dataclasses.replace(sample, sample_id=f"label-{label}:z{k}") for label in range(labels) for k in range(slices)
    ]


def test_too_few_labels_hold_nothing_out_and_say_so():
    samples = volume_slices(40)
    held = sum(is_held_out(f"label-{label}") for label in range(40))
    assert 0 < held < 30  # about a fifth
    training, held_out = split_held_out(samples)
    assert training == samples and held_out == []
    assert f"40 usable saved labels would hold out {held}; the check needs at least 30" in skipped(samples)["reason"]
    assert "turned off" in skipped(samples, min_held_out=0)["reason"]


def test_held_out_labels_keep_a_volumes_slices_together_and_stay_held_out_as_labels_grow():
    training, held_out = split_held_out(volume_slices(20), min_held_out=2)
    held_labels = {label_of(sample) for sample in held_out}
    assert held_labels == {f"label-{n}" for n in range(20) if is_held_out(f"label-{n}")} and len(held_labels) >= 2
    assert len(held_out) == 3 * len(held_labels) and len(training) + len(held_out) == 60
    assert held_labels.isdisjoint(label_of(sample) for sample in training)
    grown = {label_of(sample) for sample in split_held_out(volume_slices(200), min_held_out=2)[1]}
    assert held_labels <= grown  # a label held out once is held out in every later, larger run
    assert split_held_out(volume_slices(20), min_held_out=0)[1] == []  # 0 turns the check off


def test_one_question_per_held_out_label_its_middle_slice():
    asked = one_slice_per_label(volume_slices(4, slices=5), limit=3)
    assert [sample.sample_id for sample in asked] == ["label-0:z2", "label-1:z2", "label-2:z2"]


def test_a_worse_reasoner_is_refused_and_a_better_or_equal_one_passes(tiny_reasoner_dir, format_tuned_reasoner_dir):
    held_out = lesion_samples(12, pictures=3)  # the format-tuned toy's fixed box overlaps these lesions
    tuned, untrained = str(format_tuned_reasoner_dir), str(tiny_reasoner_dir)  # the untrained one never grounds
    worse = check_before_publish(tuned, untrained, held_out, CONFIG)
    assert worse["status"] == "refused" and worse["iou_after"] == 0 and worse["iou_before"] > 10
    assert worse["held_out_labels"] == 12 and worse["wilcoxon_p"] < 0.05 and worse["wins_ties_losses"][0] == 0
    better = check_before_publish(untrained, tuned, held_out, CONFIG)
    assert better["status"] == "passed" and better["iou_after"] == worse["iou_before"]
    same = check_before_publish(tuned, tuned, held_out, CONFIG)
    assert same["status"] == "passed" and same["wilcoxon_p"] == 1.0 and same["wins_ties_losses"] == [0, 12, 0]
