"""The one way the datastore writes a file: whole or not at all, and on disk before anyone is told.

A file is written beside its final name as `.<name>.partial` (hidden, and no image pattern such as `*.nii.gz` matches
it, so MONAI Label's reconcile never takes it for an image or a label), flushed and fsync'ed, then renamed over the
final name (a rename is atomic: a reader or a crash sees the old file or the new one, never part of one), and then the
folder is fsync'ed (the rename itself on disk: without it a power loss can undo the rename after the save was
answered; a killed process needs neither fsync, a power cut both). A `.partial` left by a crash is cleaned at the
next start (`repair.py`).

Every file gets FILE_MODE, 0640: the datastore holds clinical images, labels and questions; the server's user writes
them, its group may read them (a backup agent), other accounts of the machine may not. MONAI Label copied each file's
mode from wherever it came from (0600 for an inference result's temporary file, 0644 for an upload).

MONAI Label also rewrote its index `datastore_v2.json` in place (opened for writing, then encoded): an encoding that
failed (a value too deep) left the file empty and the next start failed. `AtomicDatastoreFile` encodes first and
writes the index the same way as every other file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import BinaryIO, Union

from filelock import FileLock

FILE_MODE = 0o640
PARTIAL_SUFFIX = ".partial"
CHUNK = 1 << 20


def partial_path(path: str) -> str:
    """Where `path` is written before it is whole: `.<name>.partial` in the same folder (a rename can't cross disks)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}{PARTIAL_SUFFIX}")


def final_name(partial_name: str) -> str:
    """The name a `.<name>.partial` was to get; "" for any other name."""
    if partial_name.startswith(".") and partial_name.endswith(PARTIAL_SUFFIX) and len(partial_name) > 9:
        return partial_name[1 : -len(PARTIAL_SUFFIX)]
    return ""


def write_partial(path: str, content: Union[str, bytes]) -> tuple[str, str]:
    """Writes `content` (bytes, or the path of a file to copy) to `path`'s partial, whole and on disk; returns the
    partial's path and the SHA-256 of what it holds. The caller renames it into place (`install`) or removes it."""
    partial = partial_path(path)
    if os.path.lexists(partial):  # a crash's leftover (the datastore's lock is held: no live writer owns it)
        os.unlink(partial)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    digest = hashlib.sha256()
    try:
        with os.fdopen(descriptor, "wb") as stream:
            os.fchmod(stream.fileno(), FILE_MODE)  # exactly, whatever the umask
            if isinstance(content, bytes):
                stream.write(content)
                digest.update(content)
            else:
                with open(content, "rb") as source:
                    _copy(source, stream, digest)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        os.unlink(partial)
        raise
    return partial, digest.hexdigest()


def install(partial: str, path: str) -> None:
    """Renames a whole partial over `path`, then makes the rename durable (fsync of the folder)."""
    os.replace(partial, path)
    fsync_folder(os.path.dirname(path))


def write_atomically(path: str, content: Union[str, bytes]) -> str:
    """`content` at `path`, whole (old or new at every instant, also across a crash); returns its SHA-256."""
    partial, digest = write_partial(path, content)
    try:
        install(partial, path)
    except BaseException:
        if os.path.lexists(partial):
            os.unlink(partial)
        raise
    return digest


def copy_atomically(source: str, path: str) -> None:
    """A copy of `source` at `path` (a symbolic link is copied as the link, its target never read)."""
    if os.path.islink(source):
        partial = partial_path(path)
        if os.path.lexists(partial):
            os.unlink(partial)
        shutil.copy2(source, partial, follow_symlinks=False)
        install(partial, path)
    else:
        write_atomically(path, source)


def fsync_folder(folder: str) -> None:
    """A folder's entries (a rename, a new or removed name) on disk: for power loss, not for a killed process."""
    descriptor = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_folder(folder: str) -> None:
    """`folder` and any missing parents, each new name fsync'ed into its parent."""
    if os.path.isdir(folder):
        return
    make_folder(os.path.dirname(os.path.abspath(folder)))
    try:
        os.mkdir(folder)
    except FileExistsError:
        return
    fsync_folder(os.path.dirname(os.path.abspath(folder)))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy(source: BinaryIO, target: BinaryIO, digest) -> None:
    for chunk in iter(lambda: source.read(CHUNK), b""):
        target.write(chunk)
        digest.update(chunk)


class AtomicDatastoreFile:
    """Mix in before a MONAI Label LocalDatastore (or a subclass): `class D(AtomicDatastoreFile, LocalDatastore)`."""

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            self._ignore_event_config = True
            write_atomically(self._datastore_config_path, text.encode())
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()
