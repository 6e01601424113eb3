"""MONAI Label keeps a datastore's index in `datastore_v2.json` and rewrites it by opening the file for writing and
then encoding: an encoding that fails (a value too deep, a type JSON can't hold) leaves the file empty, and the next
start fails. Here the index is encoded first, written beside the file and renamed over it: a reader, a crash or a
failed encoding sees the old index or the new one, never a truncated one."""

from __future__ import annotations

import json
import os

from filelock import FileLock


class AtomicDatastoreFile:
    """Mix in before a MONAI Label LocalDatastore (or a subclass): `class D(AtomicDatastoreFile, LocalDatastore)`."""

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            self._ignore_event_config = True
            partial = self._datastore_config_path + ".partial"
            with open(partial, "w") as stream:
                stream.write(text)
            os.replace(partial, self._datastore_config_path)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()
