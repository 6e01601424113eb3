"""U-MRG-14K parquet files (`train.parquet`, `test.parquet`): reading them lazily, and writing small ones for tests.

Columns read (docs/method.md §6), tolerant of how Hugging Face `datasets` and verl write them:
- `images`, `masks`: a list holding one image; an image is PNG/JPEG bytes or a dict {"bytes": ..., "path": ...}
  (`path` relative to the parquet's folder is used when `bytes` is empty). Masks are 0/255 PNGs: pixels above
  half the mask's maximum are foreground. 16-bit pictures are stretched to 8 bits like `windowing`'s "auto"; grey
  becomes RGB.
- `prompt`: a chat list; the question is extracted from its first user turn (`extract_question`).
- `reward_model`: a dict whose `ground_truth` is the JSON string {"bbox_2d", "point_2d"}. When it is missing or
  malformed the ground truth is computed from the mask instead.
- `extra_info`: a dict, read with normalised keys (`data.metadata`): "id" (else "sample_id", else "index", else
  "<file stem>:<row>") for the sample id; "modality"/"image_modality", "supercategory"/"super_category", "category".
  Top-level columns of those names are used when `extra_info` lacks them. The whole `extra_info` and `data_source`
  are kept in `GroundingSample.extra`.
Rows are read one record batch (or, for `sample(i)`, one row group) at a time, never the whole file.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from monailabel_app.core.errors import RequestError
from monailabel_app.data.ground_truth import ground_truth_from_mask
from monailabel_app.data.load_report import (
    EMPTY_MASK,
    MISSING_FILE,
    MISSING_QUESTION,
    NO_GROUND_TRUTH,
    SHAPE_MISMATCH,
    UNREADABLE_IMAGE,
    LoadReport,
    SkippedSample,
    build_or_skip,
)
from monailabel_app.data.metadata import categories, find_value, parse_ground_truth
from monailabel_app.data.sample import GroundingSample
from monailabel_app.imaging.windowing import to_display_rgb

DATA_SOURCE = "umrg"  # the value verl's reward dispatch expects for U-MRG rows
READ_BATCH_ROWS = 32

_PLACEHOLDERS = re.compile(r"<image>|<video>|<\|vision_start\|>|<\|vision_end\|>|<\|image_pad\|>|<\|video_pad\|>")
_QUESTION_LINE = re.compile(r"^\s*Question\s*:\s*(.+?)(?:\n\s*\n|\Z)", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_PLEASE_ANSWER = re.compile(r"Please answer\s+(.+?)\s+with bbox and points", re.IGNORECASE | re.DOTALL)


def extract_question(prompt: object) -> str:
    """The bare question from a U-MRG `prompt` (chat list, one turn, or plain text); "" when there is none.

    U-MRG stores the bare question as the first turn's content, but copies re-exported with the instruction template
    baked in exist. So: take the first user turn, join its text parts, drop image placeholders (`<image>`, Qwen's
    vision tokens), then take the paragraph after a "Question:" line (our templates and the reference "think"
    prompt), else the X of the reference no-think prompt "Please answer X with bbox and points", else the whole
    remaining text. Whitespace runs become single spaces.
    """
    if isinstance(prompt, (list, tuple)):  # a chat: the first user turn (the first turn when roles are absent)
        turns = [turn for turn in prompt if isinstance(turn, dict)]
        user_turns = [turn for turn in turns if str(turn.get("role", "")).lower() == "user"]
        prompt = (user_turns or turns or [{}])[0]
    if isinstance(prompt, dict):
        prompt = prompt.get("content", "")
    if isinstance(prompt, (list, tuple)):  # content parts: [{"type": "image"}, {"type": "text", "text": ...}]
        prompt = "".join(str(part.get("text") or "") for part in prompt if isinstance(part, dict))
    if not isinstance(prompt, str):
        return ""
    text = _PLACEHOLDERS.sub("", prompt)
    match = _QUESTION_LINE.search(text) or _PLEASE_ANSWER.search(text)
    return " ".join((match.group(1) if match else text).split())


class UmrgParquet:
    """One U-MRG parquet file: `len()`, lazy iteration with a skip tally, and `sample(i)` for shuffled training."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"U-MRG parquet file not found: {self.path}")
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as error:
            raise RequestError(f"{self.path} is not a readable parquet file: {error}") from None
        row_counts = [self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)]
        self._row_group_starts = np.cumsum([0, *row_counts])
        self._cached_group: tuple[int, list[dict]] = (-1, [])

    def __len__(self) -> int:
        return self._file.metadata.num_rows

    def samples(self, report: Optional[LoadReport] = None) -> Iterator[GroundingSample]:
        """Every usable row in file order; unusable rows are counted in `report`."""
        report = report if report is not None else LoadReport()
        row_index = 0
        for batch in self._file.iter_batches(batch_size=READ_BATCH_ROWS):
            for row in batch.to_pylist():
                sample_id = self._sample_id(row, row_index)
                yield from build_or_skip(report, sample_id, lambda: [self._row_sample(row, sample_id)])
                row_index += 1

    def usable(self, report: Optional[LoadReport] = None) -> "UsableRows":
        """The usable rows as a sequence that decodes a sample only when it is read (training shuffles by index):
        one pass finds which rows are usable, keeping none of their pixels, so a 14K-sample set costs no 27 GB."""
        report = report if report is not None else LoadReport()
        usable = []
        for index in range(len(self)):
            if build_or_skip(report, f"{self.path.stem}:{index}", lambda: [self.sample(index)]):
                usable.append(index)
        return UsableRows(self, usable)

    def sample(self, index: int) -> GroundingSample:
        """Row `index`; raises `SkippedSample` if it is unusable. Caches one row group, so read in group order."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} is outside 0..{len(self) - 1}")
        group = int(np.searchsorted(self._row_group_starts, index, side="right") - 1)
        if self._cached_group[0] != group:
            self._cached_group = (group, self._file.read_row_group(group).to_pylist())
        row = self._cached_group[1][index - self._row_group_starts[group]]
        return self._row_sample(row, self._sample_id(row, index))

    def _sample_id(self, row: dict, row_index: int) -> str:
        found = find_value(row.get("extra_info"), "id", "sample_id", "index")
        return str(found) if found is not None else f"{self.path.stem}:{row_index}"

    def _row_sample(self, row: dict, sample_id: str) -> GroundingSample:
        question = extract_question(row.get("prompt"))
        if not question:
            raise SkippedSample(MISSING_QUESTION, "the prompt holds no question text")
        image = _decode_picture(self._image_bytes(row.get("images"), "image"), "image")
        mask = None
        mask_bytes = self._image_bytes(row.get("masks"), "mask", required=False)
        if mask_bytes is not None:
            mask = _decode_mask(mask_bytes)
            if mask.shape != image.shape[:2]:
                raise SkippedSample(SHAPE_MISMATCH, f"mask {list(mask.shape)} vs image {list(image.shape[:2])}")
            if not mask.any():
                raise SkippedSample(EMPTY_MASK, "the mask has no foreground pixel")
        truth = parse_ground_truth(find_value(row.get("reward_model"), "ground_truth"))
        if truth is None:
            if mask is None:
                raise SkippedSample(NO_GROUND_TRUTH, "no valid reward_model.ground_truth and no mask")
            truth = ground_truth_from_mask(mask)
        extra_info = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
        return GroundingSample(
            sample_id=sample_id,
            image=image,
            question=question,
            ground_truth=truth,
            mask=mask,
            **categories(extra_info, row),
            extra={"data_source": row.get("data_source"), "extra_info": extra_info, "source": str(self.path)},
        )

    def _image_bytes(self, column_value: object, what: str, required: bool = True) -> Optional[bytes]:
        entry = column_value[0] if isinstance(column_value, (list, tuple)) and column_value else column_value
        if isinstance(entry, dict):
            if entry.get("bytes"):
                return entry["bytes"]
            if entry.get("path"):
                path = self.path.parent / entry["path"]
                if not path.is_file():
                    raise SkippedSample(MISSING_FILE, f"the {what} file {str(path)!r} does not exist")
                return path.read_bytes()
        if isinstance(entry, (bytes, bytearray)) and entry:
            return bytes(entry)
        if required:
            raise SkippedSample(MISSING_FILE, f"the row has no {what}")
        return None


def _open_picture(data: bytes, what: str) -> Image.Image:
    try:
        picture = Image.open(io.BytesIO(data))
        picture.load()
    except Exception as error:  # PIL raises several kinds for truncated or unknown data
        raise SkippedSample(UNREADABLE_IMAGE, f"the {what} bytes are not a readable picture ({error})") from None
    return picture


def _decode_picture(data: bytes, what: str) -> np.ndarray:
    """RGB uint8; 8-bit grey/RGB as stored, deeper grey stretched like the "auto" window, palettes/alpha converted."""
    picture = _open_picture(data, what)
    if picture.mode in ("L", "RGB", "I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(picture)
    else:
        pixels = np.asarray(picture.convert("RGB"))
    return to_display_rgb(pixels, "auto")


def _decode_mask(data: bytes) -> np.ndarray:
    """Pixels above half the mask's maximum are foreground: 0/255 and 0/1 masks alike, JPEG ringing dropped."""
    picture = _open_picture(data, "mask")
    pixels = np.asarray(picture if picture.mode in ("L", "1", "I", "I;16", "F") else picture.convert("L"))
    return pixels > pixels.max() / 2


