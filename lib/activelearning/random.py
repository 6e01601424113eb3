"""Active learning's `random` strategy, safe against what a client can write into image info.

MONAI Label's own picks an unlabelled image with weights "seconds since it was last handed out", read from the image's
info; a time in the future (written by a client, or three picks within one second) makes a weight negative or all of
them zero, and every "Next Sample" then fails with a 500 until the datastore is edited by hand. Here a weight is at
least one second and only a number in the past counts, so the strategy always answers.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Optional

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)


class Random(Strategy):
    def __init__(self) -> None:
        super().__init__("Random: an unlabelled image, the longer since it was last handed out the likelier")

    def __call__(self, request: dict, datastore: Datastore) -> Optional[dict]:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        strategy = str(request.get("strategy") or "random")
        now = time.time()
        weights = [max(1.0, now - _last_served(datastore.get_image_info(image), strategy, now)) for image in images]
        chosen = random.choices(range(len(images)), weights=weights)[0]
        logger.info(f"Random: selected {images[chosen]} of {len(images)} unlabelled images")
        return {"id": images[chosen], "weight": weights[chosen]}


def _last_served(info: dict, strategy: str, now: float) -> float:
    record: Any = (info.get("strategy") or {}).get(strategy) if isinstance(info.get("strategy"), dict) else None
    served = record.get("ts") if isinstance(record, dict) else None
    if isinstance(served, (int, float)) and not isinstance(served, bool) and 0 <= served <= now:
        return float(served)
    return 0.0
