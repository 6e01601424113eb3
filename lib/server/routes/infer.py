"""`POST /infer/{model}`: MONAI Label's infer route, as Slicer and OHIF call it, with every input checked first and the
work done off the event loop.

What differs from MONAI Label's own route:
- the image is a datastore id (gated), an upload (type, size and header checked) or a session id (a UUID); never a
  server path, and `params` can't name one (keys such as `image`, `model`, `session` in `params` are ignored);
- `params` must be one JSON object; `output` is `all` (default), `image` or `json` (`dicom_seg`: 422);
- the inference runs in a worker thread under admission control, so other clients are served meanwhile;
- the upload and the result live in the request's scratch folder, removed once the response is sent or on any error
  (the label is written there once; a saved one is stored from there);
- `save_label` stores the result under a gated `label_tag` (never `final`: final labels come from a person).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.utils.others.generic import get_mime_type
from requests_toolbelt import MultipartEncoder
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from lib.common.identifiers import check_id, check_session_id, check_tag
from lib.common.scratch import new_scratch, remove_scratch
from lib.infers.answer_request import ImageRef
from lib.infers.answering import LabelSave
from lib.server.context import ServerContext
from lib.server.provenance import saved_by
from lib.server.request_log import log_answer
from lib.server.uploads import IMAGE_SUFFIXES, parse_params, save_upload
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.grounding.settings import parse_bool

logger = logging.getLogger(__name__)

OUTPUTS = ("all", "image", "json")
# request keys only the server sets; in `params` they are ignored
REQUEST_KEYS = frozenset(
    {
        "model",
        "image",
        "image_id",
        "session",
        "session_id",
        "file",
        "label",
        "description",
        "save_label",
        "label_tag",
        "saved_by",
        "study_uid",
        "instance_numbers",
        "asked_by",
    }
)
RESULT_NAME = "label"


def infer_router(context: ServerContext) -> APIRouter:
    router = APIRouter(tags=["Infer"])

    @router.post(
        "/infer/{model}",
        summary="Run inference: the reasoner answers the question and the segmenter draws the mask",
        max_body_size=context.limits.max_upload_bytes,
    )
    async def run_inference(
        request: Request,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: Optional[UploadFile] = File(None),
        label: Optional[UploadFile] = File(None),  # MONAI Label's scribbles input: this app's task takes none
        output: Optional[str] = None,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ):
        answers = context.app().answers  # the one path of an answer (lib/infers/answering.py)
        wanted = answers.model(model)  # the one check that the model exists
        if label is not None and label.filename:
            raise RequestError(f"The {model} task takes no label file with a request; send the image and the question.")
        output = _check_output(output)
        options = parse_params(params)
        save_as = _save_label_tag(options)
        async with context.admission.slot():
            scratch = new_scratch()
            try:
                image_ref = await _resolve_input(context, scratch, image, session_id, file)  # the one resolution
                asked = {k: v for k, v in options.items() if k not in REQUEST_KEYS}
                asked_by = user.username if context.auth_enabled else None
                save = None
                if save_as and image_ref.image_id:
                    save = LabelSave(save_as, saved_by(request, user, context))
                started = time.monotonic()
                answered = await run_in_threadpool(
                    answers.answer, wanted, image_ref, asked, asked_by, str(scratch), save
                )
                log_answer(model, image_ref.image_id, answered.json, started, asked_by)
                return _respond(answered.json, _named(scratch, answered.label_file), output, scratch)
            except BaseException:
                remove_scratch(scratch)
                raise

    @router.post("/infer/wsi/{model}", include_in_schema=False)
    @router.post("/infer/wsi_v2/{model}", include_in_schema=False)
    async def no_whole_slide(model: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        raise NotFoundError("This app has no whole-slide (WSI) models; use /infer/{model}.")

    return router


def _check_output(output: Optional[str]) -> str:
    value = (output or "all").lower()
    if value == "dicom_seg":
        raise RequestError(
            "output=dicom_seg is not offered: save the label (PUT /datastore/label) to store a DICOM SEG."
        )
    if value not in OUTPUTS:
        raise RequestError(f"output={str(output)[:40]!r} is not one of {', '.join(OUTPUTS)}.")
    return value


def _save_label_tag(options: dict[str, Any]) -> Optional[str]:
    """MONAI Label's `save_label` / `label_tag` params, gated; None when nothing is to be saved."""
    wanted = options.pop("save_label", False)
    tag = options.pop("label_tag", DefaultLabelTag.ORIGINAL.value)
    try:
        wanted = parse_bool("save_label", str(wanted))
    except ValueError as error:
        raise RequestError(str(error)) from None
    if not wanted:
        return None
    tag = check_tag(tag)
    if tag == DefaultLabelTag.FINAL.value:
        raise RequestError("A model's result can't be saved as the final label: final labels come from a person.")
    return tag


async def _resolve_input(
    context: ServerContext, scratch: Path, image: str, session_id: str, file: Optional[UploadFile]
) -> ImageRef:
    """The image to read, and its datastore id: an upload wins, then a session, then a datastore id, as in MONAI
    Label."""
    app = context.app()
    if file is not None and file.filename:
        return ImageRef(str(await save_upload(file, scratch, IMAGE_SUFFIXES, context.limits.max_upload_bytes)))
    if session_id:
        check_session_id(session_id)
        sessions = app.sessions()
        if sessions is None:
            raise RequestError("Sessions are turned off on this server (MONAI_LABEL_SESSIONS).")
        found = await run_in_threadpool(sessions.get_session, session_id)
        if not found:
            raise NotFoundError(f"No session {session_id}; it may have expired. Upload the image again.")
        return ImageRef(found.image)
    if image:
        check_id(image)
        uri = await run_in_threadpool(app.datastore().get_image_uri, image)
        if not uri:
            raise NotFoundError(f"No image with id {image!r} in the datastore")
        return ImageRef(uri, image)
    raise RequestError("Send an image: image=<id>, an uploaded file, or session_id=<id>.")


def _named(scratch: Path, label_file: str) -> Path:
    """The label the task wrote into the request's scratch folder, named as clients see it (MONAI Label's client keeps
    the server's file name); the folder is removed with it."""
    name = os.path.basename(label_file)
    extension = name[name.index(".") :] if "." in name else ""
    target = scratch / f"{RESULT_NAME}-{scratch.name[:8]}{extension}"
    os.rename(label_file, target)
    return target


def _respond(answer: dict, label_file: Optional[Path], output: str, scratch: Path) -> Response:
    cleanup = BackgroundTask(remove_scratch, scratch)
    if output == "json" or label_file is None:
        return JSONResponse(answer, background=cleanup)
    if output == "image":
        return FileResponse(
            label_file, media_type=get_mime_type(str(label_file)), filename=label_file.name, background=cleanup
        )
    with open(label_file, "rb") as stream:
        fields = {
            "params": (None, json.dumps(answer), "application/json"),
            "image": (label_file.name, stream, get_mime_type(str(label_file))),
        }
        encoded = MultipartEncoder(fields=fields)
        body = encoded.to_string()
    return Response(content=body, media_type=encoded.content_type, background=cleanup)
