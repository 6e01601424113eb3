"""What the app asks of a datastore beyond MONAI Label's `Datastore`: one protocol that both of this app's datastores
(the folder, `lib/datastore/local.py`, and the DICOMweb PACS, `lib/pacs/datastore.py`) implement, so no caller asks
a store `hasattr` questions. `AtomicLocalDatastore` gives a folder's answers; the PACS overrides what differs.
"""

from __future__ import annotations

from typing import ContextManager, List, Optional, Protocol, runtime_checkable

from monailabel.interfaces.datastore import Datastore


@runtime_checkable
class LabelStore(Protocol):
    def exclusive(self) -> ContextManager:
        """Held around a sequence of changes no other request may interleave with (a save and its bookkeeping)."""

    def has_image(self, image_id: str) -> bool:
        """Whether the id names an image here, without fetching it."""

    def instance_numbers(self, image_id: str) -> Optional[List[Optional[int]]]:
        """A DICOM series' slices as the viewer numbers them (InstanceNumber, in volume order); None for a file."""

    def root_folder(self) -> str:
        """The server folder its files live in (a PACS's: the local copies of its series)."""


def as_label_store(store: Datastore) -> LabelStore:
    """The app's datastore, checked once where it is made (`main.py`): a datastore without the protocol is a bug."""
    if not isinstance(store, LabelStore):
        raise TypeError(f"{type(store).__name__} does not implement lib/datastore/label_store.LabelStore")
    return store
