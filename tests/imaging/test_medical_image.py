"""Reading images and volumes with their geometry, and writing labels back on exactly that geometry."""

import dataclasses
import gc

import itk
import numpy as np
import pytest

from monailabel_app.demo.sample_dicom import MR_GEOMETRY, mr_series
from monailabel_app.demo.sample_studies import (
    CT_DIRECTION,
    CT_ORIGIN,
    CT_SHAPE,
    CT_SPACING,
    ct_volume,
    write_ct,
    write_png,
)
from monailabel_app.imaging.image_limits import check_image_file
from monailabel_app.imaging.medical_image import InvalidImageError, read_medical_image, write_label


def test_volume_geometry_survives_a_label_round_trip(tmp_path):
    ct = read_medical_image(str(write_ct(tmp_path / "ct.nii.gz")))
    assert ct.is_volume and ct.array.shape == CT_SHAPE and ct.num_slices == CT_SHAPE[0]
    label = np.zeros(CT_SHAPE, dtype=np.uint8)
    label[5, 10:20, 30:50] = 1
    for extension in (".nrrd", ".nii.gz"):
        back = read_medical_image(write_label(label, ct, str(tmp_path / f"label{extension}")))
        assert np.allclose(back.geometry()["spacing"], CT_SPACING)
        assert np.allclose(back.geometry()["origin"], CT_ORIGIN)
        assert np.allclose(back.geometry()["direction"], CT_DIRECTION)
        assert (back.array == label).all()


def test_2d_rgb_rgba_and_grey(tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    image = read_medical_image(str(write_png(rgba, tmp_path / "rgba.png")))
    assert not image.is_volume and image.array.shape == (20, 30, 3) and (image.array[..., 0] == 200).all()
    grey = read_medical_image(str(write_png(np.full((20, 30), 7, np.uint8), tmp_path / "grey.png")))
    assert grey.array.shape == (20, 30)
    written = read_medical_image(write_label(np.ones((20, 30), np.uint8), grey, str(tmp_path / "l.nrrd")))
    assert written.array.shape == (20, 30)


def test_refusals_say_why(tmp_path):
    with pytest.raises(InvalidImageError, match="not found"):
        read_medical_image(str(tmp_path / "missing.nii.gz"))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(write_ct(tmp_path / "whole.nii.gz").read_bytes()[:300])
    with pytest.raises(InvalidImageError, match="truncated"):
        read_medical_image(str(truncated))
    half = tmp_path / "half.nii.gz"
    half.write_bytes(write_ct(tmp_path / "whole.nii.gz").read_bytes()[:40000])
    with pytest.raises(InvalidImageError, match="truncated"):
        read_medical_image(str(half))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    with pytest.raises(InvalidImageError, match="corrupt"):
        read_medical_image(str(garbage))
    vector_volume = itk.image_from_array(np.zeros((4, 5, 6, 2), np.float32), is_vector=True)
    itk.imwrite(vector_volume, str(tmp_path / "4d.nrrd"))
    with pytest.raises(InvalidImageError, match="values per voxel"):
        read_medical_image(str(tmp_path / "4d.nrrd"))


def test_array_outlives_its_itk_image(tmp_path):
    """The array must own its pixels: ITK's array views read freed memory once the ITK image is collected."""
    array = read_medical_image(str(write_ct(tmp_path / "ct.nii.gz"))).array
    gc.collect()
    scratch = [np.full(CT_SHAPE, 7, np.int16) for _ in range(4)]
    assert scratch and (array == ct_volume()).all()


def test_a_dicom_series_folder_reads_with_its_geometry(tmp_path):
    """What MONAI Label hands an infer task for a DICOM study: a folder of slices (here a sagittal MR)."""
    series = mr_series(tmp_path / "mr")
    volume = read_medical_image(str(tmp_path / "mr"))
    geometry = volume.geometry()
    assert volume.is_volume and volume.array.shape == (MR_GEOMETRY.slices, MR_GEOMETRY.rows, MR_GEOMETRY.columns)
    assert np.allclose(
        geometry["spacing"], [MR_GEOMETRY.column_spacing, MR_GEOMETRY.row_spacing, MR_GEOMETRY.slice_spacing]
    )
    assert np.allclose(np.asarray(geometry["direction"])[:, 0], MR_GEOMETRY.row_cosine)
    assert np.allclose(np.asarray(geometry["direction"])[:, 1], MR_GEOMETRY.column_cosine)
    assert len(series.files) == MR_GEOMETRY.slices


def _grey_and_colour(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, bool]]:
    """name -> (pixels, is_vector): every pixel kind a viewer sends, in the formats that carry it."""
    return {
        "grey8.png": (rng.integers(0, 255, (21, 33), dtype=np.uint8), False),
        "grey16.png": (rng.integers(0, 65535, (21, 33), dtype=np.uint16), False),
        "rgb.png": (rng.integers(0, 255, (21, 33, 3), dtype=np.uint8), True),
        "rgba.png": (rng.integers(0, 255, (21, 33, 4), dtype=np.uint8), True),
        "rgb.bmp": (rng.integers(0, 255, (21, 33, 3), dtype=np.uint8), True),
        "grey16.tif": (rng.integers(0, 65535, (21, 33), dtype=np.uint16), False),
        "grey.jpg": (rng.integers(0, 255, (21, 33), dtype=np.uint8), False),
        "ct.nii.gz": (rng.integers(-1000, 2000, (5, 21, 33), dtype=np.int16), False),
        "float.nii": (rng.random((5, 21, 33), dtype=np.float32), False),
        "picture.nii.gz": (rng.integers(0, 255, (21, 33), dtype=np.uint8), False),
        "mr.nrrd": (rng.integers(0, 4000, (5, 21, 33), dtype=np.uint16), False),
        "dose.mha": (rng.random((5, 21, 33)).astype(np.float64), False),
    }


