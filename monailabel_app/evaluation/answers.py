"""Where an evaluation's answers come from: a reasoner run now, or a file of answers given earlier by any model.

Both give each sample a `ModelAnswer` (raw text plus the frame its coordinates are in), so the scoring that follows is
the same for our reasoner, a baseline behind an endpoint, and a baseline's saved outputs.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from monailabel_app.core.frames import ImageFrame
from monailabel_app.data.sample import GroundingSample
from monailabel_app.reasoning.frame_bounds import QWEN_MIN_PIXELS, TRAINED_FRAME_MAX_PIXELS
from monailabel_app.reasoning.openai_reasoner import EndpointError
from monailabel_app.reasoning.qwen_frame import resize_to_model_frame
from monailabel_app.reasoning.reasoner import Reasoner, ReasonerOutput

# Answers-file keys, in the order they are tried: ours (results.jsonl), the paper's results.json, common others.
ANSWER_TEXT_KEYS = ("raw_output", "output", "response", "text", "answer", "content")
ANSWER_FRAMES = ("original", "qwen")
RECORDED_FRAME_KEYS = ("model_width", "model_height")


@dataclass
class ModelAnswer:
    """`text` is None when no answer could be had; `error` then says why (the sample is redone on resume)."""

    text: Optional[str]
    frame: ImageFrame
    error: Optional[str] = None
    prefill_s: float = 0.0
    decode_s: float = 0.0
    new_tokens: int = 0


class AnswerSource(Protocol):
    def answers(self, samples: Sequence[GroundingSample], prompts: Sequence[str]) -> list[ModelAnswer]: ...


@runtime_checkable
class BatchReasoner(Protocol):
    """A reasoner that answers many prompts in one call (vLLM)."""

    def generate_batch(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[ReasonerOutput]: ...


class EndpointUnreachableError(RuntimeError):
    """Too many requests in a row failed: the endpoint is down or misconfigured, so the run stops (and can resume)."""


def _from_output(output: ReasonerOutput) -> ModelAnswer:
    return ModelAnswer(output.text, output.frame, None, output.prefill_s, output.decode_s, output.new_tokens)


class ReasonerAnswers:
    """Answers generated now. A batch reasoner gets each chunk in one call; any other runs on `workers` threads.

    A failed request (`EndpointError`) becomes that sample's error, so one bad request never stops the run; after
    `max_consecutive_errors` failures in a row the run stops instead of recording a dead endpoint as model failures.
    `generate` defaults to `reasoner.generate`; pass another callable to decode differently (e.g. sampling).
    """

    def __init__(
        self,
        reasoner: Reasoner,
        workers: int = 1,
        max_consecutive_errors: int = 20,
        generate: Optional[Callable[[np.ndarray, str], ReasonerOutput]] = None,
    ) -> None:
        self.reasoner = reasoner
        self.workers = max(1, workers)
        self.max_consecutive_errors = max_consecutive_errors
        self.generate = generate or reasoner.generate
        self._batched = generate is None and isinstance(reasoner, BatchReasoner)
        self._errors_in_a_row = 0

    def answers(self, samples: Sequence[GroundingSample], prompts: Sequence[str]) -> list[ModelAnswer]:
        images = [sample.image for sample in samples]
        if self._batched:
            return [_from_output(output) for output in self.reasoner.generate_batch(images, prompts)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            answers = list(pool.map(self._answer_one, images, prompts))
        for answer in answers:
            self._errors_in_a_row = self._errors_in_a_row + 1 if answer.error else 0
            if self._errors_in_a_row >= self.max_consecutive_errors:
                raise EndpointUnreachableError(
                    f"{self._errors_in_a_row} requests in a row failed; the last: {answer.error}. Finished samples are "
                    "saved: fix the endpoint and run the same command again to resume."
                )
        return answers

    def _answer_one(self, image: np.ndarray, prompt: str) -> ModelAnswer:
        try:
            return _from_output(self.generate(image, prompt))
        except EndpointError as error:
            height, width = image.shape[:2]
            return ModelAnswer(None, ImageFrame.identity(width, height), error=str(error))


class AnswersFile:
    """Answers saved earlier: our `results.jsonl`, the paper's `results.json` (a list), or any JSON/JSONL of records
    with an "id" and the raw text under one of ANSWER_TEXT_KEYS.

    The frame: a record's own "frame" (our results carry it) wins; otherwise `frame` says what the coordinates refer
    to: "original" (the image as stored; what the paper's scripts assume, exact for U-MRG's 840x840 pictures) or
    "qwen" (Qwen's smart-resize frame with the given pixel bounds).
    """

    def __init__(
        self,
        path: Path | str,
        frame: str = "original",
        min_pixels: int = QWEN_MIN_PIXELS,
        max_pixels: int = TRAINED_FRAME_MAX_PIXELS,
    ) -> None:
        if frame not in ANSWER_FRAMES:
            raise ValueError(f"answers frame must be one of {ANSWER_FRAMES}, got {frame!r}")
        self.path = Path(path)
        self.frame = frame
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.records = {str(record["id"]): record for record in read_answer_records(self.path)}

    def answers(self, samples: Sequence[GroundingSample], prompts: Sequence[str]) -> list[ModelAnswer]:
        return [self._answer(sample) for sample in samples]

    def _answer(self, sample: GroundingSample) -> ModelAnswer:
        record = self.records.get(sample.sample_id, {})
        text = next((record[key] for key in ANSWER_TEXT_KEYS if isinstance(record.get(key), str)), None)
        frame = self._frame(sample.image, record.get("frame"))
        if text is None:
            return ModelAnswer(None, frame, error=f"no answer text for this sample in {self.path.name}")
        timing = record.get("timing") if isinstance(record.get("timing"), dict) else {}
        prefill_s, decode_s = timing.get("prefill_s", 0.0), timing.get("decode_s", 0.0)
        return ModelAnswer(text, frame, None, prefill_s, decode_s, timing.get("new_tokens", 0))

    def _frame(self, image: np.ndarray, recorded: object) -> ImageFrame:
        height, width = image.shape[:2]
        if isinstance(recorded, dict) and all(isinstance(recorded.get(k), int) for k in RECORDED_FRAME_KEYS):
            return ImageFrame(width, height, recorded["model_width"], recorded["model_height"])
        if self.frame == "qwen":
            return resize_to_model_frame(image, self.min_pixels, self.max_pixels)[1]
        return ImageFrame.identity(width, height)


def read_answer_records(path: Path) -> list[dict]:
    """Records with an "id" from a JSON list or a JSON-lines file; a broken line (an interrupted write) is skipped."""
    text = path.read_text(encoding="utf-8")
    try:
        loaded = json.loads(text)
        records = loaded if isinstance(loaded, list) else [loaded]
    except ValueError:
        records = []
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    usable = [record for record in records if isinstance(record, dict) and record.get("id") is not None]
    if not usable:
        raise ValueError(f"{path} holds no answer records with an 'id' (JSON list or JSON lines)")
    return usable
