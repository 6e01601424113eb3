"""`/session/*`: MONAI Label's sessions (3D Slicer uploads a volume that isn't on the server as a session, then infers
on it by session id), with the ids and uploads checked.

- A session id must be a UUID, as the server gives them: `..` can't name the sessions folder's parent.
- Uploads: one image file, or several DICOM files of one series; each is checked (type, size, header) before the
  session is made. `uncompress` (unpacking an archive the client sends) is refused: an archive can hold paths that
  leave the folder it is unpacked into.
"""

from __future__ import annotations

from typing import List

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.utils.others.generic import get_basename, get_mime_type
from starlette.concurrency import run_in_threadpool

from lib.common.identifiers import check_session_id
from lib.common.scratch import new_scratch, remove_scratch
from lib.server.context import ServerContext
from lib.server.errors import NotAcceptable
from lib.server.upload_checks import check_image_upload
from lib.server.uploads import DICOM_SUFFIXES, IMAGE_SUFFIXES, save_upload
from monailabel_app.core.errors import NotFoundError, RequestError

MAX_SESSION_FILES = 3_000


def sessions_router(context: ServerContext) -> APIRouter:
    router = APIRouter(prefix="/session", tags=["Session"])
    USER = settings.MONAI_LABEL_AUTH_ROLE_USER

    def sessions():
        store = context.app().sessions()
        if store is None:
            raise NotAcceptable("Sessions are turned off on this server (MONAI_LABEL_SESSIONS).")
        return store

    @router.get("/{session_id}", summary="A session's info, or its image")
    def get_session(session_id: str, update_ts: bool = False, image: bool = False, user: User = Depends(RBAC(USER))):
        found = sessions().get_session(check_session_id(session_id), update_ts=update_ts)
        if not found:
            raise NotFoundError(f"No session {session_id}")
        if image:
            return FileResponse(found.image, media_type=get_mime_type(found.image), filename=get_basename(found.image))
        return _shown(found)

    @router.put("/", summary="Make a session from an uploaded image", max_body_size=context.limits.max_upload_bytes)
    async def create_session(
        uncompress: bool = False,
        expiry: int = 0,
        files: List[UploadFile] = File(...),
        user: User = Depends(RBAC(USER)),
    ):
        if uncompress:
            raise RequestError("uncompress is not offered: send the image file, or the DICOM files of one series.")
        if not 0 <= expiry <= 7 * 24 * 3600:
            raise RequestError("expiry must be 0 (the server's default) to 604800 seconds.")
        if not files or len(files) > MAX_SESSION_FILES:
            raise RequestError(f"Send one image file, or 2 to {MAX_SESSION_FILES} DICOM files of one series.")
        store = sessions()
        async with context.admission.slot():
            scratch = new_scratch()
            try:
                series = scratch / "series"
                series.mkdir()
                allowed = IMAGE_SUFFIXES if len(files) == 1 else DICOM_SUFFIXES
                saved = [await save_upload(f, series, allowed, context.limits.max_upload_bytes) for f in files]
                image = saved[0] if len(saved) == 1 else series
                await run_in_threadpool(check_image_upload, image, context.limits.image)
                session_id, info = await run_in_threadpool(store.add_session, str(image), expiry, False)
                return {"session_id": session_id, "session_info": _shown(info)}
            finally:
                remove_scratch(scratch)

    @router.delete("/{session_id}", summary="Remove a session")
    def remove_session(session_id: str, user: User = Depends(RBAC(USER))):
        store = sessions()
        found = store.get_session(check_session_id(session_id))
        if not found:
            raise NotFoundError(f"No session {session_id}")
        store.remove_session(session_id)
        return _shown(found)

    return router


def _shown(session) -> dict:
    """A session's record without where the server keeps its files (`path`, `image`: server paths)."""
    return {k: v for k, v in session.to_json().items() if k not in ("path", "image")}
