"""Active learning's `reasoner_confidence` scoring method: asks a site's question list about unlabelled images and
records the reasoner's confidence in each answer, so `least_confident` can rank images nobody has asked about yet.

`--conf al_questions FILE` (one question per line; blank lines and `#` comments skipped) turns it on. MONAI Label runs
scoring at start and after every "Next Sample" (its run after a training happens in the training's subprocess, where
this app skips it; a newly published reasoner is asked at the next run); each run asks at most `--conf al_budget`
questions (default 8), unlabelled images in id order, skipping what the served reasoner already answered, so the work
is bounded and spread over runs. It runs in the server process with the models the infer task already holds
(`app_scoring.py`), never in a subprocess that would load the reasoner again. An image that can't be read is skipped
and counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from monailabel_app.core.errors import RequestError
from monailabel_app.grounding.confidence_book import (
    CONFIDENCE_KEY,
    MAX_SITE_QUESTIONS,
    answered_by,
    reasoner_key,
    with_entry,
)
from monailabel_app.grounding.service import GroundingService
from monailabel_app.reasoning.prompt import validate_question

logger = logging.getLogger(__name__)

MAX_QUESTIONS_FILE_BYTES = 1 << 20
DEFAULT_BUDGET = 8
DEFAULT_SAMPLES = 4


@dataclass(frozen=True)
class ActiveLearningSettings:
    questions: tuple[str, ...] = ()  # empty: no scoring method
    budget: int = DEFAULT_BUDGET  # questions asked per scoring run
    samples: int = DEFAULT_SAMPLES  # sampled answers behind each confidence

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ActiveLearningSettings":
        """From the parsed start options (`lib/options`); the questions file is read and checked here."""
        path = options["al_questions"]
        return cls(read_questions(path) if path else (), options["al_budget"], options["al_confidence_samples"])


def read_questions(path: str) -> tuple[str, ...]:
    """The site's questions, checked like a request's; duplicates kept once."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--conf al_questions: {path} is not a file")
    if file.stat().st_size > MAX_QUESTIONS_FILE_BYTES:
        raise ValueError(f"--conf al_questions: {path} is over {MAX_QUESTIONS_FILE_BYTES} bytes")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    questions: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line or line.startswith("#"):
            continue
        try:
            question = validate_question(line)
        except RequestError as error:
            raise ValueError(f"--conf al_questions: line {number}: {error}") from None
        if question not in questions:
            questions.append(question)
    if not questions or len(questions) > MAX_SITE_QUESTIONS:
        raise ValueError(
            f"--conf al_questions: {path} must hold 1 to {MAX_SITE_QUESTIONS} questions, has {len(questions)}"
        )
    return tuple(questions)


class ReasonerConfidence(ScoringMethod):
    def __init__(self, service: GroundingService, settings: ActiveLearningSettings) -> None:
        super().__init__(
            f"Reasoner confidence: asks {len(settings.questions)} site question(s) about unlabelled images, "
            f"at most {settings.budget} per run"
        )
        self.service = service
        self.settings = settings

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        started = time.perf_counter()
        self.service.pipeline()  # the served reasoner, loaded once in this process: its identity keys the records
        reasoner = reasoner_key(self.service.reasoner_identity())
        asked = waiting = unreadable = 0
        for image_id in sorted(datastore.get_unlabeled_images()):
            done = answered_by(datastore.get_image_info(image_id), reasoner)
            todo = [question for question in self.settings.questions if question not in done]
            for position, question in enumerate(todo):
                if asked >= self.settings.budget:
                    waiting += len(todo) - position
                    break
                try:
                    grounded = self.service.ground_file(
                        datastore.get_image_uri(image_id), question, None, "auto", None, self.settings.samples
                    )
                except RequestError as error:
                    logger.warning(f"Reasoner confidence: image {image_id} skipped: {error}")
                    unreadable += 1
                    break
                asked += 1
                confidence = grounded.result.confidence
                if confidence is None:  # a backend that answers greedily only: nothing to record, now or later
                    return {"asked": asked, "note": grounded.result.confidence_note}
                book = with_entry(datastore.get_image_info(image_id), question, confidence.value, reasoner, "scoring")
                datastore.update_image_info(image_id, {CONFIDENCE_KEY: book})
        seconds = round(time.perf_counter() - started, 2)
        logger.info(f"Reasoner confidence: {asked} asked, {waiting} waiting, {unreadable} unreadable, {seconds} s")
        return {"asked": asked, "waiting": waiting, "unreadable": unreadable, "seconds": seconds}
