"""MONAI Label's LocalDatastore, with every file it writes whole at every instant, also across a crash.

MONAI Label's `add_image` and `save_label` copy straight onto the final name (`shutil.copy`): a server killed during
the copy leaves a torn file there, which its reconcile at the next start registers as the image or label. Here both
are reimplemented (MONAI Label's copying code is never called):

1. the new file is written beside the final name as `.<name>.partial`, whole and fsync'ed (`atomic_file.py`);
2. the commit: whatever the subclass keeps of the earlier file (versions), then the index records the new entry with
   the new file's SHA-256 (`saved_sha256`), written whole;
3. the partial is renamed over the final name and the folder fsync'ed.

A crash before 2 leaves the earlier file under its name and the index as it was; the partial is removed at the next
start. A crash between 2 and 3 leaves an index that records a file not yet renamed into place: the start finishes the
rename (the partial's SHA-256 is the one recorded). So the final name always holds a whole file, and after the start's
repair (`repair.py`, which runs before MONAI Label reads the index) the index and the files agree.

All of it under the datastore's lock file (MONAI Label's `.lock`, which training and batch subprocesses also take),
so a start in another process never mistakes a live write for a crash's leftover.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.exception import ImageNotFoundException

from lib.datastore.atomic_file import AtomicDatastoreFile, install, make_folder, write_partial
from lib.datastore.repair import SHA_KEY, repair_index_and_files

logger = logging.getLogger(__name__)


class AtomicLocalDatastore(AtomicDatastoreFile, LocalDatastore):
    """Mix in after a LocalDatastore subclass (`class D(DICOMWebDatastore, AtomicLocalDatastore)`) or use alone."""

    _repair_at_start = True  # off for a read-only datastore: it changes nothing on disk
    _exclusive = threading.RLock()  # a folder datastore with versions has its own (`local.py`)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        handler = getattr(self, "_handler", None)  # MONAI Label's watcher, with auto reload on
        if handler is not None:
            handler.on_moved = self._on_index_replaced

    def _on_index_replaced(self, event) -> None:
        """The index is replaced by a rename (`write_atomically`), which MONAI Label's watcher (it listens for writes
        in place) ignored: labels a batch inference's subprocess saved stayed unseen until a restart. Re-read when
        another process replaced it (MONAI Label compares the file's time with this process's last write)."""
        if os.path.abspath(getattr(event, "dest_path", "") or "") != os.path.abspath(self._datastore_config_path):
            return
        try:
            if os.stat(self._datastore_config_path).st_mtime == self._config_ts:
                return  # this process's own write (every answer writes the index): no lock taken, nothing read
        except OSError:
            return
        self._init_from_datastore_file()

    # lib/datastore/label_store.LabelStore: a folder's answers
    def exclusive(self):
        return self._exclusive

    def has_image(self, image_id: str) -> bool:
        return bool(self._datastore.objects.get(image_id))

    def instance_numbers(self, image_id: str) -> Optional[List[Optional[int]]]:
        return None

    def root_folder(self) -> str:
        return self._datastore_path

    def _init_from_datastore_file(self, throw_exception=False):
        """LocalDatastore's constructor reads the index here first, before its reconcile: the repair goes first."""
        if not getattr(self, "_repaired", False):
            self._repaired = True
            if self._repair_at_start:
                with FileLock(self._lock_file):
                    self._repair()
        return super()._init_from_datastore_file(throw_exception)

    def _repair(self) -> None:
        """What a crash left (the lock is held); a subclass adds its own folders."""
        repair_index_and_files(
            self._datastore_path, self._datastore_config_path, self._datastore.images_dir, self._datastore.labels_dir
        )

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        file_id, extension = self._to_id(os.path.basename(image_filename))
        image_id = image_id or file_id
        path = os.path.join(self._datastore.image_path(), self._filename(image_id, extension))
        with FileLock(self._lock_file):
            self._store(
                path, image_filename, lambda digest: self._commit_image(image_id, extension, image_info, digest)
            )
        logger.info(f"Image {image_id!r} stored")
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        if not self._datastore.objects.get(image_id):
            raise ImageNotFoundException(f"Image {image_id} not found")
        _, extension = self._to_id(os.path.basename(label_filename))
        folder = self._datastore.label_path(label_tag)
        path = os.path.join(folder, self._filename(image_id, extension))
        with FileLock(self._lock_file):
            make_folder(folder)
            self._store(
                path,
                label_filename,
                lambda digest: self._commit_label(image_id, label_tag, extension, label_info, digest),
            )
        logger.info(f"Label {label_tag!r} of {image_id!r} stored")
        return image_id

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        super().update_image_info(image_id, _without_checksum(info))

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        super().update_label_info(label_id, label_tag, _without_checksum(info))

    def _store(self, path: str, source: str, commit: Callable[[str], None]) -> None:
        """`source` at `path`, crash-safe (see the module's docstring); `commit(sha256)` keeps what must be kept of
        the earlier file and writes the index. The caller holds the lock."""
        partial, digest = write_partial(path, source)
        try:
            commit(digest)
        except BaseException:
            if os.path.lexists(partial):
                os.unlink(partial)
            raise
        install(partial, path)

    def _commit_image(self, image_id: str, extension: str, image_info: Optional[Dict[str, Any]], digest: str):
        """The image's new entry (MONAI Label's: a new image has no labels yet) in the index, on disk."""
        name = self._filename(image_id, extension)
        info = {**(image_info or {}), "ts": int(time.time()), "name": name, SHA_KEY: digest}
        entry = ImageLabelModel(image=DataModel(info=info, ext=extension))
        self._write_index_with(lambda: self._datastore.objects.__setitem__(image_id, entry))

    def _commit_label(self, image_id: str, tag: str, extension: str, label_info: Optional[Dict[str, Any]], digest):
        name = self._filename(image_id, extension)
        info = {**(label_info or {}), "ts": int(time.time()), "name": name, SHA_KEY: digest}
        labels = self._datastore.objects[image_id].labels
        self._write_index_with(lambda: labels.__setitem__(tag, DataModel(info=info, ext=extension)))

    def _write_index_with(self, change: Callable[[], None]) -> None:
        """Applies `change` to the index in memory and writes it; a write that fails leaves memory as it was."""
        before = self._datastore.model_copy(deep=True)
        change()
        try:
            self._update_datastore_file(lock=False)
        except BaseException:
            self._datastore = before
            raise


def _without_checksum(info: Dict[str, Any]) -> Dict[str, Any]:
    """The checksum the repair trusts is the datastore's own: an info update can't set it."""
    return {k: v for k, v in (info or {}).items() if k != SHA_KEY}
