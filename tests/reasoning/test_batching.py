"""Batched serving on tiny Qwen2.5-VL checkpoints built in code: concurrent questions share generate calls, and each
gets the answer it would have got alone (greedy, fp32, the padding masked)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from monailabel_app.reasoning.batching import BatchingReasoner
from monailabel_app.reasoning.prompt import build_prompt
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from tests.support.generate_spy import GenerateSpy

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

QUESTIONS = [
    "Which structure would explain the dull percussion note over the right lower chest?",
    "Where is the opacity?",
    "What explains the patient's right upper quadrant pain?",
    "Which lesion would a radiologist biopsy first?",
    "Where is the nodule?",
    "Which region explains the reduced breath sounds on the left?",
]
SIZES = [(180, 240), (240, 180), (300, 300), (150, 420), (200, 200), (260, 130)]


def pictures() -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, size=(*size, 3), dtype=np.uint8) for i, size in enumerate(SIZES)]


def ask_together(reasoner, images, prompts, samples=0, temperature=1.0):
    """Every question from its own thread, released at once, as concurrent requests reach the server."""
    answers, errors, start = [None] * len(images), [None] * len(images), threading.Barrier(len(images))

    def ask(i):
        start.wait()
        try:
            answers[i] = reasoner.generate_with_samples(images[i], prompts[i], samples, temperature)
        except Exception as error:  # noqa: BLE001 - the test looks at each request's own outcome
            errors[i] = error

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers, errors


@pytest.mark.parametrize("checkpoint", ["tiny_reasoner_dir", "format_tuned_reasoner_dir"])
def test_concurrent_questions_share_calls_and_get_their_unbatched_answers(checkpoint, request):
    inner = TransformersReasoner(request.getfixturevalue(checkpoint), max_new_tokens=40)
    images, prompts = pictures(), [build_prompt(q, True) for q in QUESTIONS]
    alone = [inner.generate(image, prompt) for image, prompt in zip(images, prompts)]
    batching = BatchingReasoner(inner, max_rows=8, window_s=1.0)
    try:
        with GenerateSpy(inner.model) as spy:
            answers, errors = ask_together(batching, images, prompts)
    finally:
        batching.close()
    assert errors == [None] * len(images)
    assert len(spy.rows) < len(images) and sum(spy.rows) == len(images)
    assert [a[0].text for a in answers] == [a.text for a in alone]  # a random-weight model too: any leak shows
    assert [a[0].frame for a in answers] == [a.frame for a in alone]
    assert max(a[0].batch_size for a in answers) > 1


def test_questions_with_confidence_batch_by_their_settings_and_keep_row_zero_greedy(tiny_reasoner_dir):
    """A random-weight model answers each picture differently, so rows given to the wrong question would show."""
    inner = TransformersReasoner(tiny_reasoner_dir, max_new_tokens=24)
    images, prompts = pictures()[:3], [build_prompt(q, True) for q in QUESTIONS[:3]]
    alone = [inner.generate(image, prompt).text for image, prompt in zip(images, prompts)]
    assert len(set(alone)) == 3
    batching = BatchingReasoner(inner, max_rows=9, window_s=1.0)
    torch.manual_seed(0)
    try:
        with GenerateSpy(inner.model) as spy:
            answers, errors = ask_together(batching, images, prompts, samples=2, temperature=0.7)
    finally:
        batching.close()
    assert errors == [None] * 3 and spy.rows == [9]  # three questions x (1 greedy + 2 samples), one call
    assert [a[0].text for a in answers] == alone and all(len(a) == 3 for a in answers)
    assert all(o.frame == a[0].frame for a in answers for o in a)  # each question's rows carry its own frame
    assert len({a[0].frame for a in answers}) == 3


def test_a_bad_input_fails_only_its_own_request(tiny_reasoner_dir):
    inner = TransformersReasoner(tiny_reasoner_dir, max_new_tokens=8)
    images, prompts = pictures()[:4], [build_prompt(q, True) for q in QUESTIONS[:4]]
    images[2] = images[2].astype(np.float32)  # not RGB uint8: the encoder refuses it
    batching = BatchingReasoner(inner, max_rows=8, window_s=1.0)
    with GenerateSpy(inner.model) as spy:
        answers, errors = ask_together(batching, images, prompts)
    batching.close()
    assert isinstance(errors[2], ValueError) and answers[2] is None
    assert all(errors[i] is None and answers[i][0].text is not None for i in (0, 1, 3))
    assert spy.rows == [1, 1, 1]  # the batch failed before generating; each good question was then asked alone
    with pytest.raises(RuntimeError, match="closed"):
        batching.generate(images[0], prompts[0])


def test_a_worker_that_dies_fails_the_waiting_instead_of_hanging_them(tiny_reasoner_dir):
    inner = TransformersReasoner(tiny_reasoner_dir, max_new_tokens=4)

    class Dying:
        def __init__(self, inner):
            self.inner = inner

        def generate_many(self, *args):
            raise SystemExit("the worker is told to stop")  # not an Exception: the retry path doesn't catch it

        def close(self):
            self.inner.close()

    batching = BatchingReasoner(Dying(inner), max_rows=8, window_s=0.2)
    images, prompts = pictures()[:3], [build_prompt(q, True) for q in QUESTIONS[:3]]
    answers, errors = ask_together(batching, images, prompts)
    assert all(isinstance(e, RuntimeError) and "worker stopped" in str(e) for e in errors), errors
    with pytest.raises(RuntimeError, match="closed"):
        batching.generate(images[0], prompts[0])
    with pytest.raises(ValueError, match="window_s"):
        BatchingReasoner(inner, window_s=5.0)
