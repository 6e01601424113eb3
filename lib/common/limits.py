"""The server's documented limits, each a start option (`lib/options`: a bad value stops the start).

| option | default | what it bounds |
| --- | --- | --- |
| `max_upload_mb` | 1024 | one request's body (files and form fields together): larger is refused with 413 |
| `max_image_pixels` | 40,000,000 | a 2D image's pixels and a volume's slice's, read from its header (422 beyond) |
| `max_volume_voxels` | 400,000,000 | a volume's voxels, likewise |
| `max_decoded_mb` | 1024 | an image's decoded pixels (voxels x channels x bytes each), likewise |
| `max_pending_requests` | 32 | inferences and uploads being served or waiting; beyond, 503 with `Retry-After` |
| `keep_versions` | 10 | replaced or deleted images and labels kept per image id (`<studies>/.versions/`) |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from monailabel_app.imaging.image_limits import ImageLimits

MIB = 1 << 20
SMALL_BODY_BYTES = 1 * MIB  # JSON and form requests without files: params, options, info
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class ServerLimits:
    max_upload_bytes: int = 1024 * MIB
    image: ImageLimits = field(default_factory=ImageLimits)
    max_pending_requests: int = 32
    keep_versions: int = 10

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "ServerLimits":
        """From the parsed start options (`lib/options`), where each of these is a checked whole number."""
        image = ImageLimits(
            max_pixels_2d=options["max_image_pixels"],
            max_voxels_3d=options["max_volume_voxels"],
            max_decoded_bytes=options["max_decoded_mb"] * MIB,
        )
        return cls(
            max_upload_bytes=options["max_upload_mb"] * MIB,
            image=image,
            max_pending_requests=options["max_pending_requests"],
            keep_versions=options["keep_versions"],
        )
