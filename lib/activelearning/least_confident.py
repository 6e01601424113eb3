"""Active learning's `least_confident` strategy: the unlabelled image the reasoner is least sure about comes first.

An image's doubt is the lowest confidence recorded for any question on it (`grounding/confidence_book.py`: answers
given with a confidence, and the `reasoner_confidence` scoring method). Images never asked about come after every
image with a recorded confidence (nothing is known of them; scoring asks them in turn), in id order; ties too go by
id, so the pick is reproducible. Labelled images (a final label) are never offered: MONAI Label's own list of
unlabelled images is the pool.
"""

from __future__ import annotations

import logging
from typing import Optional

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from monailabel_app.grounding.confidence_book import lowest_confidence

logger = logging.getLogger(__name__)


class LeastConfident(Strategy):
    def __init__(self) -> None:
        super().__init__("Least confident: the unlabelled image whose recorded reasoner confidence is lowest")

    def __call__(self, request: dict, datastore: Datastore) -> Optional[dict]:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        ranked = sorted((_rank(lowest_confidence(datastore.get_image_info(image))), image) for image in images)
        (asked, confidence), chosen = ranked[0]
        known = sum(1 for (was_asked, _), _ in ranked if was_asked == 0)
        logger.info(f"Least confident: selected {chosen} of {len(images)} unlabelled ({known} with a confidence)")
        return {"id": chosen, "confidence": None if asked else confidence}


def _rank(confidence: Optional[float]) -> tuple[int, float]:
    """Recorded confidences first, lowest first; never-asked images after them."""
    return (1, 0.0) if confidence is None else (0, confidence)
