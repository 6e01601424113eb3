"""The gate for uploaded image files, in-process: every way a NRRD or MetaImage header can name pixels elsewhere is
refused without reading the file it names, a file must be the format its name says, and a good file is rewritten
into one that reads exactly as before."""

from __future__ import annotations

import gzip
import struct

import itk
import numpy as np
import pytest

from lib.server.uploads import admit_file
from monailabel_app.imaging.file_formats import format_of
from monailabel_app.imaging.image_limits import check_image_file
from monailabel_app.imaging.invalid_image import InvalidImageError
from monailabel_app.imaging.medical_image import read_medical_image
from monailabel_app.imaging.self_contained import MAX_HEADER_BYTES, teem_lines
from tests.support.hostile_uploads import hostile_uploads

# forms a plain ITK read does not follow (a name ITK has no reader for, or line ends MetaIO does not split on): they
# are refused all the same, as files that are not what they claim or not read by the format's rules
NOT_FOLLOWED_BY_ITK = {"NRRD named .png", "gzipped NRRD named .nii.gz", "MetaImage lone CR line ends"}


def test_every_hostile_form_is_refused_before_the_file_it_names_is_read(tmp_path):
    forms = hostile_uploads(tmp_path)
    for number, (form, (name, content, marker)) in enumerate(forms.items()):
        upload = tmp_path / f"upload-{number}" / name
        upload.parent.mkdir()
        upload.write_bytes(content)
        with pytest.raises(InvalidImageError):
            admit_file(upload)
        with pytest.raises(InvalidImageError):
            check_image_file(str(upload))  # a file already on disk is checked the same way on every read
        assert not marker.was_read(), form


def test_the_forms_are_real_attacks_on_a_plain_reader(tmp_path):
    """Without the gate, ITK reads the named file for every form but the disguised ones: the test above can fail."""
    forms, followed = hostile_uploads(tmp_path), set()
    for number, (form, (name, content, marker)) in enumerate(forms.items()):
        upload = tmp_path / f"plain-{number}" / name
        upload.parent.mkdir()
        upload.write_bytes(content)
        try:
            pixels = itk.array_from_image(itk.imread(str(upload))).ravel()
        except Exception:  # ITK raises bare RuntimeErrors
            continue
        if marker.was_read() and list(pixels[:4]) == [0, 1, 2, 3]:
            followed.add(form)
    assert followed == set(forms) - NOT_FOLLOWED_BY_ITK


def test_a_header_is_split_at_every_line_end_teem_takes():
    head = b"NRRD0004\ntype: uint8\r\ndimension: 2\rsizes: 4 4\n\r\nDATA"
    lines = []
    for line, after in teem_lines(head, "x.nrrd"):
        lines.append((line, after))
        if not line:  # the blank line ends the header; what follows is data, not lines
            break
    assert [line for line, _ in lines] == [b"NRRD0004", b"type: uint8", b"dimension: 2", b"sizes: 4 4", b""]
    assert head[lines[-1][1] :] == b"DATA"


def test_a_good_nrrd_is_rewritten_plainly_and_reads_the_same(tmp_path):
    """A Slicer-style .seg.nrrd: CRLF line ends, comments, key/value pairs, gzip data, geometry."""
    volume = np.random.default_rng(0).integers(0, 3, (5, 6, 7)).astype(np.uint8)
    image = itk.image_from_array(volume)
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((-10.0, 5.0, 3.0))
    written = tmp_path / "written.nrrd"
    itk.imwrite(image, str(written), compression=True)
    header, _, data = written.read_bytes().partition(b"\n\n")
    crlf = header.replace(b"\n", b"\r\n") + b"\r\n# a comment\r\nSegment0_Name:=lesion\r\n\r\n" + data
    upload = tmp_path / "label.seg.nrrd"
    upload.write_bytes(crlf)
    admit_file(upload)
    rewritten = upload.read_bytes()
    assert b"\r" not in rewritten.partition(b"\n\n")[0] and b"Segment0_Name:=lesion" in rewritten
    assert b"# a comment" not in rewritten
    before, after = read_medical_image(str(written)), read_medical_image(str(upload))
    assert np.array_equal(before.array, after.array) and before.geometry() == after.geometry()


def test_a_good_metaimage_is_rewritten_and_reads_the_same(tmp_path):
    volume = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    for compressed in (False, True):
        image = itk.image_from_array(volume)
        image.SetSpacing((1.5, 1.0, 3.0))
        upload = tmp_path / f"volume-{compressed}.mha"
        itk.imwrite(image, str(upload), compression=compressed)
        original = read_medical_image(str(upload))
        admit_file(upload)
        again = read_medical_image(str(upload))
        assert np.array_equal(original.array, again.array) and original.geometry() == again.geometry()
        assert upload.read_bytes().count(b"ElementDataFile") == 1


def test_a_header_longer_than_the_limit_is_refused_not_cut(tmp_path):
    upload = tmp_path / "long.nrrd"
    comments = b"# " + b"x" * 100 + b"\n"
    upload.write_bytes(
        b"NRRD0004\n" + comments * (MAX_HEADER_BYTES // len(comments) + 1) + b"type: uint8\ndimension: 2\n"
        b"sizes: 4 4\nencoding: raw\n\n" + bytes(16)
    )
    with pytest.raises(InvalidImageError, match="refused, not cut"):
        admit_file(upload)


def test_a_file_must_be_what_its_name_says(tmp_path):
    png = tmp_path / "picture.png"
    itk.imwrite(itk.image_from_array(np.zeros((8, 8), np.uint8)), str(png))
    assert format_of(str(png)).name == "PNG"
    disguised = tmp_path / "picture.nrrd"
    disguised.write_bytes(png.read_bytes())
    with pytest.raises(InvalidImageError, match="holds PNG"):
        admit_file(disguised)
    nifti = tmp_path / "pair.nii"
    header = bytearray(352)
    header[:4] = struct.pack("<i", 348)
    header[344:348] = b"ni1\x00"  # a header whose data lives in a separate .img file
    nifti.write_bytes(bytes(header))
    with pytest.raises(InvalidImageError, match="not one"):
        admit_file(nifti)
    (tmp_path / "pair.nii.gz").write_bytes(gzip.compress(bytes(header)))
    with pytest.raises(InvalidImageError, match="not one"):
        admit_file(tmp_path / "pair.nii.gz")
