"""The folder datastore (`--studies <folder>`): MONAI Label's LocalDatastore, where nothing a user saved is lost.

- Uploading an image under an id that exists: the same picture again (Slicer re-uploads the volume on every Submit)
  changes nothing; a different one keeps the old image *and its labels* (they were drawn on it) in the version
  store, then stores the new one.
- Saving a label where one exists for that tag keeps the old one in the version store first.
- Deleting an image or a label moves it into the version store (see `versions.py`: where, how many, how to restore).
- Every file is written whole (`atomic_store.py`): a replaced file stays under its name until its successor, whole
  and on disk, is renamed over it; what a crash left is mended at the next start (`repair.py`).
- Every id and tag passes the identifier gate first (`GatedLocalDatastore`), and every file written or removed lies
  inside the studies folder.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, Optional

import numpy as np
from filelock import FileLock

from lib.common.identifiers import require_inside
from lib.datastore.atomic_store import AtomicLocalDatastore
from lib.datastore.gate import IdentifierGate
from lib.datastore.versions import VersionStore, same_file_content
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.imaging.medical_image import read_medical_image

logger = logging.getLogger(__name__)


class VersionedLocalDatastore(AtomicLocalDatastore):
    def __init__(self, datastore_path: str, keep_versions: int, **kwargs):
        self.versions = VersionStore(datastore_path, keep_versions)  # before MONAI Label's start: the repair uses it
        self._versions_lock = threading.RLock()  # one replace at a time: two saves of one label can't both move it
        self._repair_at_start = not kwargs.get("read_only", False)
        super().__init__(datastore_path, **kwargs)

    def exclusive(self):
        """Held around a sequence of changes no other request may interleave with (a save and its bookkeeping)."""
        return self._versions_lock

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        with self._versions_lock:
            _, extension = self._to_id(os.path.basename(image_filename))
            if not image_id:
                raise RequestError("An image needs an id.")
            _entry_in(self._datastore.image_path(), self._filename(image_id, extension))  # a plain entry, or refused
            existing = self.get_image_uri(image_id)
            if existing and _same_image(existing, image_filename):
                logger.info(f"Image {image_id!r} uploaded again unchanged; kept as it is")
                return image_id
            return super().add_image(image_id, image_filename, image_info)  # keeps the old one in `_commit_image`

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        with self._versions_lock:
            if not self._datastore.objects.get(image_id):
                raise NotFoundError(f"No image with id {image_id!r} in the datastore.")
            label_dir = self._datastore.label_path(label_tag)
            require_inside(self._datastore.base_path, label_dir, "label folder")
            _, extension = self._to_id(os.path.basename(label_filename))
            _entry_in(label_dir, self._filename(image_id, extension))  # a plain entry, or refused
            return super().save_label(image_id, label_filename, label_tag, label_info)  # keeps in `_commit_label`

    def _commit_image(self, image_id: str, extension: str, image_info: Optional[Dict[str, Any]], digest: str):
        """AtomicLocalDatastore's commit, after the image it replaces (and its labels) and any file of that name the
        datastore did not list are kept as versions (the locks are held)."""
        path = self._current_file(image_id, "image", extension)
        listed = self._image_file(image_id)
        if listed:
            self._keep_image_and_labels(image_id, "replaced by a new upload", replaced_by=path)
        if path != listed and os.path.lexists(path):  # a file the datastore did not list: kept
            self.versions.keep_link(image_id, "image", path, extension, {}, "replaced by a new upload")
        super()._commit_image(image_id, extension, image_info, digest)

    def _commit_label(self, image_id: str, tag: str, extension: str, label_info: Optional[Dict[str, Any]], digest):
        """AtomicLocalDatastore's commit, after the label it replaces and any file of that name the datastore did not
        list are kept as versions (the locks are held)."""
        path = self._current_file(image_id, f"label-{tag}", extension)
        listed = self._label_file(image_id, tag)
        self._keep_label(image_id, tag, "replaced by a newer save", replaced_by=path)
        if path != listed and os.path.lexists(path):  # a file the datastore did not list: kept
            self.versions.keep_link(image_id, f"label-{tag}", path, extension, {}, "replaced by a newer save")
        super()._commit_label(image_id, tag, extension, label_info, digest)

    def remove_image(self, image_id: str) -> None:
        with self._versions_lock:
            if not self._datastore.objects.get(image_id):
                raise NotFoundError(f"No image with id {image_id!r} in the datastore.")
            with FileLock(self._lock_file):
                self._keep_image_and_labels(image_id, "deleted")
                self._write_index_with(lambda: self._datastore.objects.pop(image_id, None))
            self.refresh()

    def remove_label(self, label_id: str, label_tag: str) -> None:
        with self._versions_lock:
            if not self.get_label_uri(label_id, label_tag):
                raise NotFoundError(f"No {label_tag!r} label for image {label_id!r}.")
            with FileLock(self._lock_file):
                self._keep_label(label_id, label_tag, "deleted")
                self._write_index_with(lambda: self._datastore.objects[label_id].labels.pop(label_tag, None))
            self.refresh()

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        info = super().get_image_info(image_id)
        if info:
            info["versions"] = self.versions.list(image_id)
        return info

    def _repair(self) -> None:
        super()._repair()
        self.versions.repair(self._current_file)

    def _current_file(self, image_id: str, what: str, extension: str) -> Optional[str]:
        """The datastore file a version `what` (`image`, `label-<tag>`) of `image_id` was kept from."""
        if what == "image":
            return os.path.join(self._datastore.image_path(), self._filename(image_id, extension))
        if what.startswith("label-"):
            return os.path.join(self._datastore.label_path(what[len("label-") :]), self._filename(image_id, extension))
        return None

    def _image_file(self, image_id: str) -> str:
        """The listed image's entry in the image folder (not resolved through a link); "" when not listed."""
        obj = self._datastore.objects.get(image_id)
        return _entry_in(self._datastore.image_path(), self._filename(image_id, obj.image.ext)) if obj else ""

    def _label_file(self, image_id: str, tag: str) -> str:
        """The listed label's entry in its tag's folder (not resolved through a link); "" when not listed."""
        label = self._datastore.label(image_id, tag)
        return _entry_in(self._datastore.label_path(tag), self._filename(image_id, label.ext)) if label else ""

    def _keep_image_and_labels(self, image_id: str, reason: str, replaced_by: str = "") -> None:
        """The image's labels go to the version store (they were drawn on it), then the image: linked when its
        successor `replaced_by` will be renamed over it, else moved. The lock is held; the caller writes the index."""
        obj = self._datastore.objects[image_id]
        for tag in list(obj.labels):
            self._keep_label(image_id, tag, f"its image was {reason}")
        self._keep(
            image_id, "image", self._image_file(image_id), obj.image.ext, dict(obj.image.info), reason, replaced_by
        )

    def _keep_label(self, image_id: str, tag: str, reason: str, replaced_by: str = "") -> None:
        """The label of `tag` to the version store (linked when `replaced_by` will be renamed over it, else moved).
        The lock is held; the caller writes the index."""
        label = self._datastore.label(image_id, tag)
        if label is not None:
            path = self._label_file(image_id, tag)
            self._keep(image_id, f"label-{tag}", path, label.ext, dict(label.info), reason, replaced_by)

    def _keep(self, image_id: str, what: str, path: str, ext: str, info: dict, reason: str, replaced_by: str) -> None:
        if not os.path.lexists(path):
            return
        if path == replaced_by:  # stays under its name until the new file is renamed over it
            self.versions.keep_link(image_id, what, path, ext, info, reason)
        else:
            self.versions.keep_file(image_id, what, path, ext, info, reason)


class GatedLocalDatastore(IdentifierGate, VersionedLocalDatastore):
    """What the app uses: the identifier gate, then versioning, then crash-safe writes over MONAI Label's
    LocalDatastore."""


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
