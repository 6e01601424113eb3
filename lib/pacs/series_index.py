"""What the PACS holds, as this server knows it: its image series (with the few header fields a listing shows) and
which of them have a label (a DICOM SEG referencing them).

MONAI Label's DICOMweb datastore caches both for `MONAI_LABEL_DICOMWEB_CACHE_EXPIRY` (2 hours by default), fixed at
import: a label the app itself had just stored was not counted, Next Sample kept offering its series and Train said
no label was saved, until a restart. Here:
- the app's own saves count at once (`note_label`), and a series found by its UID is listed at once (`note_series`);
- what other clients store in the PACS shows up within `--conf pacs_refresh_s` seconds (30 by default): the
  listing is asked again when older than that, and only SEGs not seen before are opened to read which series they
  label (a SEG's content never changes, so each is opened once).
Thread-safe: the routes run in a thread pool. One caller at a time asks the PACS for a refresh (the others wait for
its answer rather than asking again); reads of the index never wait on the PACS otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

logger = logging.getLogger(__name__)

SERIES_UID_TAG, STUDY_UID_TAG, MODALITY_TAG = "0020000E", "0020000D", "00080060"
LISTED_FIELDS = {  # DICOM tag -> the name a listing shows it by
    MODALITY_TAG: "Modality",
    STUDY_UID_TAG: "StudyInstanceUID",
    "0008103E": "SeriesDescription",
    "00200011": "SeriesNumber",
    "00201209": "NumberOfSeriesRelatedInstances",
    "00080020": "StudyDate",
}
REFERENCED_SERIES_SEQUENCE = "00081115"


class SeriesIndex:
    def __init__(
        self,
        search_series: Callable[..., List[dict]],
        series_metadata: Callable[[str, str], List[dict]],
        modalities: Iterable[str],
        refresh_s: float,
    ):
        self._search = search_series  # QIDO-RS: search_for_series(search_filters=..., fields=...)
        self._metadata = series_metadata  # WADO-RS metadata of one series: (study uid, series uid) -> datasets
        self.modalities = tuple(modalities)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        # held while the PACS is asked (one for each listing): concurrent callers wait for its answer, not ask again
        self._listing_series, self._listing_labels = threading.Lock(), threading.Lock()
        self._series: Dict[str, Dict[str, Any]] = {}
        self._listed_at = -float("inf")
        self._labelled: Dict[str, str] = {}  # image series uid -> a SEG labelling it (with several, QIDO's last)
        self._saved_here: Dict[str, str] = {}  # the app's own SEGs not yet in a listing: image uid -> SEG uid
        self._seg_targets: Dict[str, Optional[str]] = {}  # SEG series uid -> the image series it labels
        self._labels_at = -float("inf")

    def series(self) -> Dict[str, Dict[str, Any]]:
        """Every image series of the served modalities: uid -> listed fields."""
        with self._listing_series:  # one caller asks the PACS; the others wait and take its answer
            if time.monotonic() - self._listed_at >= self.refresh_s:
                self._list_series()
        with self._lock:
            return dict(self._series)

    def _list_series(self) -> None:
        found: Dict[str, Dict[str, Any]] = {}
        for modality in self.modalities:
            for dataset in self._search(search_filters={"Modality": modality}, fields=list(LISTED_FIELDS)):
                uid = _value(dataset, SERIES_UID_TAG)
                if uid:
                    found[uid] = {name: _value(dataset, tag) for tag, name in LISTED_FIELDS.items()}
        with self._lock:
            self._series, self._listed_at = found, time.monotonic()

    def note_series(self, uid: str, fields: Mapping[str, Any]) -> None:
        """A series found by its UID (sent to the PACS since the last listing): listed at once."""
        with self._lock:
            self._series.setdefault(uid, dict(fields))

    def labelled(self) -> Dict[str, str]:
        """Image series uid -> the SEG that labels it, for the listed series."""
        with self._listing_labels:
            if time.monotonic() - self._labels_at >= self.refresh_s:
                self._list_labels()
        listed = self.series()
        with self._lock:
            return {image: seg for image, seg in self._labelled.items() if image in listed}

    def _list_labels(self) -> None:
        segs = {
            _value(dataset, SERIES_UID_TAG): _value(dataset, STUDY_UID_TAG)
            for dataset in self._search(search_filters={"Modality": "SEG"}, fields=[STUDY_UID_TAG])
        }
        with self._lock:
            new = [(seg, study) for seg, study in segs.items() if seg and seg not in self._seg_targets]
        targets = {}
        for seg, study in new:
            try:
                targets[seg] = self._target_of(study, seg)
            except Exception as error:  # one SEG that can't be read now must not hide the others; asked again
                logger.warning(f"SEG {seg}: its metadata could not be read ({type(error).__name__}); not counted")
        with self._lock:
            self._seg_targets.update(targets)
            labelled = {self._seg_targets[seg]: seg for seg in segs if self._seg_targets.get(seg)}
            # the app's own saves stay counted until a listing shows them (a PACS may index a STOW lazily)
            self._saved_here = {image: seg for image, seg in self._saved_here.items() if seg not in segs}
            labelled.update(self._saved_here)
            self._labelled, self._labels_at = labelled, time.monotonic()

    def note_label(self, image_uid: str, seg_uid: str) -> None:
        """The app stored a SEG for the series: counted at once (no wait for the next listing)."""
        with self._lock:
            self._seg_targets[seg_uid] = image_uid
            self._saved_here[image_uid] = seg_uid
            self._labelled[image_uid] = seg_uid

    def _target_of(self, study_uid: str, seg_uid: str) -> Optional[str]:
        """The image series a SEG references (its ReferencedSeriesSequence), None when it names none (a definite
        answer, kept); a PACS failure raises (nothing kept: the SEG is asked about again at the next refresh)."""
        datasets = self._metadata(study_uid, seg_uid)
        for dataset in datasets[:1]:
            for item in (dataset.get(REFERENCED_SERIES_SEQUENCE) or {}).get("Value") or []:
                uid = _value(item, SERIES_UID_TAG)
                if uid:
                    return uid
        return None


def _value(dataset: Mapping[str, Any], tag: str) -> Any:
    """The first value of a DICOM JSON attribute, as a string for UIDs and text, None when absent."""
    values = (dataset.get(tag) or {}).get("Value") or []
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict):  # a person name: {"Alphabetic": ...}
        return value.get("Alphabetic")
    return value if isinstance(value, (int, float)) else str(value)
