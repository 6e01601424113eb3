"""`/datastore/*`: MONAI Label's datastore routes (same paths, parameters and roles, as the Slicer and OHIF clients
call them), with every id, tag and upload checked first and the file work done off the event loop.

- Ids and tags pass the identifier gate (422); unknown images and labels are 404, not 500 or an empty 200.
- Uploads are stored only when they read as an image, or as a label on its image's grid (`upload_checks`).
- Replacing or deleting keeps the earlier file as a version (`lib.datastore.versions`); label and image info record
  when, from where and (with authentication) by whom they were saved.
- Info and listings are read through `visibility`: with sign-in on, another clinician's question, reasoning, raw
  answer and box are left out (a reviewer or admin reads all), and no answer carries a server path.
- The dataset ZIP holds every study and label: it is served only with authentication on, to the admin role.
"""

from __future__ import annotations

import os
import shutil
from enum import Enum
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.utils.others.generic import file_checksum, get_mime_type
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from lib.common.identifiers import check_id, check_tag, upload_suffix
from lib.common.scratch import new_scratch, remove_scratch
from lib.datastore.repair import SHA_KEY
from lib.server.context import ServerContext
from lib.server.errors import Forbidden
from lib.server.provenance import edited_by, saved_by
from lib.server.upload_checks import check_image_upload, check_label_upload
from lib.server.uploads import RAW_LABEL_SUFFIX, parse_params, save_upload
from lib.server.visibility import Reader, image_info_for, label_info_for, listing_for, training_list_for
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.data.metadata import normalise_key
from monailabel_app.grounding.confidence_book import CONFIDENCE_KEY
from monailabel_app.grounding.last_answers import LAST_ANSWERS_KEY
from monailabel_app.grounding.records import LAST_QUERY_KEY, SERVER_ANSWER_KEYS

# Info keys the server and MONAI Label manage: a client's info (an upload's or a save's params, an info update) can't
# set them. `strategy` is active learning's record of when an image was handed out; `medreasoner_last_answers` each
# clinician's last answer, which their next saved label will carry (`medreasoner_last_query`: one record, earlier);
# `medreasoner_confidence` the reasoner's recorded doubt, which active learning ranks by; `saved_*` who saved what,
# when and from where, and the stored file's digest (`lib/datastore`: what a restart after a crash checks against).
MANAGED_INFO_KEYS = frozenset(
    {"name", "ts", "path", "strategy", "versions", LAST_QUERY_KEY, LAST_ANSWERS_KEY, CONFIDENCE_KEY}
    | {"saved_at", "saved_from", "saved_by", SHA_KEY, "updated_at", "updated_from", "updated_by"}
    | SERVER_ANSWER_KEYS
)
MANAGED_NORMALISED = frozenset(normalise_key(key) for key in MANAGED_INFO_KEYS)  # "Reasoning" is "reasoning" too
DATASTORE_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".png", ".jpg", ".tif")  # what the folder datastore lists
LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".png", RAW_LABEL_SUFFIX)
CHECKSUM_ALGORITHMS = ("SHA256", "SHA1", "MD5", "SHA512")


class ResultType(str, Enum):
    train = "train"
    stats = "stats"
    all = "all"