@pytest.mark.parametrize("name", sorted(_grey_and_colour(np.random.default_rng(0))))
def test_each_format_reads_as_itks_own_reader_reads_it(tmp_path, name):
    """The app reads through SimpleITK; ITK's own Python wrapping (the reader before) gives the same pixels and the
    same geometry for each format and pixel kind, an RGBA picture's alpha aside (dropped)."""
    pixels, is_vector = _grey_and_colour(np.random.default_rng(0))[name]
    written = itk.image_from_array(pixels, is_vector=is_vector)
    if pixels.ndim - is_vector == 3:
        written.SetSpacing((0.7, 0.9, 2.5))
        written.SetOrigin((-10.0, 4.5, 30.0))
        written.SetDirection(itk.matrix_from_array(CT_DIRECTION))
    path = str(tmp_path / name)
    itk.imwrite(written, path)
    ours = read_medical_image(path)
    theirs = itk.imread(path)
    expected = itk.array_from_image(theirs)
    expected = expected[..., :3] if name.startswith("rgba") else expected
    assert ours.array.dtype == expected.dtype and np.array_equal(ours.array, expected)
    assert np.allclose(ours.geometry()["spacing"], theirs.GetSpacing())
    assert np.allclose(ours.geometry()["origin"], theirs.GetOrigin())
    assert np.allclose(ours.geometry()["direction"], itk.array_from_matrix(theirs.GetDirection()))


def test_a_dicom_series_reads_as_itks_own_reader_reads_it(tmp_path):
    """The slices in the same order (GDCM's, along the normal), the same pixels and geometry."""
    mr_series(tmp_path / "mr")
    ours = read_medical_image(str(tmp_path / "mr"))
    theirs = itk.imread(str(tmp_path / "mr"))
    assert np.array_equal(ours.array, itk.array_from_image(theirs))
    assert np.allclose(ours.geometry()["origin"], theirs.GetOrigin())
    assert np.allclose(ours.geometry()["direction"], itk.array_from_matrix(theirs.GetDirection()))


