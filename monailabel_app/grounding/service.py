"""The models behind a server: built once on first use, shared by every request, reloaded when retrained.

Loading is lazy so the server starts at once and nothing is fetched at start-up; a model that can't be had fails the
request that needed it with an actionable message, and the next request tries again.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Optional

from monailabel_app.core.errors import RequestError
from monailabel_app.grounding.clicks import PointPrompt, parse_clicks
from monailabel_app.grounding.image_grounding import GroundedImage, ground_image
from monailabel_app.grounding.pipeline import GroundingPipeline
from monailabel_app.grounding.reasoner_slot import ReasonerSlot
from monailabel_app.grounding.settings import AUTO_BATCH_MAX_ROWS_GPU, AUTO_CONFIDENCE_SAMPLES_GPU, GroundingSettings
from monailabel_app.imaging.image_limits import ImageLimits
from monailabel_app.imaging.medical_image import read_medical_image
from monailabel_app.reasoning.batching import BatchingReasoner
from monailabel_app.reasoning.identity import TINY_MODEL_MARKER, describe_reasoner
from monailabel_app.reasoning.model_store import published_reasoner
from monailabel_app.reasoning.openai_reasoner import OpenAIReasoner
from monailabel_app.reasoning.reasoner import Reasoner
from monailabel_app.reasoning.sampling import SamplingSettings
from monailabel_app.reasoning.transformers_reasoner import TransformersReasoner
from monailabel_app.reasoning.vllm_reasoner import VllmReasoner
from monailabel_app.segmentation.factory import SEGMENTER_BUILDERS, build_segmenter

logger = logging.getLogger(__name__)
REASONER_BACKENDS = ("transformers", "vllm", "openai")


class GroundingService:
    def __init__(
        self, settings: GroundingSettings, model_dir: Optional[str] = None, image_limits: ImageLimits = ImageLimits()
    ):
        # an admin's typo fails the start, not the first request
        if settings.segmenter not in SEGMENTER_BUILDERS:
            raise ValueError(
                f"--conf segmenter {settings.segmenter!r} is unknown; choose one of {sorted(SEGMENTER_BUILDERS)}"
            )
        if settings.reasoner_backend not in REASONER_BACKENDS:
            raise ValueError(
                f"--conf reasoner_backend must be one of {REASONER_BACKENDS}, not {settings.reasoner_backend!r}"
            )
        if settings.reasoner_backend == "openai" and not settings.reasoner_url:
            raise ValueError("--conf reasoner_backend openai needs --conf reasoner_url (e.g. http://gpu-host:8001/v1)")
        self.settings = settings
        self.image_limits = image_limits  # images larger than these are refused from their header
        self.model_dir = model_dir  # where retraining publishes; a published reasoner wins over settings.reasoner
        self._lock = threading.Lock()
        self._pipeline: Optional[GroundingPipeline] = None
        self._reasoners = ReasonerSlot(self._build_reasoner)  # the one owner of which reasoner serves

    def pipeline(self) -> GroundingPipeline:
        """The pipeline with the reasoner that should serve now (a retrained one replaces the old on publish)."""
        with self._lock:
            reasoner = self._reasoners.current(self.reasoner_path())
            if self._pipeline is None:
                self._pipeline = self._build(reasoner)
            self._pipeline.use_reasoner(reasoner)
            return self._pipeline

    def close(self) -> None:
        """Frees the models (at shutdown, or in tests)."""
        self._reasoners.close()

    def reasoner_path(self) -> str:
        """An endpoint serves what it serves; local backends serve the last reasoner retraining published, unless
        `--conf serve_published false` keeps `--conf reasoner`."""
        published = self._published()
        return str(published) if published else self.settings.reasoner

    def _published(self) -> Optional[Path]:
        local = self.settings.reasoner_backend != "openai"
        if not (self.model_dir and local and self.settings.serve_published):
            return None
        return published_reasoner(self.model_dir)

    def reasoner_identity(self) -> dict:
        """Which reasoner answers now (`reasoner_identity.describe_reasoner`); never reads weights itself."""
        source = "published" if self._published() else "configured"
        return describe_reasoner(self.reasoner_path(), source)

    def startup_report(self) -> str:
        """Said once at start: which reasoner will answer and, when retraining published one, how to choose."""
        published = published_reasoner(self.model_dir) if self.model_dir else None
        configured = self.settings.reasoner
        if published is None:
            return f"Reasoner: {configured} (--conf reasoner)."
        version = describe_reasoner(str(published), "published").get("version")
        if self.settings.serve_published and self.settings.reasoner_backend != "openai":
            return (
                f"Reasoner: the retrained one published in {published} (version {version}) answers, not --conf "
                f"reasoner {configured}. To serve {configured} instead, start with --conf serve_published false."
            )
        return (
            f"Reasoner: {configured} (--conf reasoner); the published retrained {published} (version {version}) is "
            "not served."
        )

    def notice(self) -> Optional[str]:
        """A line every result carries when the reasoner is a tiny test model, so nobody mistakes it for a real one."""
        marker = Path(self.reasoner_path()) / TINY_MODEL_MARKER
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
        sampling = SamplingSettings(max_new_tokens=s.max_new_tokens)  # greedy
        if s.reasoner_backend != "openai":
            describe_reasoner(path, "loading", compute_digest=True)  # the weights' digest, remembered for results
        if s.reasoner_backend == "openai":
            bounds = {k: v for k, v in (("min_pixels", s.min_pixels), ("max_pixels", s.max_pixels)) if v}
            return OpenAIReasoner(s.reasoner_url, path, s.reasoner_api_key_env, sampling, **bounds)
        if s.reasoner_backend == "vllm":
            return VllmReasoner(path, sampling, min_pixels=s.min_pixels, max_pixels=s.max_pixels)
        reasoner = TransformersReasoner(
            path,
            device=s.device,
            max_new_tokens=s.max_new_tokens,
            min_pixels=s.min_pixels,
            max_pixels=s.max_pixels,
            allow_download=s.allow_download,
        )
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
            cache_size=s.embedding_cache,
            sam2_config=s.sam2_config,
        )
        return GroundingPipeline(reasoner, segmenter, think=s.think, template_path=s.template)


def reasoner_device(device: str) -> str:
    """The segmenter follows the reasoner's device choice; `auto` means CUDA when there is one."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
