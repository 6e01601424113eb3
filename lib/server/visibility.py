"""Who reads which clinical text in the app's JSON answers.

With sign-in on, a question, the model's reasoning, its raw answer and its box belong to the clinician who asked: a
user reads their own; a reviewer or an admin reads everyone's (review and audit). Every route that returns image or
label info, a listing or an active-learning sample passes its answer through here, so other clinicians' text never
leaves the server through them; the answers themselves (`/answers/`) are filtered by the answer log the same way.
With sign-in off everyone is one trusted user (docs/security.md, Threat model) and reads all. No answer carries a
server path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from monailabel.config import settings
from monailabel.endpoints.user.auth import User

from lib.server.context import ServerContext
from monailabel_app.data.metadata import normalise_key
from monailabel_app.grounding.confidence_book import CONFIDENCE_KEY
from monailabel_app.grounding.last_answers import LAST_ANSWERS_KEY, asker_key, last_answers
from monailabel_app.grounding.records import ANSWER_TEXT_KEYS, LAST_QUERY_KEY

# a saved label's copy of the answer; `params` holds the whole answer of a label an inference saved
LABEL_TEXT_KEYS = frozenset(normalise_key(key) for key in ANSWER_TEXT_KEYS | {"params"})
# the image's own record of answers: each asker's last one (filtered per asker) and the questions' confidences
IMAGE_TEXT_KEYS = frozenset(normalise_key(key) for key in (LAST_QUERY_KEY, CONFIDENCE_KEY))
SERVER_PATH_KEYS = ("path",)


@dataclass(frozen=True)
class Reader:
    """The caller as the rules see them: a name ("" with sign-in off) and whether they read everyone's text."""

    name: str
    reads_all: bool

    @classmethod
    def of(cls, user: User, context: ServerContext) -> "Reader":
        if not context.auth_enabled:
            return cls("", True)
        privileged = {settings.MONAI_LABEL_AUTH_ROLE_ADMIN, settings.MONAI_LABEL_AUTH_ROLE_REVIEWER}
        return cls(str(user.username or ""), bool(privileged & set(user.roles or ())))

    def owns(self, info: Mapping[str, Any]) -> bool:
        return self.reads_all or (bool(self.name) and info.get("saved_by") == self.name)


def image_info_for(reader: Reader, info: Mapping[str, Any]) -> dict:
    """An image's info as `reader` may read it: the answers of other askers, the confidence book (questions as keys)
    and who was handed the image out left out, and no server path."""
    shown = {k: v for k, v in info.items() if k not in SERVER_PATH_KEYS}
    if reader.reads_all:
        return shown
    shown = {k: v for k, v in shown.items() if normalise_key(k) not in IMAGE_TEXT_KEYS | LABEL_TEXT_KEYS}
    own = last_answers(info).get(asker_key(reader.name))
    shown[LAST_ANSWERS_KEY] = {asker_key(reader.name): own} if own else {}
    if isinstance(shown.get("strategy"), dict):  # when each image was handed out, not to which colleague
        shown["strategy"] = {k: {"ts": v.get("ts")} for k, v in shown["strategy"].items() if isinstance(v, dict)}
    return shown


def label_info_for(reader: Reader, info: Mapping[str, Any]) -> dict:
    """A label's info: whole for the clinician who saved it (and reviewers), without the answer's text for others."""
    shown = {k: v for k, v in info.items() if k not in SERVER_PATH_KEYS}
    if reader.owns(info):
        return shown
    return {k: v for k, v in shown.items() if normalise_key(k) not in LABEL_TEXT_KEYS}


def listing_for(reader: Reader, listing: Mapping[str, Any]) -> dict:
    """`GET /datastore/?output=all` (MONAI Label's whole datastore model) with each image's and label's info
    filtered as above."""
    shown = dict(listing)
    objects = {}
    for image_id, entry in (listing.get("objects") or {}).items():
        image = dict(entry.get("image") or {})
        image["info"] = image_info_for(reader, image.get("info") or {})
        labels = {
            tag: {**label, "info": label_info_for(reader, label.get("info") or {})}
            for tag, label in (entry.get("labels") or {}).items()
        }
        objects[image_id] = {**entry, "image": image, "labels": labels}
    shown["objects"] = objects
    return shown


def training_list_for(datalist: list) -> list:
    """`GET /datastore/?output=train`: each image and label by its file name in the datastore, not its server path."""
    return [{k: os.path.basename(v) if isinstance(v, str) else v for k, v in item.items()} for item in datalist]