def test_pixels_that_are_no_picture_are_refused_from_the_header(tmp_path):
    """A 2D covariant-vector field (three values a pixel, like RGB) was read as a colour picture; a grey-with-alpha
    PNG, which ITK's wrapping read as all black, has a pixel kind SimpleITK names and the message says so."""
    import nrrd
    from PIL import Image

    nrrd.write(
        str(tmp_path / "field.nrrd"),
        np.ones((3, 6, 7), np.float32),
        {"kinds": ["covariant-vector", "domain", "domain"]},
    )
    with pytest.raises(InvalidImageError, match="covariant-vector pixels"):
        read_medical_image(str(tmp_path / "field.nrrd"))
    nrrd.write(
        str(tmp_path / "colour.nrrd"), np.ones((3, 6, 7), np.uint8), {"kinds": ["RGB-color", "domain", "domain"]}
    )
    assert read_medical_image(str(tmp_path / "colour.nrrd")).array.shape == (7, 6, 3)
    Image.fromarray(np.full((20, 21, 2), 90, np.uint8)).save(tmp_path / "grey_alpha.png")
    with pytest.raises(InvalidImageError, match="grey with alpha"):
        read_medical_image(str(tmp_path / "grey_alpha.png"))


def test_a_4d_series_is_refused_before_its_pixels_are_decoded(tmp_path):
    """Its size is in the header; one time point of four is as much a volume as a 3D file."""
    nibabel = pytest.importorskip("nibabel")
    nibabel.save(nibabel.Nifti1Image(np.ones((7, 6, 5, 4), np.int16), np.eye(4)), str(tmp_path / "4d.nii.gz"))
    with pytest.raises(InvalidImageError, match="4D images are not supported"):
        check_image_file(str(tmp_path / "4d.nii.gz"))
    nibabel.save(nibabel.Nifti1Image(np.ones((7, 6, 5, 1), np.int16), np.eye(4)), str(tmp_path / "one.nii.gz"))
    assert read_medical_image(str(tmp_path / "one.nii.gz")).array.shape == (5, 6, 7)


def test_pixel_types_itks_wrapping_could_not_read_are_read(tmp_path):
    """int64 (a whole-number array saved as it is) and 16-bit RGB, refused before, read with their values."""
    nibabel = pytest.importorskip("nibabel")
    whole = np.arange(5 * 6 * 7, dtype=np.int64).reshape(7, 6, 5)
    nibabel.save(nibabel.Nifti1Image(whole, np.eye(4), dtype=np.int64), str(tmp_path / "int64.nii.gz"))
    assert np.array_equal(read_medical_image(str(tmp_path / "int64.nii.gz")).array, whole.transpose(2, 1, 0))
    rgb16 = np.random.default_rng(0).integers(0, 65535, (9, 11, 3), dtype=np.uint16)
    write_png(rgb16, tmp_path / "rgb16.png")
    assert np.array_equal(read_medical_image(str(tmp_path / "rgb16.png")).array, rgb16)


def test_a_dicom_series_whose_slices_differ_in_pixel_format_is_refused(tmp_path):
    """One 8-bit slice in a 16-bit CT series: GDCM's reader cast the whole volume to 8 bits (its HU values lost,
    silently). The series check reads each file's header and refuses the mix before anything is decoded."""
    import pydicom

    from monailabel_app.demo.sample_dicom import ct_series

    first = sorted(ct_series(tmp_path / "ct").files)[0]
    dataset = pydicom.dcmread(first)
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelData = np.full((dataset.Rows, dataset.Columns), 200, np.uint8).tobytes()
    dataset.save_as(first)
    with pytest.raises(InvalidImageError, match="mixes slices"):
        read_medical_image(str(tmp_path / "ct"))


