"""One entry point for training and evaluation data: a U-MRG parquet, a folder with `index.json`, or datastore entries.

    report = LoadReport()
    for sample in load_samples("data/test.parquet", report):
        ...
    print(report.summary())

Unusable samples are skipped and counted in `report` (see `load_report`); only a source that can't be read at all
(missing path, unknown layout, a file that isn't parquet, a malformed index) raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union

from monailabel_app.core.errors import RequestError
from monailabel_app.data.datastore_samples import datastore_samples
from monailabel_app.data.folder_samples import INDEX_FILE, folder_samples
from monailabel_app.data.load_report import LoadReport
from monailabel_app.data.sample import GroundingSample
from monailabel_app.data.umrg_parquet import UmrgParquet

Source = Union[str, Path, Sequence[Mapping]]


def load_samples(
    source: Source,
    report: Optional[LoadReport] = None,
    label_infos: Optional[Mapping[str, Mapping]] = None,
) -> Iterator[GroundingSample]:
    """Samples from `source`, lazily:
    - a `.parquet` file: U-MRG format (`umrg_parquet`);
    - a folder with `index.json`: the folder layout (`folder_samples`);
    - a list of datastore entries {"image", "label"[, "label_info"]}: labels from MONAI Label (`datastore_samples`),
      with `label_infos` mapping label paths to their info when the entries don't carry it.
    A folder holding only parquet files is refused rather than guessed at: name `train.parquet` or `test.parquet`.
    """
    report = report if report is not None else LoadReport()
    if not isinstance(source, (str, Path)):
        return datastore_samples(source, label_infos, report)
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".parquet":
        return UmrgParquet(path).samples(report)
    if path.is_dir() and (path / INDEX_FILE).is_file():
        return folder_samples(path, report)
    if not path.exists():
        raise FileNotFoundError(f"Data source not found: {path}")
    parquet_files = sorted(p.name for p in path.glob("*.parquet")) if path.is_dir() else []
    if parquet_files:
        raise RequestError(
            f"{path} holds {', '.join(parquet_files)}: pass one of them, e.g. {path / parquet_files[0]}."
        )
    raise RequestError(f"{path} is neither a .parquet file nor a folder with an {INDEX_FILE}.")
