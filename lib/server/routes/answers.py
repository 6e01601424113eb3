"""The answers the server gave, for the clinician, the admin and the researcher (`grounding/answer_log.py`):

- `GET /answers/`: a small page listing recent answers (question, reasoning, the picture with mask, box and points,
  model and version, latency); `?image=<id>` or `?study=<uid>` narrows it;
- `GET /answers/list?limit=&image=&study=`: the same as JSON, newest first (OHIF's answer panel reads it); with an
  image or a study, also `refused`: the newest request about it that was refused (4xx, its message) when it came
  after the newest answer listed, else null (`grounding/refusals.py`: OHIF doesn't show the server's message);
- `GET /answers/{id}`: one answer; `GET /answers/{id}/picture`: its PNG;
- `GET /answers/static/{answer-text.js|answers.js|answers.css|ohif-panel.js}`: the page's and OHIF panel's own files.

Every route needs the user role, like the rest of the API; with sign-in on, a user sees the answers to their own
questions and a reviewer or admin sees all (each answer records `asked_by`). The page builds its DOM with
`textContent` only (the reasoning is a model's text: never markup), and its Content-Security-Policy allows only this
server's own scripts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User

from lib.common.identifiers import check_id
from lib.server.context import ServerContext
from lib.server.visibility import Reader
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.grounding.answer_log import MAX_LIST, AnswerLog

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
STATIC_FILES = {
    "answer-text.js": "text/javascript",
    "answers.js": "text/javascript",
    "answers.css": "text/css",
    "ohif-panel.js": "text/javascript",
}
STUDY_UID = re.compile(r"^[0-9][0-9.]{0,63}$")
PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'"


def answers_router(context: ServerContext) -> APIRouter:
    router = APIRouter(tags=["Answers"])
    USER = settings.MONAI_LABEL_AUTH_ROLE_USER

    @router.get("/answers/", include_in_schema=False)
    def page(user: User = Depends(RBAC(USER))):
        headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"}
        return FileResponse(STATIC_DIR / "answers.html", media_type="text/html", headers=headers)

    @router.get("/answers/list", summary="Recent answers (question, reasoning, box, points, model), newest first")
    def recent(
        limit: int = 20,
        image: Optional[str] = None,
        study: Optional[str] = None,
        user: User = Depends(RBAC(USER)),
    ):
        if not 1 <= limit <= MAX_LIST:
            raise RequestError(f"limit must be 1 to {MAX_LIST}.")
        if image is not None:
            check_id(image)
        if study is not None and not STUDY_UID.match(study):
            raise RequestError("study must be a DICOM UID (digits and dots, at most 64 characters).")
        own = _only_own(context, user)
        log = _log(context)
        entries = log.recent(limit, image_id=image, study_uid=study, asked_by=own)
        refused = log.refusals.latest(image, study, own) if image is not None or study is not None else None
        if refused and entries and refused["refusal_id"] < entries[0]["answer_id"]:  # answered since: old news
            refused = None
        return JSONResponse({"answers": entries, "refused": refused}, headers={"Cache-Control": "no-store"})

    @router.get("/answers/static/{name}", include_in_schema=False)
    def static_file(name: str, user: User = Depends(RBAC(USER))):
        if name not in STATIC_FILES:
            raise NotFoundError(f"No file {name[:60]!r} here.")
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @router.get("/answers/{answer_id}", summary="One answer")
    def one(answer_id: str, user: User = Depends(RBAC(USER))):
        entry = _log(context).get(answer_id)
        if entry is None or _only_own(context, user) not in (None, entry.get("asked_by")):
            raise NotFoundError(f"No answer {answer_id[:40]!r} (it may be older than the answers kept).")
        return entry

    @router.get("/answers/{answer_id}/picture", include_in_schema=False)
    def picture(answer_id: str, user: User = Depends(RBAC(USER))):
        log = _log(context)
        path = log.picture_path(answer_id)
        own = _only_own(context, user)
        if path is None or (own is not None and (log.get(answer_id) or {}).get("asked_by") != own):
            raise NotFoundError(f"No picture for answer {answer_id[:40]!r}.")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return router


def _only_own(context: ServerContext, user: User) -> Optional[str]:
    """With sign-in on, a user sees the answers to their own questions; a reviewer or admin sees all (the same rule
    as every other route that returns clinical text: `visibility.Reader`)."""
    reader = Reader.of(user, context)
    return None if reader.reads_all else reader.name


def _log(context: ServerContext) -> AnswerLog:
    log = getattr(context.app(), "answer_log", None)
    if log is None:
        raise NotFoundError("No task that keeps answers is loaded (--conf models).")
    return log
