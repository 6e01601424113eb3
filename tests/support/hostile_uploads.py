"""Upload files that try to make the server read another file on its disk, each pointing at a fresh marker file.

Every form a NRRD or MetaImage reader accepts for pixels kept elsewhere: both spellings and any case of NRRD's data
file field, its `LIST` and `%d` multi-file forms, each line ending teem takes (`\\n`, `\\r\\n`, a lone `\\r`), a
reference placed after 64 KiB of header (past what a partial check reads) or past the server's header limit,
MetaImage's `ElementDataFile` with `=` or `:`, a decoy `LOCAL` after a real reference, and files whose name says
another format than their content. `Marker` tells by its access time whether anything read it (the file system is
mounted `relatime`: the marker's access time is set before its change time, so the next read moves it).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

PIXELS = bytes(range(16))  # 4 x 4 uint8: what a reader that followed the reference would take for the image


@dataclass
class Marker:
    path: Path

    @classmethod
    def fresh(cls, folder: Path, name: str = "marker") -> "Marker":
        path = Path(folder) / name
        path.write_bytes(PIXELS)
        stat = path.stat()
        os.utime(path, (stat.st_mtime - 100, stat.st_mtime))
        return cls(path)

    def was_read(self) -> bool:
        stat = self.path.stat()
        return stat.st_atime > stat.st_mtime - 50


def _nrrd(lines: list[str], end: str = "\n") -> bytes:
    """A header and its blank line; after `data file: LIST` the file names run to the end, with no blank line."""
    listed = any(line.lower().endswith(": list") for line in lines)
    return (end.join(lines) + end + ("" if listed else end)).encode()


def hostile_uploads(folder: Path) -> dict[str, tuple[str, bytes, Marker]]:
    """form name -> (file name to send, content, the marker it points at); a fresh marker for each form."""
    forms: dict[str, tuple[str, bytes, Marker]] = {}

    def add(form: str, file_name: str, content_for) -> None:
        marker = Marker.fresh(folder, f"marker-{len(forms)}")
        forms[form] = (file_name, content_for(marker), marker)

    def nrrd(field_line, end="\n", dimension=2, before=()):
        def content(marker: Marker) -> bytes:
            sizes = "sizes: 4 4" if dimension == 2 else "sizes: 4 4 1"
            head = ["NRRD0004", *before, "type: uint8", f"dimension: {dimension}", sizes, "encoding: raw"]
            return _nrrd(head + field_line(marker).split("\n"), end)

        return content

    add("NRRD data file", "a.nrrd", nrrd(lambda m: f"data file: {m.path}"))
    add("NRRD datafile spelling", "a.nrrd", nrrd(lambda m: f"datafile: {m.path}"))
    add("NRRD DATA FILE in capitals", "a.nrrd", nrrd(lambda m: f"DATA FILE: {m.path}"))
    add("NRRD lone CR line ends", "a.nrrd", nrrd(lambda m: f"data file: {m.path}", end="\r"))
    add("NRRD CRLF line ends", "a.nrrd", nrrd(lambda m: f"data file: {m.path}", end="\r\n"))
    add("NRRD LIST of data files", "a.nrrd", nrrd(lambda m: f"data file: LIST\n{m.path}", dimension=3))
    add(
        "NRRD %d pattern of data files",
        "a.nrrd",
        nrrd(lambda m: f"data file: {str(m.path)[:-1]}%d {str(m.path)[-1]} {str(m.path)[-1]} 1", dimension=3),
    )
    padding = [f"# {'x' * 60}" for _ in range(1100)]  # ~70 KB of comments: past a check that reads 64 KiB
    add("NRRD reference after 64 KiB", "a.nrrd", nrrd(lambda m: f"data file: {m.path}", before=padding))
    too_long = [f"# {'x' * 1000}" for _ in range(1100)]  # ~1.1 MB: past the server's header limit
    add("NRRD header past the limit", "a.nrrd", nrrd(lambda m: f"data file: {m.path}", before=too_long))
    add("NRRD as a Slicer .seg.nrrd", "a.seg.nrrd", nrrd(lambda m: f"data file: {m.path}"))
    add("NRRD named .png", "a.png", nrrd(lambda m: f"data file: {m.path}"))
    add("gzipped NRRD named .nii.gz", "a.nii.gz", lambda m: gzip.compress(nrrd(lambda n: f"data file: {n.path}")(m)))

    def mha(data_lines: str, end: str = "\n", dimension: int = 2):
        def content(marker: Marker) -> bytes:
            sizes = "DimSize = 4 4" if dimension == 2 else "DimSize = 4 4 1"
            head = ["ObjectType = Image", f"NDims = {dimension}", sizes, "ElementType = MET_UCHAR"]
            path = str(marker.path)
            lines = data_lines.format(m=path, stem=path[:-1], last=path[-1]).split("\n")
            return (end.join(head + lines) + end).encode()

        return content

    add("MetaImage ElementDataFile", "a.mha", mha("ElementDataFile = {m}"))
    add("MetaImage ':' separator", "a.mha", mha("ElementDataFile : {m}"))
    add("MetaImage reference then decoy LOCAL", "a.mha", mha("ElementDataFile: {m}\nElementDataFile = LOCAL"))
    add("MetaImage LIST", "a.mha", mha("ElementDataFile = LIST\n{m}", dimension=3))
    add("MetaImage %d pattern", "a.mha", mha("ElementDataFile = {stem}%d {last} {last} 1", dimension=3))
    add("MetaImage lone CR line ends", "a.mha", mha("ElementDataFile = {m}", end="\r"))
    return forms