def test_a_2d_label_written_as_metaimage_reads_back(tmp_path):
    """ITK's MetaImage writer gives a 2D image `AnatomicalOrientation = ??` (unknown axes); the header check took
    that for an unusual field and refused the server's own label when a viewer sent it back."""
    picture = read_medical_image(str(write_png(np.zeros((20, 30), np.uint8), tmp_path / "grey.png")))
    label = np.zeros((20, 30), np.uint8)
    label[5:9, 10:20] = 1
    back = read_medical_image(write_label(label, picture, str(tmp_path / "label.mha")))
    assert np.array_equal(back.array, label)


def test_a_dicom_series_folder_that_is_no_grid_is_refused_as_the_pacs_download_is(tmp_path):
    """GDCM stacks what it is given: a series with a missing slice was read squeezed, one whose slices all sit at one
    position (several acquisitions under one UID) with a made-up spacing of 1 mm, one with a tilted slice on the
    wrong plane. A folder of slices is checked as a PACS download is (`series_checks.py`), and the message says why."""
    import pydicom

    from monailabel_app.core.errors import RequestError
    from monailabel_app.demo.sample_dicom import ct_series
    from tests.support.broken_series import missing_slice_series, mixed_orientation_series

    missing_slice_series(tmp_path / "missing")
    with pytest.raises(RequestError, match="missing slices"):
        read_medical_image(str(tmp_path / "missing"))
    mixed_orientation_series(tmp_path / "tilted")
    with pytest.raises(RequestError, match="mixed orientation"):
        read_medical_image(str(tmp_path / "tilted"))
    for path in ct_series(tmp_path / "one_place").files:
        dataset = pydicom.dcmread(path)
        dataset.ImagePositionPatient = [0.0, 0.0, 0.0]
        dataset.save_as(path)
    with pytest.raises(RequestError, match="share one position"):
        read_medical_image(str(tmp_path / "one_place"))


def test_a_tiff_whose_pages_differ_is_refused_and_a_matching_stack_reads(tmp_path):
    """ITK read a two-page TIFF with its first page's size: a second page of another size came out as garbage."""
    from PIL import Image

    first, other = np.full((20, 30), 50, np.uint8), np.full((40, 10), 200, np.uint8)
    Image.fromarray(first).save(tmp_path / "mixed.tif", save_all=True, append_images=[Image.fromarray(other)])
    with pytest.raises(InvalidImageError, match="pages of different sizes, pixel types"):
        read_medical_image(str(tmp_path / "mixed.tif"))
    same = np.full((20, 30), 90, np.uint8)
    Image.fromarray(first).save(tmp_path / "stack.tif", save_all=True, append_images=[Image.fromarray(same)])
    assert np.array_equal(read_medical_image(str(tmp_path / "stack.tif")).array, np.stack([first, same]))


