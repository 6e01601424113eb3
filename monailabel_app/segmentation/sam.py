"""The Segmenter protocol on top of segment_anything's SamPredictor, with a per-image embedding cache.

Any `segment_anything.modeling.Sam` module works (SAM ViT-B/L/H, MedSAM, LiteMedSAM's TinyViT variant, or a tiny
random SAM in tests): the predictor does the resize, normalisation, padding and coordinate mapping, so boxes, points
and the returned mask all stay in the caller's pixel frame.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from monailabel_app.segmentation.embedding_cache import MIB, EmbeddingCache, picture_key
from monailabel_app.segmentation.segmenter import SegmentOutput

DEFAULT_CACHE_MB = 512  # the embedding cache's memory bound unless told (`--conf embedding_cache_mb`)


class SamSegmenter:
    """Box plus all points as positive, multimask output, keep the best-scored mask (the paper's prompt recipe);
    point labels and an earlier mask's logits for propagation and corrections.

    One predictor per cached image holds that image's embedding, so a second question on the same slice only runs
    the light prompt encoder and mask decoder (`embedding_cache.py`: keyed by the picture's bytes, bounded by memory
    and, when `cache_size` is given, by count). A lock serialises requests: the predictor state is not thread-safe.
    `predictor_class` is segment_anything's SamPredictor, or SAM2's image predictor, which has the same interface.
    """

    def __init__(
        self,
        sam_model: Sam,
        name: str = "sam",
        cache_size: Optional[int] = 4,
        predictor_class: type = SamPredictor,
        cache_mb: float = DEFAULT_CACHE_MB,
    ):
        if cache_size is not None and cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.model = sam_model.eval()
        self.predictor_class = predictor_class
        self.name = name
        self.encoder_calls = 0
        self.encoder_path = "torch-fp32"  # which image encoder runs (`cpu_encoder.py` may swap in a faster one)
        self.encoder_ready = threading.Event()  # set once no encoder swap is pending
        self.encoder_ready.set()
        self._predictors = EmbeddingCache(int(cache_mb * MIB), cache_size)
        self._lock = threading.Lock()

    def limit_cache(self, cache_mb: float, cache_size: Optional[int] = None) -> None:
        """New bounds for the embedding cache (it starts empty)."""
        with self._lock:
            self._predictors = EmbeddingCache(int(cache_mb * MIB), cache_size)

    def use_image_encoder(self, encoder: torch.nn.Module, mask_decoder: Optional[torch.nn.Module] = None) -> None:
        """Swaps the image encoder (and the mask decoder, when given) between requests; embeddings already cached
        stay (they agree within the mask agreement the faster encoder was chosen for)."""
        with self._lock:
            self.model.image_encoder = encoder
            if mask_decoder is not None:
                self.model.mask_decoder = mask_decoder
            self.encoder_path = getattr(encoder, "path", type(encoder).__name__)

    def segment(
        self,
        image: np.ndarray,
        box: Optional[Sequence[float]] = None,
        points: Optional[Sequence[Sequence[float]]] = None,
        labels: Optional[Sequence[int]] = None,
        mask_logits: Optional[np.ndarray] = None,
    ) -> SegmentOutput:
        """With `mask_logits` SAM is asked for one mask (its recommendation when a mask prompt is given); without,
        for three, and the best-scored one is kept."""
        check_rgb_uint8(image)
        box_array, point_array = prompt_arrays(box, points)
        point_labels = None
        if point_array is not None:
            point_labels = np.ones(len(point_array), dtype=np.int64) if labels is None else np.asarray(labels, np.int64)
            if point_labels.shape != (len(point_array),):
                raise ValueError(f"{len(point_array)} points but {point_labels.size} labels")
        with self._lock:
            predictor, encode_s, cache_hit = self._predictor_for(image)
            decode_start = time.perf_counter()
            masks, scores, logits = predictor.predict(
                point_coords=point_array,
                point_labels=point_labels,
                box=box_array,
                mask_input=None if mask_logits is None else _one_mask(mask_logits),
                multimask_output=mask_logits is None,
            )
            decode_s = time.perf_counter() - decode_start
        best = int(np.argmax(scores))
        return SegmentOutput(
            mask=np.asarray(masks[best], dtype=bool),
            score=float(scores[best]),
            encode_s=encode_s,
            decode_s=decode_s,
            cache_hit=cache_hit,
            low_res_logits=np.asarray(logits[best : best + 1], dtype=np.float32),
        )

    def _predictor_for(self, image: np.ndarray) -> tuple[Any, float, bool]:
        """Cached predictor for this image content, or a new one after a real encoder run (LRU eviction)."""
        key = picture_key(image)
        cached = self._predictors.get(key)
        if cached is not None:
            return cached, 0.0, True
        predictor = self.predictor_class(self.model)
        encode_start = time.perf_counter()
        predictor.set_image(image)  # RGB, both predictors' default
        encode_s = time.perf_counter() - encode_start
        self.encoder_calls += 1
        self._predictors.put(key, predictor)
        return predictor, encode_s, False


def _one_mask(logits: np.ndarray) -> np.ndarray:
    """(1, h, w): the predictors' low-resolution mask size (256 for SAM and LiteMedSAM, image_size / 4 for SAM2)."""
    array = np.asarray(logits, dtype=np.float32)
    return array[None] if array.ndim == 2 else array.reshape(1, *array.shape[-2:])


def check_rgb_uint8(image: np.ndarray) -> None:
    """Fail early with a clear message: SamPredictor would otherwise fail deep inside a resize."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"segmenter expects an RGB uint8 image of shape (H, W, 3), got {got}")


def prompt_arrays(
    box: Optional[Sequence[float]], points: Optional[Sequence[Sequence[float]]]
) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Box as (4,) and points as (N, 2) float arrays; an empty point list counts as no points."""
    box_array = None if box is None else np.asarray(box, dtype=np.float32).reshape(4)
    point_array = None
    if points is not None and len(points) > 0:
        point_array = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    if box_array is None and point_array is None:
        raise ValueError("segmenter needs a box or at least one point")
    return box_array, point_array
