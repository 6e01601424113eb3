"""`POST /activelearning/{strategy}`: MONAI Label's "Next Sample" (Slicer's button, OHIF's), as its clients call it.

MONAI Label's own route answers with the chosen image's whole info and its path on the server: another clinician's
last question and the model's reasoning about that image, and where the server keeps its files. Here the sample
carries the image's id, the strategy's figures (a weight, a confidence) and the image's info as the caller may read it
(`visibility`), and no path (Slicer then downloads the image through `GET /datastore/image`, as it does from any
remote server). The hand-out is recorded in the image's info as MONAI Label does (`strategy`: when, to which
client), which `random` reads to spread its picks.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

from fastapi import APIRouter, Body, Depends
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from starlette.concurrency import run_in_threadpool

from lib.common.identifiers import check_id
from lib.server.context import ServerContext
from lib.server.visibility import SERVER_PATH_KEYS, Reader, image_info_for
from monailabel_app.core.errors import RequestError

logger = logging.getLogger(__name__)
MAX_CLIENT_ID_CHARS = 128


def activelearning_router(context: ServerContext) -> APIRouter:
    router = APIRouter(prefix="/activelearning", tags=["ActiveLearning"])

    @router.post("/{strategy}", summary="The next image to label, chosen by an active learning strategy")
    async def next_sample(
        strategy: str,
        params: Optional[dict] = Body(None),
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ):
        params = params or {}
        client_id = str(params.get("client_id") or user.username or "")[:MAX_CLIENT_ID_CHARS]
        app = context.app()
        request = {**app.info().get("config", {}).get("activelearning", {}), **params, "strategy": strategy}
        sample = await run_in_threadpool(app.next_sample, request)
        if not sample or not sample.get("id"):
            return {}
        image_id = check_id(sample["id"])
        info = await run_in_threadpool(_record_hand_out, app, image_id, strategy, client_id)
        logger.info(f"Next sample ({strategy}): {image_id}")
        chosen = {k: v for k, v in sample.items() if k not in SERVER_PATH_KEYS}  # the strategy's own figures
        return {**chosen, "id": image_id, **image_info_for(Reader.of(user, context), info)}

    return router


def _record_hand_out(app, image_id: str, strategy: str, client_id: str) -> dict:
    """MONAI Label's record of which client got the image when, under the image's `strategy` info (read, merged and
    written under the app's image-info lock); the image's info."""
    datastore = app.datastore()
    with app.image_info_lock:
        info = datastore.get_image_info(image_id) or {}
        handed = dict(info.get("strategy") or {})
        handed[strategy] = {"ts": int(time.time()), "client_id": client_id}
        try:
            datastore.update_image_info(image_id, {"strategy": handed})
        except (RequestError, OSError) as error:  # a read-only datastore: the sample is still given
            logger.warning(f"Could not record the hand-out of {image_id}: {error}")
    return {**info, "strategy": handed}
