"""MONAI Label's DICOMweb datastore, made safe for a hospital PACS.

What it changes, and why:
- lists the series of several modalities (`pacs_modalities`, default CT, MR, DX, CR; MONAI Label's filter is one
  query, CT by default) and refuses others (a SEG or SR is no image to ask about);
- downloads a series whole or not at all (into a hidden folder, renamed when complete): a PACS that goes away
  mid-transfer leaves nothing behind that a later request would take for the series;
- refuses a series with missing slices or mixed orientation (422) instead of stacking it into a wrong volume;
- stores final labels as DICOM SEG with the question and the answer recorded (`dicom_seg.py`): the one sent with the
  save, else the saver's last one on the series (Slicer and OHIF send none); checks the label's grid, and saves
  nothing locally unless the PACS confirmed the SEG;
- stores beside each SEG the answer as a TID 1500 Measurement Report (`measurement_report.py`: the box on the key
  slice, the key points, the finding, the segment's volume, the question, reasoning and raw answer, the reasoner and
  the clinician who saved), referencing the SEG and the source series, one tracking identifier for both; a PACS that
  refuses the report after taking the SEG costs the report, never the label (the label info says
  `report_stored: false`);
- lists what the PACS holds and which series are labelled through its own index (`series_index.py`): the app's own
  saves count at once, other clients' within `--conf pacs_refresh_s` (MONAI Label cached both for 2 hours);
  `GET /datastore/?output=all` lists every served series with its modality, study and description, so a user finds
  the ids to ask about;
- rebuilds training labels from the PACS's SEGs on the image grid with the question in the label info, so a fresh
  machine's `datalist()` finds them;
- an unknown series id is "" (the app answers 404), PACS failures are `PacsError` (502/503/504 with a message).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from typing import Any, Dict, List, Mapping, Optional

import pydicom
import SimpleITK
from dicomweb_client import DICOMwebClient
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series, dicom_web_upload_dcm
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.datastore.atomic_file import fsync_folder
from lib.datastore.atomic_store import AtomicLocalDatastore
from lib.datastore.gate import IdentifierGate
from lib.pacs.dicom_seg import (
    SegConversionError,
    label_to_seg,
    provenance_of,
    read_provenance,
    seg_to_label,
    segment_names,
)
from lib.pacs.dicomweb import PacsError, PacsSettings, pacs_call, pacs_client
from lib.pacs.download_folder import new_download_folder, remove_dead_downloads
from lib.pacs.measurement_report import measurement_report
from lib.pacs.series_index import MODALITY_TAG, SERIES_UID_TAG, STUDY_UID_TAG, SeriesIndex
from lib.pacs.source_series import volume_order
from lib.pacs.tracking import Tracking, new_tracking
from monailabel_app.core.errors import NotFoundError, RequestError
from monailabel_app.imaging.series_checks import InvalidSeriesError, check_series_geometry

logger = logging.getLogger(__name__)

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def open_pacs_datastore(url: str, options: Mapping[str, Any], app_version: str) -> "GatedPacsDatastore":
    """The datastore for `--studies URL`; a PACS that can't be reached stops the start unless `pacs_optional`."""
    pacs = PacsSettings.from_options(options)
    cache_path = (settings.MONAI_LABEL_DATASTORE_CACHE_PATH or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH).strip()
    datastore = GatedPacsDatastore(pacs_client(url, pacs.timeout_s), pacs, app_version, cache_path or None)
    try:
        datastore.check_reachable()
    except PacsError as error:
        if not pacs.optional:
            raise RuntimeError(
                f"{error.detail} Start the PACS or fix --studies, or pass --conf pacs_optional true to start without "
                "it (images uploaded with a request are served; PACS series answer 503 until it is back)."
            ) from None
        logger.error(f"{error.detail} Starting anyway (pacs_optional): PACS series answer 503 until it is back.")
    return datastore


