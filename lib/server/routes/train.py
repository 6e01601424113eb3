"""`POST /train/`, `POST /train/{model}`, `DELETE /train/`: one retraining at a time, options checked before it starts.

MONAI Label's own routes queue a second run behind a running one when asked to "run all" (`POST /train/`), accept any
options and let the subprocess fail a minute later, and leave a stopped run's folder (a whole model copy) behind.
Here: the options are checked at once (422), a second start while one runs is 429 whatever the route or `enqueue`,
`run_sync` (which would hold a server thread for the whole run) is refused, and a stop marks the run stopped and
removes its folder. `GET /train/` (status) is MONAI Label's.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Body, Depends
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.utils.async_tasks.task import AsyncTask

from lib.server.context import ServerContext
from lib.server.routes.admin import without_server_keys
from monailabel_app.core.errors import NotFoundError, RequestError


def train_router(context: ServerContext) -> APIRouter:
    router = APIRouter(prefix="/train", tags=["Train"])
    ADMIN = settings.MONAI_LABEL_AUTH_ROLE_ADMIN

    @router.post("/", summary="Start the retraining (the app's one train task)")
    def start_all(
        params: Optional[dict] = Body(None),
        run_sync: bool = False,
        enqueue: bool = False,
        user: User = Depends(RBAC(ADMIN)),
    ):
        trainers = context.app().train_tasks()
        if not trainers:
            raise NotFoundError("This server has no train task (MONAI_LABEL_TASKS_TRAIN is off).")
        model = next(iter(trainers))
        options = params.get(model) if isinstance(params, dict) and isinstance(params.get(model), dict) else params
        return _start(context, model, options or {}, run_sync)

    @router.post("/{model}", summary="Start the retraining of one model")
    def start(
        model: str,
        params: Optional[dict] = Body(None),
        run_sync: bool = False,
        enqueue: bool = False,
        user: User = Depends(RBAC(ADMIN)),
    ):
        return _start(context, model, params or {}, run_sync)

    @router.delete("/", summary="Stop the running retraining (nothing is published)")
    def stop(user: User = Depends(RBAC(ADMIN))):
        result = AsyncTask.stop("train")
        for trainer in context.app().train_tasks().values():
            if hasattr(trainer, "after_stop"):
                trainer.after_stop()
        return result

    return router


def _start(context: ServerContext, model: str, options: dict[str, Any], run_sync: bool) -> Any:
    trainers = context.app().train_tasks()
    if model not in trainers:
        raise NotFoundError(f"No train task {model[:80]!r}; available: {', '.join(trainers)}")
    if run_sync:
        raise RequestError("run_sync is not offered: a run takes minutes to hours; start it and poll GET /train/.")
    options = without_server_keys(options)
    trainer = trainers[model]
    if hasattr(trainer, "config_for"):
        trainer.config_for(options)  # 422 at once for a bad option
    if not context.app().datastore().get_labeled_images():
        raise RequestError("No final labels are saved yet: save at least one (Slicer: Submit Label), then train.")
    return context.app().start_training(model, options)