def datastore_router(context: ServerContext) -> APIRouter:
    router = APIRouter(prefix="/datastore", tags=["Datastore"])
    upload_limit = context.limits.max_upload_bytes
    USER, ANNOTATOR, ADMIN = (
        settings.MONAI_LABEL_AUTH_ROLE_USER,
        settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR,
        settings.MONAI_LABEL_AUTH_ROLE_ADMIN,
    )

    def store():
        return context.app().datastore()

    def client_info(raw: str, what: str = "params") -> dict:
        info = parse_params(raw, what)
        managed = sorted(key for key in info if normalise_key(key) in MANAGED_NORMALISED)
        if managed:
            raise RequestError(f"'{what}' can't set {', '.join(managed)}: the server keeps them.")
        return info

    @router.get("/", summary="All images and labels of the datastore")
    def listing(output: Optional[ResultType] = None, user: User = Depends(RBAC(USER))):
        if output == ResultType.all:
            return listing_for(Reader.of(user, context), store().json())
        if output == ResultType.train:
            return training_list_for(store().datalist())
        return store().status()

    @router.put("/", include_in_schema=False, max_body_size=upload_limit)
    @router.put(
        "/image",
        summary="Upload an image (an existing id: the earlier one is kept as a version)",
        max_body_size=upload_limit,
    )
    async def add_image(
        request: Request,
        image: Optional[str] = None,
        params: str = Form("{}"),
        file: UploadFile = File(...),
        user: User = Depends(RBAC(ANNOTATOR)),
    ):
        options = client_info(params)
        async with context.admission.slot():
            scratch = new_scratch()
            try:
                suffix = upload_suffix(file.filename, DATASTORE_IMAGE_SUFFIXES)
                image_id = check_id(image if image else os.path.basename(str(file.filename))[: -len(suffix)])
                path = await save_upload(file, scratch, DATASTORE_IMAGE_SUFFIXES, upload_limit)
                await run_in_threadpool(check_image_upload, path, context.limits.image)
                info = {**options, **saved_by(request, user, context)}
                return {"image": await run_in_threadpool(store().add_image, image_id, str(path), info)}
            finally:
                remove_scratch(scratch)

    @router.delete("/", include_in_schema=False)
    @router.delete("/image", summary="Remove an image and its labels (kept as versions)")
    def remove_image(id: str, user: User = Depends(RBAC(ADMIN))):
        store().remove_image(check_id(id))
        return {}

    @router.head("/image", summary="Whether an image exists (optionally with this checksum)")
    def check_image(image: str, check_sum: Optional[str] = None, user: User = Depends(RBAC(USER))):
        path = _image_file(store(), image)
        if check_sum:
            algorithm, _, digest = check_sum.rpartition(":")
            algorithm = (algorithm or "SHA256").upper()
            if algorithm not in CHECKSUM_ALGORITHMS:
                raise RequestError(f"Unknown checksum algorithm {algorithm[:20]!r}; use one of {CHECKSUM_ALGORITHMS}.")
            if digest != file_checksum(path, algo=algorithm):
                raise NotFoundError("Image not found (checksum differs)")
        return {}

    @router.get("/image", summary="Download an image")
    def download_image(image: str, user: User = Depends(RBAC(USER))):
        path = _image_file(store(), image)
        return FileResponse(path, media_type=get_mime_type(path), filename=os.path.basename(path))

    @router.get("/image/info", summary="An image's info (with its kept versions)")
    def image_info(image: str, user: User = Depends(RBAC(USER))):
        _require_image(store(), image)
        return image_info_for(Reader.of(user, context), store().get_image_info(image))

    @router.put("/image/info", summary="Add to an image's info")
    def update_image_info(request: Request, image: str, info: str = Form("{}"), user: User = Depends(RBAC(ANNOTATOR))):
        _require_image(store(), image)
        store().update_image_info(image, {**client_info(info, "info"), **edited_by(request, user, context)})
        return {}

    @router.put(
        "/label", summary="Save a label (the earlier one for the tag is kept as a version)", max_body_size=upload_limit
    )
    async def save_label(
        request: Request,
        image: str,
        params: str = Form("{}"),
        tag: str = DefaultLabelTag.FINAL.value,
        label: UploadFile = File(...),
        user: User = Depends(RBAC(ANNOTATOR)),
    ):
        check_id(image)
        tag = check_tag(tag or DefaultLabelTag.FINAL.value)
        options = client_info(params)
        app = context.app()
        async with context.admission.slot():
            scratch = new_scratch()
            try:
                image_uri = await run_in_threadpool(store().get_image_uri, image)
                if not image_uri:
                    raise NotFoundError(f"No image with id {image!r} in the datastore")
                path = await save_upload(label, scratch, LABEL_SUFFIXES, upload_limit)
                checked = await run_in_threadpool(check_label_upload, path, image_uri, context.limits.image)
                info = {**options, **saved_by(request, user, context)}
                label_id, answer = await run_in_threadpool(app.save_label, image, str(checked), tag, info)
                return {**(answer or {}), "image": image, "label": label_id}
            finally:
                remove_scratch(scratch)

    @router.delete("/label", summary="Remove a label (kept as a version)")
    def remove_label(id: str, tag: str, user: User = Depends(RBAC(ADMIN))):
        store().remove_label(check_id(id, "label id"), check_tag(tag))
        return {}

    @router.head("/label", summary="Whether a label exists")
    def check_label(image: str, tag: str, user: User = Depends(RBAC(USER))):
        _label_file(store(), image, tag)
        return {}

    @router.get("/label", summary="Download a label")
    def download_label(label: str, tag: str, user: User = Depends(RBAC(USER))):
        path = _label_file(store(), label, tag)
        return FileResponse(path, media_type=get_mime_type(path), filename=os.path.basename(path))

    @router.get("/label/info", summary="A label's info")
    def label_info(label: str, tag: str, user: User = Depends(RBAC(USER))):
        _label_file(store(), label, tag)
        return label_info_for(Reader.of(user, context), store().get_label_info(label, tag))

    @router.put("/label/info", summary="Add to a label's info")
    def update_label_info(
        request: Request, label: str, tag: str, info: str = Form("{}"), user: User = Depends(RBAC(ANNOTATOR))
    ):
        _label_file(store(), label, tag)
        store().update_label_info(label, tag, {**client_info(info, "info"), **edited_by(request, user, context)})
        return {}

    @router.put("/updatelabelinfo", include_in_schema=False)
    def update_label_info_old(
        request: Request, label: str, tag: str, params: str = Form("{}"), user: User = Depends(RBAC(ANNOTATOR))
    ):
        _label_file(store(), label, tag)
        store().update_label_info(label, tag, {**client_info(params), **edited_by(request, user, context)})
        return {}

    @router.get("/dataset", summary="Every labelled study and its label as one ZIP (admin, authentication on)")
    def download_dataset(limit_cases: Optional[int] = None, user: User = Depends(RBAC(ADMIN))):
        if not context.auth_enabled:
            raise Forbidden(
                "The dataset ZIP holds every study and label; it is served only with authentication on, to the admin "
                "role (see the docs/security.md)."
            )
        if not store().datalist():
            raise NotFoundError("No labelled images yet: the dataset ZIP would be empty.")
        scratch = new_scratch()
        try:
            archive = scratch / "dataset.zip"
            shutil.move(store().get_dataset_archive(limit_cases), archive)
        except BaseException:
            remove_scratch(scratch)
            raise
        return FileResponse(
            archive,
            media_type="application/zip",
            filename="dataset.zip",
            background=BackgroundTask(remove_scratch, scratch),
        )

    return router


def _require_image(datastore, image_id: str) -> None:
    check_id(image_id)
    if not datastore.has_image(image_id):
        raise NotFoundError(f"No image with id {image_id!r} in the datastore")


def _image_file(datastore, image_id: str) -> str:
    path = datastore.get_image_uri(check_id(image_id))
    if not path:
        raise NotFoundError(f"No image with id {image_id!r} in the datastore")
    if not os.path.isfile(path):
        raise NotFoundError(f"Image {image_id!r} is a DICOM series, not one file: fetch it from the PACS.")
    return path


def _label_file(datastore, label_id: str, tag: str) -> str:
    path = datastore.get_label_uri(check_id(label_id, "label id"), check_tag(tag))
    if not path or not os.path.isfile(path):
        raise NotFoundError(f"No {tag!r} label for image {label_id!r}")
    return path
