"""Who saved what, when and from where: recorded in the info of every image and label a request stores, and who
changed its info later."""

from __future__ import annotations

from fastapi import Request
from monailabel.endpoints.user.auth import User

from lib.datastore.versions import utc_now
from lib.server.context import ServerContext


def saved_by(request: Request, user: User, context: ServerContext) -> dict:
    """`saved_at` (UTC), `saved_from` (the client's address as the server saw it; behind a proxy, the proxy's), and
    `saved_by` (the signed-in user) when authentication is on."""
    record = {"saved_at": utc_now(), "saved_from": request.client.host if request.client else None}
    if context.auth_enabled:
        record["saved_by"] = user.username
    return record


def edited_by(request: Request, user: User, context: ServerContext) -> dict:
    """The same, for a later change of an image's or label's info: `updated_*`. `saved_by` names who saved the file
    and stays theirs (it decides who reads the label's clinical text, `visibility`), whoever edits the info later."""
    return {key.replace("saved_", "updated_"): value for key, value in saved_by(request, user, context).items()}
