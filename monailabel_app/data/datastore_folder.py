"""A MONAI Label folder datastore's final labels, read where no server runs (the evaluation's `--datastore`).

The datastore's index is MONAI Label's format, so MONAI Label's own reader reads it, imported only here and only when
this is called (the core otherwise never imports MONAI Label).
"""

from __future__ import annotations

from pathlib import Path

from monailabel_app.data.datastore_samples import final_label_entries

DATASTORE_EXTENSIONS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff")


def datastore_entries(datastore_dir: Path) -> list[dict]:
    """The final labels of a MONAI Label local datastore as {"image", "label", "label_info"} (read only)."""
    from monailabel.datastore.local import LocalDatastore

    if not (Path(datastore_dir) / "datastore_v2.json").is_file():
        raise FileNotFoundError(f"{datastore_dir} is not a MONAI Label datastore (no datastore_v2.json)")
    datastore = LocalDatastore(str(datastore_dir), extensions=DATASTORE_EXTENSIONS, read_only=True)
    return final_label_entries(datastore)