def test_a_tiff_stack_pillow_has_no_mode_for_reads_and_one_that_would_crash_itk_is_refused(tmp_path):
    """The page check read each page with Pillow's decoder, which has no mode for a big-endian uint32, a float16 or a
    big-endian BigTIFF stack that ITK reads: they were refused as corrupt. It compared size and mode only: pages of
    mixed kinds (one tagged NewSubfileType 0 and the others not, or a same-size thumbnail first) passed, and ITK wrote
    them past its volume's buffer (the process died). A loop in the pages' chain kept ITK's header read spinning."""
    import threading

    tifffile = pytest.importorskip("tifffile")
    pages = np.arange(3 * 20 * 30).reshape(3, 20, 30) % 200
    for name, dtype, options in [
        ("uint32_be", ">u4", {}),
        ("float16", "<f2", {}),
        ("int16_bigtiff_be", ">i2", {"bigtiff": True}),
    ]:
        tifffile.imwrite(tmp_path / f"{name}.tif", pages.astype(dtype), photometric="minisblack", **options)
        assert read_medical_image(str(tmp_path / f"{name}.tif")).array.shape == (3, 20, 30)
    page = np.full((20, 30), 7, np.uint16)
    with tifffile.TiffWriter(tmp_path / "tagged_once.tif") as tiff:
        for k in range(3):
            tiff.write(page, photometric="minisblack", extratags=[(254, 4, 1, 0, True)] if k == 0 else [])
    with tifffile.TiffWriter(tmp_path / "thumbnail_first.tif") as tiff:
        for k in range(3):
            tiff.write(page, photometric="minisblack", subfiletype=1 if k == 0 else 0)
    for name in ("tagged_once", "thumbnail_first"):
        with pytest.raises(InvalidImageError, match="pages of different sizes, pixel types or kinds"):
            check_image_file(str(tmp_path / f"{name}.tif"))
    looped = bytearray((tmp_path / "tagged_once.tif").read_bytes())
    first = int.from_bytes(looped[4:8], "little")
    entries = int.from_bytes(looped[first : first + 2], "little")
    looped[first + 2 + 12 * entries : first + 6 + 12 * entries] = first.to_bytes(4, "little")  # page 1 -> page 1
    (tmp_path / "looped.tif").write_bytes(bytes(looped))
    outcome = []
    check = threading.Thread(target=lambda: outcome.append(_refusal(str(tmp_path / "looped.tif"))), daemon=True)
    check.start()
    check.join(120)  # a guard against the hang, not a measure of speed
    assert outcome and "form a loop" in outcome[0]


def _refusal(path: str) -> str:
    try:
        check_image_file(path)
    except InvalidImageError as error:
        return str(error)
    return "accepted"


def test_a_dicom_series_whose_slice_position_is_no_number_is_refused(tmp_path):
    """A NaN ImagePositionPatient sorted last and passed every spacing test: GDCM stacked the slices with a spacing
    made up from it. Text or two values in the tag failed as a bare numpy error; all are a refusal naming the tag."""
    import pydicom

    from monailabel_app.core.errors import RequestError
    from monailabel_app.demo.sample_dicom import ct_series

    for name, position in (("nan", [0.0, 0.0, "nan"]), ("two_values", [0.0, 0.0])):
        files = sorted(ct_series(tmp_path / name).files)
        dataset = pydicom.dcmread(files[4])
        dataset.ImagePositionPatient = position
        dataset.save_as(files[4])
        with pytest.raises(RequestError, match="ImagePositionPatient of 3 numbers"):
            read_medical_image(str(tmp_path / name))


def test_a_thin_slice_series_with_positions_rounded_to_two_decimals_reads(tmp_path):
    """0.625 mm slices whose positions a scanner wrote with 2 decimals are 0.62 and 0.63 mm apart (1.6% off): a
    complete series, which the 1% rule alone refused as "missing slices"."""
    import pydicom

    from monailabel_app.demo.sample_dicom import CT_GEOMETRY, ct_series

    thin = dataclasses.replace(CT_GEOMETRY, slice_spacing=0.625)
    for path in ct_series(tmp_path / "thin", thin).files:
        dataset = pydicom.dcmread(path)
        dataset.ImagePositionPatient = [round(float(v), 2) for v in dataset.ImagePositionPatient]
        dataset.save_as(path)
    volume = read_medical_image(str(tmp_path / "thin"))
    assert volume.array.shape[0] == thin.slices and abs(volume.geometry()["spacing"][2] - 0.625) < 0.01


def test_a_folder_of_two_series_is_refused_not_read_as_one_of_them(tmp_path):
    """GDCM read the first series of the folder (6 of 12 files here) and said nothing of the other."""
    from monailabel_app.demo.sample_dicom import ct_series

    ct_series(tmp_path / "both")
    for path in mr_series(tmp_path / "mr").files:
        path.rename(tmp_path / "both" / path.name)
    with pytest.raises(InvalidImageError, match="holds 2 series"):
        read_medical_image(str(tmp_path / "both"))
