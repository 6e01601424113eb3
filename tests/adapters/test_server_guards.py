"""The server's guards in-process: the identifier gate, its fence, the limits, admission control, the exposure warning,
the header checks of images, and the version store."""

from __future__ import annotations

import asyncio
import os
import shutil

import nibabel
import numpy as np
import pytest

from lib.common.identifiers import (
    InvalidIdentifierError,
    check_id,
    check_session_id,
    check_tag,
    is_inside,
    upload_stem,
    upload_suffix,
)
from lib.common.limits import ServerLimits
from lib.datastore.versions import VersionStore
from lib.options.start_options import parse_start_options
from lib.server.admission import Admission, ServerBusyError
from lib.server.asgi import bind_host, warn_if_exposed
from monailabel_app.demo.sample_studies import write_ct, write_png, xray_picture
from monailabel_app.imaging.image_limits import ImageLimits, ImageTooLargeError, InvalidImageError, check_image_file
from tests.support.hostile_requests import complex_nifti, detached_nrrd, external_mha, png_bomb


@pytest.mark.parametrize(
    "good",
    [
        "ct_chest_lesion",
        "CT chest 2",
        "1.2.826.0.1.3680043.8.498.123",
        "Patient (left) #3",
        "Röntgen-Thorax",
        "a" * 128,
    ],
)
def test_ordinary_ids_pass(good):
    assert check_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../x",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "..",
        ".",
        ".versions",
        "x..y",
        " padded",
        "padded ",
        "a\x00b",
        "a\nb",
        "gnp.\u202etxt",
        "zero\u200bwidth",
        "a" * 129,
        "é" * 101,
        None,
        7,
    ],
)
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(InvalidIdentifierError):
        check_id(bad)


def test_tags_sessions_and_upload_names():
    assert check_tag("final") == "final" and check_tag("original") == "original"
    for bad in ("../x", "final/..", "", "a" * 65, "-x", "fin al"):
        with pytest.raises(InvalidIdentifierError):
            check_tag(bad)
    assert check_session_id("6f1c8a52-0000-11ef-8000-000000000000")
    with pytest.raises(InvalidIdentifierError):
        check_session_id("../6f1c8a52-0000-11ef-8000-000000000000")
    allowed = (".nii.gz", ".nii", ".png")
    assert upload_suffix("/tmp/x/ct.NII.GZ", allowed) == ".nii.gz" and upload_suffix("a.nii", allowed) == ".nii"
    for bad in ("probe.py", ".png", "x.png.py", None):
        with pytest.raises(InvalidIdentifierError):
            upload_suffix(bad, allowed)
    assert upload_stem("C:\\Users\\me\\CT chest.nii.gz", ".nii.gz") == "CT chest"
    assert upload_stem("../../etc/.hidden.png", ".png") == "upload"


def test_the_fence_resolves_links(tmp_path):
    root = tmp_path / "studies"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    assert is_inside(root, root / "a.png") and not is_inside(root, root / "link" / "a.png")
    assert not is_inside(root, root / ".." / "a.png")


def test_limits_come_from_conf_and_bad_values_stop_the_start():
    conf = {"max_upload_mb": "2", "max_image_pixels": "100", "keep_versions": "4"}
    limits = ServerLimits.from_options(parse_start_options(conf))
    assert limits.max_upload_bytes == 2 << 20 and limits.image.max_pixels_2d == 100 and limits.keep_versions == 4
    for bad in ({"max_upload_mb": "lots"}, {"max_pending_requests": "0"}, {"max_volume_voxels": "-5"}):
        with pytest.raises(ValueError, match="--conf"):
            parse_start_options(bad)


def test_admission_refuses_past_its_bound_with_retry_after():
    async def scenario():
        gate = Admission(2)
        async with gate.slot(), gate.slot():
            with pytest.raises(ServerBusyError) as refused:
                async with gate.slot():
                    pass
            assert refused.value.http_status == 503 and refused.value.retry_after_s > 0
        async with gate.slot():  # released: admits again
            return gate.active

    assert asyncio.run(scenario()) == 1


def test_exposure_warning_beyond_loopback_without_auth(capsys):
    assert bind_host(["monailabel", "start_server", "--host", "10.1.2.3"]) == "10.1.2.3"
    assert bind_host(["monailabel", "start_server", "-i", "::1"]) == "::1"
    assert bind_host(["monailabel", "start_server"]) == "0.0.0.0"  # MONAI Label's own default
    assert warn_if_exposed("0.0.0.0", auth_enabled=False) and "MONAI_LABEL_AUTH_ENABLE" in capsys.readouterr().err
    assert not warn_if_exposed("0.0.0.0", auth_enabled=True)
    assert not warn_if_exposed("127.0.0.1", False) and not warn_if_exposed("localhost", False)
    assert not warn_if_exposed("::1", False)


