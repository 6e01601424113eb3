"""The imaging layer's one request error: the image can't be used, and the message says why and what to send."""

from monailabel_app.core.errors import RequestError


class InvalidImageError(RequestError):
    """The image can't be used (unreadable, truncated, wrong format or dimension, pixels elsewhere)."""
