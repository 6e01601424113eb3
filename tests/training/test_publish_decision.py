"""What a retraining says it did: what ended it (epochs, or max_steps as a cap, or a stop), and why its reasoner was
published or not, in words an admin reads in `/info`'s train stats."""

from __future__ import annotations

from monailabel_app.training.config import GRPOConfig
from monailabel_app.training.retraining import publish_decision, what_ended

SKIPPED = {"status": "skipped", "reason": "too few labels"}


def test_a_run_says_max_steps_is_a_cap_when_its_epochs_ended_it():
    config = GRPOConfig(max_steps=20, epochs=5, prompts_per_step=1, mini_batch_prompts=1)
    ended = what_ended({"status": "completed", "steps_done": 5, "total_steps": 5}, config, num_samples=1)
    assert ended == "its epochs: 5 epochs of 1 step(s) over 1 sample(s) = 5 steps; max_steps 20 is a cap, not a target"
    capped = what_ended({"status": "completed", "steps_done": 3}, config.replace(max_steps=3), num_samples=1)
    assert capped == "max_steps: 3 steps done, before the end of its 5 epochs"
    stopped = what_ended({"status": "stopped", "steps_done": 2, "total_steps": 5}, config, num_samples=1)
    assert stopped == "stopped on request after 2 of 5 steps"


def test_with_too_few_labels_a_run_whose_reward_fell_is_not_published_unless_forced():
    fell = {"greedy_reward_before": 3.04, "greedy_reward_after": 2.89}
    why, publish = publish_decision(SKIPPED, fell, min_held_out=30, force=False)
    assert not publish and why.startswith("not published: mean greedy reward on the saved labels 3.04 -> 2.89")
    assert "force_publish" in why
    why, publish = publish_decision(SKIPPED, fell, min_held_out=30, force=True)
    assert publish and why.startswith("published because force_publish was set")
    why, publish = publish_decision(SKIPPED, {"greedy_reward_before": 2.0, "greedy_reward_after": 2.5}, 30, False)
    assert publish and "rose" in why
    same = {"greedy_reward_before": 2.0, "greedy_reward_after": 2.0}
    assert publish_decision(SKIPPED, same, 30, False)[1] is False  # did not rise: equal is not better


def test_the_held_out_check_decides_when_there_are_enough_labels():
    assert publish_decision({"status": "refused"}, {}, 30, force=True) == (
        "not published: worse than the reasoner it started from on held-out labels (publish_check)",
        False,
    )
    assert publish_decision({"status": "passed"}, {}, 30, force=False)[1] is True
    assert publish_decision(SKIPPED, {}, 0, force=False) == ("published: the publish check is turned off", True)
