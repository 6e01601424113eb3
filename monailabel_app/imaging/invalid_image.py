"""The imaging layer's one request error: the image can't be used, and the message says why and what to send."""

import re

from monailabel_app.core.errors import RequestError


class InvalidImageError(RequestError):
    """The image can't be used (unreadable, truncated, wrong format or dimension, pixels elsewhere)."""


def first_line(error: Exception) -> str:
    """The reader's last message line, with folders cut from any path in it: a user is told about their file, never
    where the server keeps it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1][:300] if lines else type(error).__name__
    return re.sub(r"(?:/[^/\s'\"]+)+/", "", text)