def test_image_headers_are_checked_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    with pytest.raises(ImageTooLargeError, match="32768 x 32768"):
        check_image_file(str(bomb))
    picture = write_png(xray_picture(), tmp_path / "xray.png")
    assert check_image_file(str(picture)).size == (240, 180)
    with pytest.raises(ImageTooLargeError, match="max_image_pixels"):
        check_image_file(str(picture), ImageLimits(max_pixels_2d=1000))
    with pytest.raises(ImageTooLargeError, match="max_volume_voxels"):
        check_image_file(str(write_ct(tmp_path / "ct.nii.gz")), ImageLimits(max_voxels_3d=1000))
    one_slice = tmp_path / "one_slice.nii.gz"  # a picture stored as a volume of one slice: the picture limit holds
    nibabel.save(nibabel.Nifti1Image(np.zeros((60, 50, 1), np.uint8), np.eye(4)), str(one_slice))
    with pytest.raises(
        ImageTooLargeError, match=r"each slice of 60 x 50 x 1: 60 x 50 = 3,000 pixels.*max_image_pixels"
    ):
        check_image_file(str(one_slice), ImageLimits(max_pixels_2d=1000))
    for name, content, reason in (
        ("complex.nii.gz", complex_nifti(), "complex"),
        ("detached.nrrd", detached_nrrd(), "separate data file"),
        ("external.mha", external_mha(), "elsewhere"),
        ("header.nhdr", b"NRRD0004\n", "no image type"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InvalidImageError, match=reason):
            check_image_file(str(tmp_path / name))


def test_a_one_slice_volume_is_a_picture_to_ground(tmp_path):
    import itk

    from monailabel_app.imaging.medical_image import read_medical_image

    itk.imwrite(itk.image_from_array(np.ones((1, 32, 32), np.int16)), str(tmp_path / "one.nii.gz"))
    assert read_medical_image(str(tmp_path / "one.nii.gz")).num_slices == 1


def test_the_version_store_keeps_the_newest(tmp_path):
    store = VersionStore(tmp_path, keep=2)
    for number in range(4):
        kept = tmp_path / f"label{number}.png"
        kept.write_text(str(number))
        store.keep_file("ct", "label-final", kept, ".png", {"n": number}, "replaced")
        assert not kept.exists()  # moved, not copied
    listed = store.list("ct")
    assert len(listed) == 2 and all(entry["reason"] == "replaced" for entry in listed)
    contents = sorted(p.read_text() for p in (tmp_path / ".versions" / "ct").glob("*.png"))
    assert contents == ["2", "3"] and len(os.listdir(tmp_path / ".versions" / "ct")) == 4


def test_the_datastore_index_survives_a_failed_write(tmp_path):
    from lib.datastore.local import GatedLocalDatastore

    write_png(xray_picture(), tmp_path / "xray.png")
    store = GatedLocalDatastore(str(tmp_path), keep_versions=2, extensions=["*.png"])
    index = tmp_path / "datastore_v2.json"
    before = index.read_text()
    deep: dict = {}
    for _ in range(5000):
        deep = {"a": deep}
    with pytest.raises(RecursionError):
        store.update_image_info("xray", {"deep": deep})  # MONAI Label's own writer left the index empty here
    assert index.read_text() == before and GatedLocalDatastore(str(tmp_path), keep_versions=2, extensions=["*.png"])


def test_params_deeper_than_the_limit_are_refused():
    from lib.server.uploads import MAX_PARAMS_DEPTH, parse_params
    from monailabel_app.core.errors import RequestError

    nested = "[" * MAX_PARAMS_DEPTH + "]" * MAX_PARAMS_DEPTH
    assert parse_params('{"a": %s}' % ("[" * (MAX_PARAMS_DEPTH - 1) + "]" * (MAX_PARAMS_DEPTH - 1)))
    with pytest.raises(RequestError, match="deeper"):
        parse_params('{"a": %s}' % nested)


def test_decoded_size_is_bounded_not_only_the_voxels(tmp_path):
    from tests.support.hostile_requests import float64_nrrd_bomb

    (tmp_path / "big.nrrd").write_bytes(float64_nrrd_bomb())
    with pytest.raises(ImageTooLargeError, match="max_decoded_mb"):
        check_image_file(str(tmp_path / "big.nrrd"))


def test_random_next_sample_survives_times_in_the_future(tmp_path):
    from lib.activelearning.random import Random
    from lib.datastore.local import GatedLocalDatastore

    for name in ("a", "b"):
        write_png(xray_picture(), tmp_path / f"{name}.png")
    store = GatedLocalDatastore(str(tmp_path), keep_versions=2, extensions=["*.png"])
    store.update_image_info("a", {"strategy": {"random": {"ts": 99_999_999_999}}})
    store.update_image_info("b", {"strategy": {"random": {"ts": "soon"}}})
    for _ in range(5):
        assert Random()({"strategy": "random"}, store)["id"] in ("a", "b")


def test_a_request_folder_someone_else_could_reach_is_never_used(tmp_path, monkeypatch):
    """The temp folder is shared: a `medreasoner-requests/` another user made first, or one open to others, or a
    link in its place, is refused with the folder named, never written into."""
    import lib.common.scratch as scratch

    root = tmp_path / "medreasoner-requests"
    monkeypatch.setattr(scratch, "SCRATCH_ROOT", root)
    assert scratch.new_scratch().parent == root / str(os.getpid())  # made here: private, this user's
    root.chmod(0o777)  # then opened to everyone (or made so by another user first)
    with pytest.raises(RuntimeError, match="not a private folder"):
        scratch.new_scratch()
    root.chmod(0o700)
    shutil.rmtree(root / str(os.getpid()))
    (root / str(os.getpid())).symlink_to(tmp_path)  # a link where this process's folder goes
    with pytest.raises(RuntimeError, match="not a private folder"):
        scratch.new_scratch()
