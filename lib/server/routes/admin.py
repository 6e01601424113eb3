"""MONAI Label's administrative routes, narrowed to what is safe for this app.

- `/logs/`: the server log holds clinicians' questions and image ids, so it is served only with authentication on,
  to the admin role, as plain text (MONAI Label's page pulled scripts from public CDNs); `/logs/gpu` answers 404 on
  a machine without `nvidia-smi` (it was a 500).
- `/model/{model}`: MONAI Label would download, replace or delete a model's weights file. This app's reasoner is
  published only by its own retraining (an uploaded weights file could run code when loaded), so upload and delete
  are 405 and download 404.
- `/reload`: MONAI Label's (unauthenticated) way to rebuild the app is not offered; restart the server.
- `/scoring/`: scoring runs in the server process with the models it holds (`lib/activelearning/app_scoring.py`), not
  in a subprocess that loads the reasoner again; an unknown method is 404.
- `POST /batch/infer/{model}`: an unknown model is 404 before a subprocess starts; batch inference needs a question
  and can't save as `final`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from typing import Optional

from fastapi import APIRouter, Body, Depends
from fastapi.responses import PlainTextResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.batch_infer import BatchInferImageType
from monailabel.utils.async_tasks.task import AsyncTask

from lib.common.identifiers import check_tag
from lib.server.context import ServerContext
from lib.server.errors import Forbidden, MethodNotAllowed, TooManyRequests
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.reasoning.prompt import validate_question

MAX_LOG_LINES = 10_000
# Keys of a background task's request that MONAI Label turns into the subprocess's environment: `bundle_path` is added
# to its PYTHONPATH (code from anywhere), `gpus` becomes CUDA_VISIBLE_DEVICES. Only the server may set them.
SUBPROCESS_KEYS = ("bundle_path", "gpus")


def without_server_keys(params: Optional[dict], also: tuple = ()) -> dict:
    """`params` without the keys only the server may set; a client that sends them is refused (422)."""
    params = dict(params or {})
    sent = sorted(k for k in SUBPROCESS_KEYS if k in params)
    if sent:
        raise RequestError(f"{', '.join(sent)} can't be sent: the server sets them.")
    return {k: v for k, v in params.items() if k not in also}


GPU_INFO_TIMEOUT_S = 10


def admin_router(context: ServerContext) -> APIRouter:
    router = APIRouter(tags=["Others"])
    ADMIN, USER = settings.MONAI_LABEL_AUTH_ROLE_ADMIN, settings.MONAI_LABEL_AUTH_ROLE_USER
    ANNOTATOR = settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR

    @router.get("/logs/", summary="The last lines of the server log (admin, authentication on)")
    def logs(lines: int = 300, user: User = Depends(RBAC(ADMIN))):
        if not context.auth_enabled:
            raise Forbidden(
                "The server log holds clinicians' questions; it is served only with authentication on, to the admin "
                "role. On the server it is logs/app.log in the app's folder."
            )
        path = os.path.join(settings.MONAI_LABEL_APP_DIR, "logs", "app.log")
        if not os.path.isfile(path):
            raise NotFoundError("No log file yet.")
        with open(path, errors="replace") as stream:
            tail = deque(stream, max(1, min(lines, MAX_LOG_LINES)))
        return PlainTextResponse("".join(tail))

    @router.get("/logs/gpu", summary="nvidia-smi's report (admin)")
    def gpu(user: User = Depends(RBAC(ADMIN))):
        tool = shutil.which("nvidia-smi")
        if tool is None:
            raise NotFoundError("This machine has no NVIDIA GPU tools (nvidia-smi).")
        try:
            done = subprocess.run([tool], capture_output=True, text=True, timeout=GPU_INFO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NotFoundError("nvidia-smi did not answer in time.") from None
        return PlainTextResponse(done.stdout or done.stderr)

    @router.get("/model/{model}", include_in_schema=False)
    @router.get("/model/info/{model}", include_in_schema=False)
    def model_file(model: str, user: User = Depends(RBAC(ADMIN))):
        raise NotFoundError("This app's reasoner is not offered for download; it lives in the server's model folder.")

    @router.put("/model/{model}", include_in_schema=False)
    @router.delete("/model/{model}", include_in_schema=False)
    def change_model_file(model: str, user: User = Depends(RBAC(ADMIN))):
        raise MethodNotAllowed("Model files can't be uploaded or deleted here: retraining publishes the reasoner.")

    @router.post("/scoring/{method}", summary="Run one scoring method (in the server process)")
    def scoring(
        method: str, params: Optional[dict] = Body(None), run_sync: bool = False, user: User = Depends(RBAC(ANNOTATOR))
    ):
        app = context.app()
        methods = app.scoring_method_names()
        if method not in methods:
            raise NotFoundError(f"No scoring method {method[:80]!r}; available: {', '.join(methods) or 'none'}")
        if run_sync:
            raise RequestError("run_sync is not offered; poll GET /scoring/.")
        without_server_keys(params)
        return app.async_scoring(method)

    @router.post("/scoring/", summary="Run every scoring method (in the server process)")
    def scoring_all(params: Optional[dict] = Body(None), run_sync: bool = False, user: User = Depends(RBAC(ANNOTATOR))):
        if run_sync:
            raise RequestError("run_sync is not offered; poll GET /scoring/.")
        without_server_keys(params)
        return context.app().async_scoring(None)

    @router.delete("/scoring/", include_in_schema=False)
    def stop_scoring(user: User = Depends(RBAC(ANNOTATOR))):
        raise MethodNotAllowed("Scoring runs in the server process and stops by itself after its budget (al_budget).")

    @router.get("/scoring/", summary="Whether scoring is running, and each method's last result")
    def scoring_status(all: bool = False, check_if_running: bool = False, user: User = Depends(RBAC(USER))):
        return context.app().scoring_status()

    @router.post("/batch/infer/{model}", summary="Ground one question on every image (admin)")
    def batch_infer(
        model: str,
        images: BatchInferImageType = BatchInferImageType.IMAGES_ALL,
        params: Optional[dict] = Body(None),
        run_sync: bool = False,
        user: User = Depends(RBAC(ADMIN)),
    ):
        context.app().answers.model(model)  # 404 for an unknown model, before a subprocess starts
        if run_sync:
            raise RequestError("run_sync is not offered; poll GET /batch/infer.")
        server_keys = (
            "image",
            "image_id",
            "model",
            "session",
            "saved_by",
            "study_uid",
            "instance_numbers",
            "asked_by",
        )
        params = without_server_keys(params, server_keys)
        params["question"] = validate_question(params.get("question"))
        tag = check_tag(params.get("label_tag", DefaultLabelTag.ORIGINAL.value))
        if tag == DefaultLabelTag.FINAL.value:
            raise RequestError("Batch results can't be saved as final labels: final labels come from a person.")
        params["label_tag"] = tag
        params.setdefault("multi_gpu", False)  # MONAI Label's default divides the work by the GPUs, none on a CPU host
        result, detail = AsyncTask.run("batch_infer", request={"model": model, "images": images}, params=params)
        if result is None:
            raise TooManyRequests(detail or "A batch inference is already running.")
        return result

    return router