class PacsDatastore(DICOMWebDatastore, AtomicLocalDatastore):
    """Its local files (a cache of what the PACS holds) are written whole, as the folder datastore's are
    (`lib/datastore/atomic_store.py`); MONAI Label's own writes of them reach AtomicLocalDatastore through the MRO."""

    def __init__(self, client: DICOMwebClient, pacs: PacsSettings, app_version: str, cache_path: Optional[str] = None):
        # MONAI Label's one-query filter is unused: list_images asks for each modality.
        super().__init__(client, {"Modality": pacs.modalities[0]}, cache_path, fetch_by_frame=False)
        self._download_lock = threading.Lock()  # two viewers opening one series download it once
        self._instance_numbers: Dict[str, List[Optional[int]]] = {}  # per series: a UID names fixed content
        # the series and labels the PACS holds, as fresh as --conf pacs_refresh_s; the app's own saves at once
        self.index = SeriesIndex(
            client.search_for_series, client.retrieve_series_metadata, pacs.modalities, pacs.refresh_s
        )
        self.pacs = pacs
        self.pacs_url = client.base_url
        self.app_version = app_version

    def _repair(self) -> None:
        """The folder datastore's repair, and the downloads a killed server left (`download_folder.py`)."""
        super()._repair()
        for folder in (self._datastore.image_path(), self._datastore.label_path(DefaultLabelTag.FINAL)):
            for name in remove_dead_downloads(folder):
                logger.warning(f"Datastore repair at start: removed an unfinished download ({name})")

    def check_reachable(self) -> None:
        with pacs_call(self.pacs_url, "connecting at start", consequence=""):
            self._client.search_for_series(limit=1)

    def status(self) -> Dict[str, Any]:
        """/info must answer while the PACS is away: viewers connect first and show the error on use."""
        try:
            return {**super().status(), "modalities": list(self.pacs.modalities)}
        except PacsError as error:
            return {"total": 0, "completed": 0, "label_tags": {}, "pacs_error": error.detail}

    def list_images(self) -> List[str]:
        with pacs_call(self.pacs_url, "listing series"):
            return list(self.index.series())

    def has_image(self, image_id: str) -> bool:
        """A listed series, or one sent to the PACS since the last listing, looked up by its UID: a study sent a
        minute ago has its record at once, as its answer does (`get_image_uri` looks it up the same way)."""
        if image_id in self.list_images():
            return True
        if not _is_series_uid(image_id):
            return False
        found = self._find_series(image_id)
        if found is None or found[1] not in self.pacs.modalities:
            return False
        self.index.note_series(image_id, {"StudyInstanceUID": found[0], "Modality": found[1]})
        return True

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        """The series a DICOM SEG labels (final labels: the only ones a PACS holds); the app's own saves at once."""
        if label_tag not in (None, DefaultLabelTag.FINAL, DefaultLabelTag.FINAL.value):
            return LocalDatastore.get_labeled_images(self, label_tag, labels)
        with pacs_call(self.pacs_url, "listing the DICOM SEGs"):
            return list(self.index.labelled())

    def json(self) -> Dict[str, Any]:
        """`GET /datastore/?output=all`: every series the PACS serves, with the fields a listing shows (modality,
        study, description, number of images), not only the ones this server has opened; with each one's labels."""
        listing = super().json()
        objects = dict(listing.get("objects") or {})
        try:
            with pacs_call(self.pacs_url, "listing series"):
                series = self.index.series()
        except PacsError as error:
            return {**listing, "pacs_error": error.detail}
        for uid, fields in series.items():
            entry = objects.get(uid) or {"image": {"ext": "", "info": {}}, "labels": {}}
            info = {**{k: v for k, v in fields.items() if v is not None}, **(entry["image"].get("info") or {})}
            objects[uid] = {**entry, "image": {**entry["image"], "info": info}}
        return {**listing, "objects": {uid: objects[uid] for uid in objects if uid in series}}

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        with pacs_call(self.pacs_url, "collecting the DICOM SEGs for training"):
            return super().datalist(full_path)

    def _dicom_info(self, series_id):
        with pacs_call(self.pacs_url, f"reading the header of series {series_id}"):
            return super()._dicom_info(series_id)

    def get_image_uri(self, image_id: str) -> str:
        if not _is_series_uid(image_id):
            return ""
        image_dir = os.path.join(self._datastore.image_path(), image_id)
        with self._download_lock:
            if not (os.path.isdir(image_dir) and os.listdir(image_dir)):
                found = self._find_series(image_id)
                if found is None:
                    return ""
                study_id, modality = found
                if modality not in self.pacs.modalities:
                    raise RequestError(
                        f"Series {image_id} is {modality}; this server serves {', '.join(self.pacs.modalities)} "
                        "(--conf pacs_modalities)",
                    )
                self._download_whole(study_id, image_id, image_dir, f"downloading series {image_id}")
            self._add_single_picture(image_id, image_dir)
            return self._cached_image(super().get_image_uri(image_id), image_id)

    def _cached_image(self, uri: str, image_id: str) -> str:
        """MONAI Label's first conversion returns its temporary NIfTI (and leaves it in the temp folder); every later
        call the cached copy. Always the cached copy, and no temporary left behind."""
        cached = os.path.realpath(os.path.join(self._datastore.image_path(), f"{image_id}.nii.gz"))
        if uri and uri != cached and os.path.isfile(cached):
            if os.path.dirname(os.path.realpath(uri)) == os.path.realpath(tempfile.gettempdir()):
                os.unlink(uri)
            return cached
        return uri

    def _add_single_picture(self, image_id: str, image_dir: str) -> None:
        """A radiograph (DX, CR) is one 2D picture; MONAI Label's conversion makes it a one-slice volume."""
        converted = os.path.join(self._datastore.image_path(), f"{image_id}.nii.gz")
        files = os.listdir(image_dir)
        if os.path.exists(converted) or len(files) != 1:
            return
        image = SimpleITK.ReadImage(os.path.join(image_dir, files[0]), imageIO="GDCMImageIO")
        if image.GetDimension() != 3 or image.GetSize()[2] != 1:
            return
        picture = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        try:
            SimpleITK.WriteImage(image[:, :, 0], picture, True)
            AtomicLocalDatastore.add_image(self, image_id, picture, self._dicom_info(image_id))
        finally:
            os.unlink(picture)

    def _find_series(self, series_id: str) -> Optional[tuple]:
        with pacs_call(self.pacs_url, f"looking up series {series_id}"):
            found = self._client.search_for_series(search_filters={"SeriesInstanceUID": series_id})
        for ds in found:
            if ds.get(SERIES_UID_TAG, {}).get("Value") == [series_id]:
                modality = (ds.get(MODALITY_TAG, {}).get("Value") or [""])[0]
                return str(ds[STUDY_UID_TAG]["Value"][0]), str(modality).upper()
        return None

    def _download_whole(self, study_id: str, series_id: str, target_dir: str, action: str, check=True) -> None:
        """Into a hidden folder first; only a complete, regular series gets the series' name."""
        os.makedirs(os.path.dirname(target_dir), exist_ok=True)
        partial = new_download_folder(os.path.dirname(target_dir))
        try:
            with pacs_call(self.pacs_url, action):
                dicom_web_download_series(study_id, series_id, partial, self._client)
            if check:
                check_series_geometry(partial)
            _fsync_files(partial)  # on disk before the series' name says it is whole
            shutil.rmtree(target_dir, ignore_errors=True)
            os.rename(partial, target_dir)
            fsync_folder(os.path.dirname(target_dir))
        except InvalidSeriesError as error:
            raise RequestError(f"Series {series_id} can't be used: {error}") from error
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any], label_id: str = ""
    ) -> str:
        if label_tag != DefaultLabelTag.FINAL:
            return super().save_label(image_id, label_filename, label_tag, label_info)
        image_uri = self.get_image_uri(image_id)
        if not image_uri:
            raise NotFoundError(f"No series {image_id!r} in the PACS")
        temporary: List[str] = []
        try:
            _check_same_grid(label_filename, image_uri)
            image_info = self.get_image_info(image_id)
            # the answer is in label_info already: the app's one save merges it (lib/datastore/saved_answer.py)
            provenance = provenance_of(label_info, self.app_version)
            image_dir = os.path.join(self._datastore.image_path(), image_id)
            tracking = new_tracking(provenance)  # the SEG's answer segment and the report's groups: one finding
            seg_file = label_to_seg(label_filename, image_dir, provenance, segment_names(label_info), tracking)
            temporary.append(seg_file)
            report_file = self._write_report(
                seg_file, image_dir, label_filename, provenance, tracking, label_info.get("saved_by")
            )
            if report_file:
                temporary.append(report_file)
            with pacs_call(self.pacs_url, f"storing the DICOM SEG of series {image_id}"):
                seg_series = dicom_web_upload_dcm(seg_file, self._client)
            if not seg_series:
                raise PacsError(
                    502, f"The PACS at {self.pacs_url} did not confirm storing the DICOM SEG; nothing saved"
                )
            label_info = {**label_info, **provenance, "SeriesInstanceUID": seg_series}
            label_info.update(self._store_report(report_file, image_id))
            label_info.update({k: image_info.get(k) for k in ("Modality", "PatientID", "StudyInstanceUID")})
            self.index.note_label(image_id, seg_series)  # counted at once: Next Sample and Train see it now
            logger.info(f"DICOM SEG {seg_series} stored for series {image_id}")
            return AtomicLocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
        except SegConversionError as error:
            raise RequestError(f"The label was not saved: {error}") from error
        finally:
            for path in temporary:
                if os.path.exists(path):
                    os.unlink(path)

    def instance_numbers(self, image_id: str) -> Optional[List[Optional[int]]]:
        """The DICOM InstanceNumber of each slice of the series' volume, in the volume's order, for naming the slice an
        answer is on as the archive does; None when the series isn't here."""
        if not UID.match(image_id or ""):
            return None
        with self._download_lock:
            known = self._instance_numbers.get(image_id)
        if known is not None:
            return known
        image_dir = os.path.join(self._datastore.image_path(), image_id)
        if not os.path.isdir(image_dir):
            return None
        headers = [
            pydicom.dcmread(os.path.join(image_dir, name), stop_before_pixels=True) for name in os.listdir(image_dir)
        ]
        numbers = [_instance_number(ds) for ds in volume_order(headers)]
        with self._download_lock:
            self._instance_numbers[image_id] = numbers
        return numbers

    def _write_report(
        self,
        seg_file: str,
        image_dir: str,
        label_file: str,
        provenance: Mapping[str, Any],
        tracking: Tracking,
        saved_by: Optional[str],
    ) -> Optional[str]:
        """The report's file, or None when it can't be made (a source series missing what the SR must copy): the
        label is worth more than its report."""
        try:
            report = measurement_report(seg_file, image_dir, label_file, provenance, tracking, saved_by)
            path = tempfile.NamedTemporaryFile(suffix=".dcm", delete=False).name
            report.save_as(path, write_like_original=False)
            return path
        except Exception as error:  # highdicom and pydicom raise many kinds for odd source series
            logger.error(f"The answer's DICOM SR could not be made ({type(error).__name__}: {error}); storing the SEG")
            return None

    def _store_report(self, report_file: Optional[str], image_id: str) -> Dict[str, Any]:
        """The SEG is stored by now: a report the PACS refuses is logged and noted, the label is kept."""
        if report_file is None:
            return {"report_stored": False}
        try:
            with pacs_call(self.pacs_url, f"storing the answer's report (SR) of series {image_id}"):
                report_series = dicom_web_upload_dcm(report_file, self._client)
        except PacsError as error:
            logger.error(f"The DICOM SR of series {image_id} was not stored: {error.detail}")
            report_series = None
        if not report_series:
            return {"report_stored": False}
        logger.info(f"DICOM SR {report_series} stored for series {image_id}")
        return {"report_stored": True, "ReportSeriesInstanceUID": report_series}

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """With `image_id` (training's path): the SEG `label_id` from the PACS as a label on the image's grid, with
        the question from the SEG in its info; kept until another SEG replaces it."""
        if label_tag != DefaultLabelTag.FINAL or not image_id:
            return LocalDatastore.get_label_uri(self, label_id, label_tag)
        current = LocalDatastore.get_label_uri(self, image_id, label_tag)
        if current and LocalDatastore.get_label_info(self, image_id, label_tag).get("SeriesInstanceUID") == label_id:
            return current
        label_dir = os.path.join(self._datastore.label_path(label_tag), label_id)
        if not (os.path.isdir(label_dir) and os.listdir(label_dir)):
            found = self._find_series(label_id)
            if found is None:
                return ""
            self._download_whole(found[0], label_id, label_dir, f"downloading DICOM SEG {label_id}", check=False)
        seg_file = os.path.join(label_dir, sorted(os.listdir(label_dir))[0])
        label_file = seg_to_label(seg_file, self.get_image_uri(image_id))
        try:
            image_modality = self.get_image_info(image_id).get("Modality")
            info = {**read_provenance(seg_file), "SeriesInstanceUID": label_id, "Modality": image_modality}
            AtomicLocalDatastore.save_label(self, image_id, label_file, label_tag, info)
        finally:
            os.unlink(label_file)
        return LocalDatastore.get_label_uri(self, image_id, label_tag)


def _is_series_uid(image_id: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): the only ids this datastore looks up in the PACS."""
    return bool(UID.match(image_id or "")) and len(image_id) <= 64


def _fsync_files(folder: str) -> None:
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as stream:
                os.fsync(stream.fileno())
    fsync_folder(folder)


def _instance_number(ds) -> Optional[int]:
    try:
        return int(ds.InstanceNumber)
    except (AttributeError, TypeError, ValueError):  # missing, multi-valued or not a number: unnamed
        return None


class GatedPacsDatastore(IdentifierGate, PacsDatastore):
    """What the app uses: the identifier gate, then the PACS datastore (its local files and index written whole)."""


def _check_same_grid(label_file: str, image_file: str) -> None:
    reader = SimpleITK.ImageFileReader()
    sizes = []
    for path in (label_file, image_file):
        reader.SetFileName(path)
        reader.ReadImageInformation()
        sizes.append(tuple(reader.GetSize()))
    if sizes[0] != sizes[1]:
        raise RequestError(f"The label's size {sizes[0]} differs from the series' {sizes[1]}: not its label")
