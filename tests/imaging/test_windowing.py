"""CT/MR intensities to the 8-bit picture the models see."""

import numpy as np
import pytest

from monailabel_app.imaging.windowing import InvalidWindowError, to_display_rgb, window_bounds


def test_soft_tissue_window_maps_level_to_mid_grey():
    hu = np.array([[-160.0, 40.0, 240.0]], dtype=np.float32)  # level 40, width 400 -> [-160, 240]
    rgb = to_display_rgb(hu, "soft_tissue")
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_custom_level_width_and_errors():
    assert window_bounds(np.zeros((2, 2)), "100,50") == (75.0, 125.0)
    with pytest.raises(InvalidWindowError, match="Unknown window"):
        window_bounds(np.zeros((2, 2)), "mediastinum-ish")
    with pytest.raises(InvalidWindowError, match="positive"):
        window_bounds(np.zeros((2, 2)), "40,0")


def test_auto_keeps_8bit_pictures_and_stretches_others():
    picture = np.arange(256, dtype=np.uint8).reshape(16, 16) // 2
    assert (to_display_rgb(picture, "auto")[..., 1] == picture).all()
    mr = np.linspace(0, 3000, 10000, dtype=np.float32).reshape(100, 100)
    stretched = to_display_rgb(mr, "auto")[..., 0]
    assert stretched.min() == 0 and stretched.max() == 255


def test_rgb_passes_through_and_nan_is_black():
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    assert (to_display_rgb(rgb) == rgb).all()
    with_nan = np.array([[np.nan, 0.0, 1.0]])
    assert to_display_rgb(with_nan, "minmax")[0, :, 0].tolist() == [0, 0, 255]
