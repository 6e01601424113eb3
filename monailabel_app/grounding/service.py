"""The models behind a server: built once, shared by every request, reloaded when retrained.

A server starts the load on a thread of its own as it starts (`start_loading`), so `/info` and every other route
answer at once while the models load, and the first question doesn't pay the whole load; without that call (tools,
tests) the first use loads them. Either way there is one load: a question that comes while it runs waits for it. A
load that fails is logged, said by `load_state` (in `/info`), and fails the questions that waited for it with its
reason (503 when the model can't be had); the next question tries again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from monailabel_app.core.errors import RequestError, UnavailableError
from monailabel_app.grounding.clicks import PointPrompt, parse_clicks
from monailabel_app.grounding.image_grounding import GroundedImage, ground_image
from monailabel_app.grounding.pipeline import GroundingPipeline
from monailabel_app.grounding.reasoner_slot import ReasonerSlot
from monailabel_app.grounding.settings import AUTO_BATCH_MAX_ROWS_GPU, AUTO_CONFIDENCE_SAMPLES_GPU, GroundingSettings
from monailabel_app.imaging.image_limits import ImageLimits
from monailabel_app.imaging.medical_image import read_medical_image
from monailabel_app.reasoning.backends import BACKEND_NAMES, ReasonerSpec, backend, build_reasoner
from monailabel_app.reasoning.batching import BatchingReasoner
from monailabel_app.reasoning.identity import TINY_MODEL_MARKER, describe_reasoner
from monailabel_app.reasoning.model_store import published_reasoner
from monailabel_app.reasoning.reasoner import Reasoner
from monailabel_app.reasoning.sampling import SamplingSettings
from monailabel_app.segmentation.factory import SEGMENTER_BUILDERS, build_segmenter

logger = logging.getLogger(__name__)
SEGMENTER_ENCODERS_DIR = "segmenter_encoders"  # in the model folder: converted encoders (`cpu_encoder.py`)


class GroundingService:
    def __init__(
        self,
        settings: GroundingSettings,
        model_dir: Optional[str] = None,
        image_limits: ImageLimits = ImageLimits(),
        before_first_load: Optional[Callable[[], object]] = None,
    ):
        """`before_first_load`: work the first load does first, and questions wait for (the demo builds its
        reasoner)."""
        # an admin's typo fails the start, not the first request
        if settings.segmenter not in SEGMENTER_BUILDERS:
            raise ValueError(
                f"--conf segmenter {settings.segmenter!r} is unknown; choose one of {sorted(SEGMENTER_BUILDERS)}"
            )
        if settings.reasoner_backend not in BACKEND_NAMES:
            raise ValueError(
                f"--conf reasoner_backend must be one of {BACKEND_NAMES}, not {settings.reasoner_backend!r}"
            )
        if settings.reasoner_backend == "openai" and not settings.reasoner_url:
            raise ValueError("--conf reasoner_backend openai needs --conf reasoner_url (e.g. http://gpu-host:8001/v1)")
        self.settings = settings
        self.image_limits = image_limits  # images larger than these are refused from their header
        self.model_dir = model_dir  # where retraining publishes; a published reasoner wins over settings.reasoner
        self._before_first_load = before_first_load
        self._lock = threading.Lock()  # held by the load: a question that comes meanwhile waits here
        self._pipeline: Optional[GroundingPipeline] = None
        self._reasoners = ReasonerSlot(self._build_reasoner, self._describe)  # the one owner of which reasoner serves
        self._failed_loads = 0  # counts loads that failed, so a question that waited for one gets its reason
        self._last_failure: Optional[BaseException] = None
        self._loader: Optional[threading.Thread] = None

    def pipeline(self) -> GroundingPipeline:
        """The pipeline with the reasoner that should serve now (a retrained one replaces the old on publish)."""
        failed_before = self._failed_loads
        with self._lock:
            # the load this question waited for failed: its reason, not a second load at once
            if self._failed_loads != failed_before and self._last_failure is not None:
                raise UnavailableError(f"The models could not be loaded: {self._failure_reason()}")
            try:
                if self._before_first_load is not None:
                    self._before_first_load()
                    self._before_first_load = None
                serving = self._reasoners.current(self.reasoner_path())
                if self._pipeline is None:
                    self._pipeline = self._build(serving.reasoner)
                self._pipeline.use_reasoner(serving.reasoner, serving.identity)
            except Exception as error:
                self._last_failure = error
                self._failed_loads += 1
                raise
            self._last_failure = None
            return self._pipeline

    def start_loading(self) -> threading.Thread:
        """Loads the models on a thread of their own (the server calls this as it starts); `pipeline` waits for it."""
        self._loader = threading.Thread(target=self._load_at_start, name="model-load", daemon=True)
        self._loader.start()
        return self._loader

    def _load_at_start(self) -> None:
        started = time.perf_counter()
        try:
            self.pipeline()
        except UnavailableError as error:
            logger.error(f"The models could not be loaded at start: {error}")
        except Exception:
            logger.exception("The models could not be loaded at start")
        else:
            logger.info(f"Models loaded in {time.perf_counter() - started:.1f} s; questions are answered now")

    def load_state(self) -> dict:
        """For `/info`: `loading` (the start's load is under way), `ready`, `failed` (with the reason: the next
        question tries again) or `not loaded` (loads on the first question)."""
        if self._last_failure is not None:
            return {"state": "failed", "reason": self._failure_reason()}
        if self._pipeline is not None:
            return {"state": "ready"}
        if self._loader is not None and self._loader.is_alive():
            return {"state": "loading"}
        return {"state": "not loaded"}

    def _failure_reason(self) -> str:
        """An UnavailableError's message says what to do; anything else is a bug, whose details stay in the log."""
        failure = self._last_failure
        if isinstance(failure, UnavailableError):
            return str(failure)
        return f"{type(failure).__name__} (see the server log)"

    def close(self) -> None:
        """Frees the models (at shutdown, or in tests)."""
        self._reasoners.close()

    def reasoner_path(self) -> str:
        """An endpoint serves what it serves; local backends serve the last reasoner retraining published, unless
        `--conf serve_published false` keeps `--conf reasoner`."""
        published = self._published()
        return str(published) if published else self.settings.reasoner

    def _published(self) -> Optional[Path]:
        local = backend(self.settings.reasoner_backend).weights_here
        if not (self.model_dir and local and self.settings.serve_published):
            return None
        return published_reasoner(self.model_dir)

    def reasoner_identity(self) -> dict:
        """Which reasoner answers now (`reasoner_identity.describe_reasoner`), for `/info`; never reads weights itself.
        An answer carries the identity of the reasoner that gave it (`ReasonerSlot`), not this."""
        return self._describe(self.reasoner_path())

    def _describe(self, path: str) -> dict:
        published = self._published()
        return describe_reasoner(path, "published" if published and str(published) == path else "configured")

    def startup_report(self) -> str:
        """Said once at start: which reasoner will answer and, when retraining published one, how to choose."""
        published = published_reasoner(self.model_dir) if self.model_dir else None
        configured = self.settings.reasoner
        if published is None:
            return f"Reasoner: {configured} (--conf reasoner)."
        version = describe_reasoner(str(published), "published").get("version")
        if self.settings.serve_published and backend(self.settings.reasoner_backend).weights_here:
            return (
                f"Reasoner: the retrained one published in {published} (version {version}) answers, not --conf "
                f"reasoner {configured}. To serve {configured} instead, start with --conf serve_published false."
            )
        return (
            f"Reasoner: {configured} (--conf reasoner); the published retrained {published} (version {version}) is "
            "not served."
        )

    def notice(self, reasoner_path: Optional[str] = None) -> Optional[str]:
        """A line every result carries when the reasoner (the one serving now, or `reasoner_path`: the one that
        answered) is a tiny test model, so nobody mistakes it for a real one."""
        marker = Path(reasoner_path or self.reasoner_path()) / TINY_MODEL_MARKER
        if not marker.is_file():
            return None
        about = json.loads(marker.read_text())
        return "DEMO: this reasoner is a tiny untrained test model; its answers mean nothing. " + about.get(
            "warning", ""
        )

    def ground_file(
        self,
        path: str,
        question: str,
        slice_index: object = None,
        window: str = "auto",
        think: Optional[bool] = None,
        confidence_samples: Optional[int] = None,
        scope: str = "slice",
        points: Optional[PointPrompt] = None,
    ) -> GroundedImage:
        """`confidence_samples` None: the server's (`default_confidence_samples`); `scope`: `slice` or `volume`;
        `points`: a point panel's clicks (None from the auto-segmentation panel)."""
        samples = self.default_confidence_samples() if confidence_samples is None else confidence_samples
        if confidence_samples is not None and samples > self.settings.confidence_max_samples:
            raise RequestError(
                f"confidence_samples {samples} is more than this server allows "
                f"({self.settings.confidence_max_samples}, --conf confidence_max_samples)"
            )
        image = read_medical_image(path, self.image_limits)
        clicks = None
        if points is not None:
            height, width = image.array.shape[1:3] if image.is_volume else image.array.shape[:2]
            num_slices = image.num_slices if image.is_volume else None
            clicks = parse_clicks(points.foreground, points.background, width, height, num_slices, points.asker)
        return ground_image(
            self.pipeline,
            image,
            question,
            slice_index,
            window,
            think,
            samples,
            self.settings.confidence_temperature,
            scope,
            clicks,
        )

    def default_confidence_samples(self) -> int:
        """`--conf confidence_samples`, where `auto` is 4 with the transformers backend on a GPU and 0 (off)
        otherwise: on CPU each sample costs about as much as the answer itself, and the other backends answer greedily
        only (docs/clinician.md, Confidence)."""
        if self.settings.confidence_samples is not None:
            return self.settings.confidence_samples
        return AUTO_CONFIDENCE_SAMPLES_GPU if self._transformers_on_gpu() else 0

    def _transformers_on_gpu(self) -> bool:
        """Whether the reasoner runs in this process on a GPU: where `auto` turns sampling and batching on."""
        return self.settings.reasoner_backend == "transformers" and reasoner_device(self.settings.device) != "cpu"

    def _build_reasoner(self, path: str) -> Reasoner:
        s = self.settings
        logger.info(f"Loading reasoner {path!r} with the {s.reasoner_backend} backend")
        if backend(s.reasoner_backend).weights_here:
            describe_reasoner(path, "loading", compute_digest=True)  # the weights' digest, remembered for results
        spec = ReasonerSpec(
            path,
            SamplingSettings(max_new_tokens=s.max_new_tokens),  # greedy
            device=s.device,
            min_pixels=s.min_pixels,
            max_pixels=s.max_pixels,
            allow_download=s.allow_download,
            url=s.reasoner_url,
            api_key_env=s.reasoner_api_key_env,
        )
        reasoner = build_reasoner(s.reasoner_backend, spec)
        if s.reasoner_backend != "transformers":
            return reasoner  # an engine or an endpoint batches by itself
        rows = s.batch_max_rows
        # auto: batching pays where decoding is memory-bound; on CPU it barely helps (docs/reasoner-hosting.md)
        if rows is None:
            rows = AUTO_BATCH_MAX_ROWS_GPU if self._transformers_on_gpu() else 1
        if rows <= 1:
            return reasoner
        return BatchingReasoner(reasoner, max_rows=rows, window_s=s.batch_window_ms / 1000)

    def _build(self, reasoner: Reasoner) -> GroundingPipeline:
        s = self.settings
        logger.info(f"Loading segmenter {s.segmenter!r}")
        segmenter = build_segmenter(
            s.segmenter,
            s.segmenter_checkpoint,
            device=reasoner_device(s.device),
            cache_size=None,
            sam2_config=s.sam2_config,
            cache_mb=s.embedding_cache_mb,
            encoder=s.segmenter_encoder,
            encoder_dir=os.path.join(self.model_dir, SEGMENTER_ENCODERS_DIR) if self.model_dir else None,
        )
        return GroundingPipeline(reasoner, segmenter, think=s.think, template_path=s.template)


def reasoner_device(device: str) -> str:
    """The segmenter follows the reasoner's device choice; `auto` means CUDA when there is one."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