def _png_bytes(pixels: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG")
    return stream.getvalue()


_IMAGE_LIST = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
UMRG_SCHEMA = pa.schema(
    [
        ("images", _IMAGE_LIST),
        ("masks", _IMAGE_LIST),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("data_source", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("id", pa.string()),
                    ("index", pa.int64()),
                    ("modality", pa.string()),
                    ("supercategory", pa.string()),
                    ("category", pa.string()),
                ]
            ),
        ),
    ]
)


def _umrg_row(sample: GroundingSample, index: int) -> dict:
    mask = [] if sample.mask is None else [{"bytes": _png_bytes(sample.mask.astype(np.uint8) * 255), "path": None}]
    return {
        "images": [{"bytes": _png_bytes(np.ascontiguousarray(sample.image)), "path": None}],
        "masks": mask,
        "prompt": [{"role": "user", "content": sample.question}],
        "data_source": sample.extra.get("data_source") or DATA_SOURCE,
        "reward_model": {"ground_truth": json.dumps(sample.ground_truth), "style": "rule"},
        "extra_info": {
            "id": sample.sample_id,
            "index": index,
            "modality": sample.modality,
            "supercategory": sample.supercategory,
            "category": sample.category,
        },
    }


def write_umrg_parquet(samples: Iterable[GroundingSample], path: Path | str, row_group_rows: int = 64) -> Path:
    """A U-MRG-format parquet of `samples` (bare question as the prompt, PNG image and 0/255 mask), for tests/demos.

    Writes `row_group_rows` rows at a time, so a generator of samples never sits in memory whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, UMRG_SCHEMA) as writer:
        rows: list[dict] = []
        for index, sample in enumerate(samples):
            rows.append(_umrg_row(sample, index))
            if len(rows) == row_group_rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=UMRG_SCHEMA))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=UMRG_SCHEMA))
    return path


class UsableRows(Sequence[GroundingSample]):
    """A parquet's usable rows, decoded on access."""

    def __init__(self, parquet: UmrgParquet, rows: list[int]):
        self.parquet, self.rows = parquet, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        return self.parquet.sample(self.rows[position])
