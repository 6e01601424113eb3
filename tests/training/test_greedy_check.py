"""The before/after figure of a retraining run, on the tiny reasoner tuned to always give one answer."""

import numpy as np
import pytest

from monailabel_app.data.sample import GroundingSample
from monailabel_app.training.config import HOSPITAL_PRESET
from monailabel_app.training.greedy_check import mean_greedy_reward

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def sample_with_truth(truth: dict) -> GroundingSample:
    picture = np.full((112, 140, 3), 90, np.uint8)  # multiples of 28 within the tiny processor's bounds: no resize
    return GroundingSample("s", picture, "Where is it?", truth)


def test_the_reasoners_own_answer_as_truth_scores_full_marks_and_a_far_box_less(format_tuned_reasoner_dir):
    config = HOSPITAL_PRESET.replace(max_new_tokens=120)
    own = {"bbox_2d": [30, 40, 90, 100], "point_2d": [[50, 60], [70, 80]]}  # DEFAULT_ANSWER_TEXT's box and points
    far = {"bbox_2d": [100, 5, 130, 20], "point_2d": [[110, 10], [120, 15]]}
    assert mean_greedy_reward(str(format_tuned_reasoner_dir), [sample_with_truth(own)], config) == 4.0
    # format still perfect (2.0), IoU 0 (the smooth log's floor 0.1 x 0.7 x ...), points disjoint: far below 4
    assert 2.0 <= mean_greedy_reward(str(format_tuned_reasoner_dir), [sample_with_truth(far)], config) < 2.5
