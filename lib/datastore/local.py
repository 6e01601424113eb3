"""The folder datastore (`--studies <folder>`): MONAI Label's LocalDatastore, where nothing a user saved is lost.

- Uploading an image under an id that exists: the same picture again (Slicer re-uploads the volume on every Submit)
  changes nothing; a different one moves the old image *and its labels* (they were drawn on it) into the version
  store, then stores the new one.
- Saving a label where one exists for that tag moves the old one into the version store first.
- Deleting an image or a label moves it into the version store (see `versions.py`: where, how many, how to restore).
- Every id and tag passes the identifier gate first (`GatedLocalDatastore`), and every file written or removed lies
  inside the studies folder.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict

import numpy as np
from monailabel.datastore.local import LocalDatastore

from lib.datastore.atomic_file import AtomicDatastoreFile
from lib.datastore.gate import IdentifierGate
from lib.datastore.versions import VersionStore, same_file_content
from lib.server.identifiers import require_inside
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.imaging.medical_image import read_medical_image

logger = logging.getLogger(__name__)


class VersionedLocalDatastore(AtomicDatastoreFile, LocalDatastore):
    def __init__(self, datastore_path: str, keep_versions: int, **kwargs):
        super().__init__(datastore_path, **kwargs)
        self.versions = VersionStore(datastore_path, keep_versions)
        self._versions_lock = threading.RLock()  # one replace at a time: two saves of one label can't both move it

    def exclusive(self):
        """Held around a sequence of changes no other request may interleave with (a save and its bookkeeping)."""
        return self._versions_lock

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        with self._versions_lock:
            _, extension = self._to_id(os.path.basename(image_filename))
            if not image_id:
                raise RequestError("An image needs an id.")
            entry = _entry_in(self._datastore.image_path(), self._filename(image_id, extension))
            existing = self.get_image_uri(image_id)
            if existing and _same_image(existing, image_filename):
                logger.info(f"Image {image_id!r} uploaded again unchanged; kept as it is")
                return image_id
            if existing:
                self._keep_image_and_labels(image_id, "replaced by a new upload")
            if os.path.lexists(entry):  # a file of that name the datastore did not list: kept, never written through
                self.versions.keep_file(image_id, "image", entry, extension, {}, "replaced by a new upload")
            return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        with self._versions_lock:
            if not self._datastore.objects.get(image_id):
                raise NotFoundError(f"No image with id {image_id!r} in the datastore.")
            label_dir = self._datastore.label_path(label_tag)
            require_inside(self._datastore.base_path, label_dir, "label folder")
            if self.get_label_uri(image_id, label_tag):
                self._keep_label(image_id, label_tag, "replaced by a newer save")
            _, extension = self._to_id(os.path.basename(label_filename))
            entry = _entry_in(label_dir, self._filename(image_id, extension))
            if os.path.lexists(entry):
                self.versions.keep_file(
                    image_id, f"label-{label_tag}", entry, extension, {}, "replaced by a newer save"
                )
            return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_image(self, image_id: str) -> None:
        with self._versions_lock:
            if not self._datastore.objects.get(image_id):
                raise NotFoundError(f"No image with id {image_id!r} in the datastore.")
            self._keep_image_and_labels(image_id, "deleted")
            self.refresh()

    def remove_label(self, label_id: str, label_tag: str) -> None:
        with self._versions_lock:
            if not self.get_label_uri(label_id, label_tag):
                raise NotFoundError(f"No {label_tag!r} label for image {label_id!r}.")
            self._keep_label(label_id, label_tag, "deleted")
            self.refresh()

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        info = super().get_image_info(image_id)
        if info:
            info["versions"] = self.versions.list(image_id)
        return info

    def _keep_image_and_labels(self, image_id: str, reason: str) -> None:
        obj = self._datastore.objects[image_id]
        for tag in list(obj.labels):
            self._keep_label(image_id, tag, f"its image was {reason}")
        path = _entry_in(self._datastore.image_path(), self._filename(image_id, obj.image.ext))
        if os.path.lexists(path):
            self.versions.keep_file(image_id, "image", path, obj.image.ext, dict(obj.image.info), reason)
        self._datastore.objects.pop(image_id, None)
        self._update_datastore_file()

    def _keep_label(self, image_id: str, tag: str, reason: str) -> None:
        obj = self._datastore.objects[image_id]
        label = obj.labels.get(tag)
        path = _entry_in(self._datastore.label_path(tag), self._filename(image_id, label.ext)) if label else ""
        if label is not None and os.path.lexists(path):
            self.versions.keep_file(image_id, f"label-{tag}", path, label.ext, dict(label.info), reason)
        obj.labels.pop(tag, None)
        self._update_datastore_file()


class GatedLocalDatastore(IdentifierGate, VersionedLocalDatastore):
    """What the app uses: the identifier gate, then versioning, then MONAI Label's LocalDatastore."""


def _entry_in(folder: str, name: str) -> str:
    """`folder/name`, which must be a direct entry of `folder` (a symbolic link an admin placed there is moved as a
    link: its target, wherever it lies, is never touched)."""
    path = os.path.join(folder, name)
    if os.path.dirname(os.path.abspath(path)) != os.path.abspath(folder):
        raise RequestError(f"{name!r} is not a plain entry of the datastore; refused.")
    return path


def _same_image(stored: str, uploaded: str) -> bool:
    """Byte-identical, or the same pixels and geometry (a re-saved .nii.gz differs in its gzip header's time)."""
    if same_file_content(stored, uploaded):
        return True
    try:
        a, b = read_medical_image(stored), read_medical_image(uploaded)
    except RequestError:
        return False
    return a.array.shape == b.array.shape and np.array_equal(a.array, b.array) and a.geometry() == b.geometry()
