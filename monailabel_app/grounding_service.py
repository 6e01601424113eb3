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

from monailabel_app.grounding_pipeline import GroundingPipeline
from monailabel_app.image_grounding import GroundedImage, ground_image
from monailabel_app.medical_image import read_medical_image
from monailabel_app.segmenter_factory import SEGMENTER_BUILDERS, build_segmenter
from monailabel_app.settings import GroundingSettings
from monailabel_app.tiny_models import TINY_MODEL_MARKER
from monailabel_app.transformers_reasoner import TransformersReasoner

logger = logging.getLogger(__name__)


class GroundingService:
    def __init__(self, settings: GroundingSettings):
        if settings.segmenter not in SEGMENTER_BUILDERS:  # an admin's typo fails the start, not the first request
            raise ValueError(f"--conf segmenter {settings.segmenter!r} is unknown; choose one of {sorted(SEGMENTER_BUILDERS)}")
        self.settings = settings
        self._lock = threading.Lock()
        self._pipeline: Optional[GroundingPipeline] = None

    def pipeline(self) -> GroundingPipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = self._build()
            return self._pipeline  # the reasoner itself reloads a republished checkpoint before generating

    def notice(self) -> Optional[str]:
        """A line every result carries when the reasoner is a tiny test model, so nobody mistakes it for a real one."""
        marker = Path(self.settings.reasoner) / TINY_MODEL_MARKER
        if not marker.is_file():
            return None
        about = json.loads(marker.read_text())
        return "DEMO: this reasoner is a tiny untrained test model; its answers mean nothing. " + about.get("warning", "")

    def ground_file(
        self,
        path: str,
        question: str,
        slice_index: object = None,
        window: str = "auto",
        think: Optional[bool] = None,
    ) -> GroundedImage:
        image = read_medical_image(path)
        return ground_image(self.pipeline(), image, question, slice_index, window, think)

    def _build(self) -> GroundingPipeline:
        s = self.settings
        logger.info(f"Loading reasoner {s.reasoner!r} and segmenter {s.segmenter!r} on {s.device}")
        reasoner = TransformersReasoner(
            s.reasoner,
            device=s.device,
            max_new_tokens=s.max_new_tokens,
            min_pixels=s.min_pixels,
            max_pixels=s.max_pixels,
            allow_download=s.allow_download,
        )
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
