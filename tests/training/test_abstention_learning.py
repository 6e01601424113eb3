"""GRPO learns "not in this image": a seeded run on toy pictures with the same question for positives (a bright square,
its box the truth) and negatives (noise only, a saved "no finding"), with `abstain_reward` on and the abstain
template. Greedy answers on 20 held-out pictures of each kind, before and after: before, it abstains on none; after,
it abstains on at least 80 % of negatives and answers with the square's box (IoU >= 0.5) on at least 80 % of
positives. The warm start it
needs is explained in `support/abstention_toys.py`. Seeded, on one CPU thread: a run repeats its numbers on the same
machine and library versions (seeds 0 to 4 all passed here).
"""

from __future__ import annotations

import pytest

from monailabel_app.training.run import train_reasoner
from tests.support import abstention_toys as toys
from tests.support.grpo_toys import tiny_config

pytestmark = pytest.mark.slow


def test_grpo_learns_to_abstain_on_negatives_and_answer_on_positives(tmp_path, one_torch_thread):
    warm = toys.warm_start(tmp_path / "warm", steps=400, seed=0, abstain_share=0.3)
    before = toys.rates(warm)
    config = tiny_config(
        template="abstain",
        think=True,
        abstain_reward=1.0,
        group_size=8,
        prompts_per_step=4,
        mini_batch_prompts=4,
        micro_batch_size=8,
        max_new_tokens=64,
        temperature=1.0,
        kl_coef=0.0,
        lr=2e-4,
        epochs=100,
        max_steps=40,
        save_every_steps=1000,
        seed=1,
    )
    result = train_reasoner(toys.training_samples(16, seed=1), config, warm, tmp_path / "grpo")
    after = toys.rates(tmp_path / "grpo" / "reasoner")
    print(f"before {before}, after {after}, reward curve {[round(r, 2) for r in result['reward_curve']]}")
    assert before["negatives abstained"] <= 0.2 and before["positives answered"] >= 0.8  # nothing learnt yet
    assert after["negatives abstained"] >= 0.8 and after["positives answered"] >= 0.8
