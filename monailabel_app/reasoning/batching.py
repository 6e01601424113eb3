"""Batched serving: questions that arrive together share one generate call.

A model serves one generate call at a time, so concurrent questions used to queue behind each other, each paying its
own decoding loop. Here each question waits at most `window_s` for others to arrive (or until `max_rows` rows are
waiting), then all of them go into one call of `TransformersReasoner.generate_many`; on a GPU decoding is bound by
reading the weights, so a step for several rows costs about as much as a step for one. Questions asked with different
confidence settings (`samples`, `temperature`) go in separate calls, since every row of a call decodes alike.

If a batched call fails, each question of it is tried alone, so one bad input fails only its own request. A lone
question is encoded exactly as without batching, so its answer is the same.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from monailabel_app.reasoning.reasoner import ReasonerOutput

logger = logging.getLogger(__name__)
MAX_WINDOW_S = 1.0  # a longer wait is no batching window but a stall


@dataclass
class _Question:
    image: np.ndarray
    prompt: str
    samples: int
    temperature: float
    answer: Future = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return self.samples + 1

    @property
    def kind(self) -> tuple[int, float]:
        """Questions of one kind can share a generate call: every row of a call decodes alike."""
        return self.samples, self.temperature


class BatchingReasoner:
    """Wraps a `TransformersReasoner` (anything with `generate_many`); the Reasoner protocol plus confidence."""

    def __init__(self, inner, max_rows: int = 8, window_s: float = 0.01) -> None:
        if max_rows < 1 or not 0 <= window_s <= MAX_WINDOW_S:
            raise ValueError(
                f"max_rows must be at least 1 and window_s 0 to {MAX_WINDOW_S}, got {max_rows}, {window_s}"
            )
        self.inner, self.max_rows, self.window_s = inner, max_rows, window_s
        self._waiting: list[_Question] = []
        self._arrived = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="reasoner-batches", daemon=True)
        self._worker.start()

    def __getattr__(self, name: str):  # model_id_or_path, generate_calls, processor, ...: the wrapped reasoner's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, image: np.ndarray, prompt: str) -> ReasonerOutput:
        return self._ask(_Question(image, prompt, 0, 1.0))[0]

    def generate_with_samples(
        self, image: np.ndarray, prompt: str, samples: int, temperature: float = 1.0
    ) -> list[ReasonerOutput]:
        return self._ask(_Question(image, prompt, max(0, samples), temperature))

    def close(self) -> None:
        """Answers what is waiting, stops the worker, then frees the wrapped reasoner."""
        with self._arrived:
            self._closed = True
            self._arrived.notify_all()
        self._worker.join(timeout=600)
        self.inner.close()

    def _ask(self, question: _Question) -> list[ReasonerOutput]:
        with self._arrived:
            if self._closed:
                raise RuntimeError("the reasoner was closed (replaced by a newly published one); ask again")
            self._waiting.append(question)
            self._arrived.notify_all()
        return question.answer.result()

    def _serve(self) -> None:
        batch: list[_Question] = []
        try:
            while True:
                batch = self._next_batch() or []
                if not batch:
                    return
                self._answer(batch)
        except BaseException as error:  # the worker must never die silently: nobody would answer the waiting
            logger.exception("The batching worker stopped")
            with self._arrived:
                self._closed = True
                stranded, self._waiting = batch + self._waiting, []
            for question in stranded:
                if not question.answer.done():
                    question.answer.set_exception(RuntimeError(f"the reasoner's batching worker stopped: {error}"))

    def _next_batch(self) -> Optional[list[_Question]]:
        """Waits for a question, then up to `window_s` for more like it; takes as many rows as fit."""
        with self._arrived:
            while not self._waiting:
                if self._closed:
                    return None
                self._arrived.wait()
            first = self._waiting[0]
            deadline = time.monotonic() + self.window_s
            while self._rows_like(first) < self.max_rows and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            batch, rows = [], 0
            for question in list(self._waiting):
                if question.kind == first.kind and (not batch or rows + question.rows <= self.max_rows):
                    batch.append(question)
                    rows += question.rows
                    self._waiting.remove(question)
            return batch

    def _rows_like(self, first: _Question) -> int:
        return sum(q.rows for q in self._waiting if q.kind == first.kind)

    def _answer(self, batch: list[_Question]) -> None:
        first = batch[0]
        try:
            answers = self.inner.generate_many(
                [q.image for q in batch], [q.prompt for q in batch], first.samples, first.temperature
            )
        except Exception as error:
            if len(batch) == 1:
                first.answer.set_exception(error)
                return
            logger.warning(f"A batch of {len(batch)} questions failed ({error}); answering each alone")
            for question in batch:
                self._answer([question])
            return
        if len(answers) != len(batch):
            error = RuntimeError(f"{len(answers)} answers came back for {len(batch)} questions")
            for question in batch:
                question.answer.set_exception(error)
            return
        for question, answer in zip(batch, answers):
            question.answer.set_result(answer)
