"""Layout of N-D images and conversion of slices to the model's uint8 RGB input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_hq_sam.engine.image import (
    default_contrast_limits,
    describe_layout,
    to_model_image,
)


def test_uint16_stack_uses_whole_stack_limits(nuclei3d):
    lo, hi = default_contrast_limits(nuclei3d)
    assert (lo, hi) == (float(nuclei3d.min()), float(nuclei3d.max()))
    out = to_model_image(nuclei3d[15], (lo, hi))
    assert out.shape == nuclei3d.shape[1:] + (3,) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2])
    expected = np.rint((nuclei3d[15].astype(float) - lo) / (hi - lo) * 255).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected)
    # the brightest pixel of the stack maps to 255 only on its own slice
    z = np.unravel_index(np.argmax(nuclei3d), nuclei3d.shape)[0]
    assert to_model_image(nuclei3d[z], (lo, hi)).max() == 255


def test_signed_mri_and_percentiles(mri_stack):
    lo, hi = default_contrast_limits(mri_stack)
    assert lo == mri_stack.min() and hi == mri_stack.max()
    plo, phi = default_contrast_limits(mri_stack, "percentile")
    assert lo <= plo < phi <= hi
    out = to_model_image(mri_stack[12], (plo, phi))
    assert out.min() == 0 and out.max() == 255  # clipped at both ends
    assert default_contrast_limits(da.from_array(mri_stack, chunks=(4, 96, 128))) == (lo, hi)


def test_float_uint8_and_rgb(nuclei2d):
    f = nuclei2d.astype(np.float32) / 7.0
    out = to_model_image(f, (float(f.min()), float(f.max())))
    ref = to_model_image(nuclei2d, (float(nuclei2d.min()), float(nuclei2d.max())))
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    u8 = (nuclei2d // 256).astype(np.uint8)
    assert np.array_equal(to_model_image(u8)[..., 1], u8)  # uint8 passes through
    rgba = np.stack([u8, u8 // 2, u8 // 3, np.full_like(u8, 9)], axis=-1)
    assert np.array_equal(to_model_image(rgba), rgba[..., :3])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected(nuclei2d, bad):
    f = nuclei2d.astype(np.float32)
    f[3, 4] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_model_image(f, (0, 1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        default_contrast_limits(f)


def test_layouts():
    assert describe_layout((31, 61, 57)).leading_shape == (31,)
    rgb = describe_layout((5, 40, 50, 3))
    assert rgb.rgb and rgb.labels_shape == (5, 40, 50) and rgb.spatial_shape == (40, 50)
    ch = describe_layout((4, 2, 40, 50), channel_axis=1, channel=1)
    assert ch.labels_shape == (4, 40, 50)
    assert list(ch.slice_indices()) == [(0,), (1,), (2,), (3,)]
    img = np.arange(4 * 2 * 40 * 50).reshape(4, 2, 40, 50)
    assert np.array_equal(ch.take(img, (3,)), img[3, 1])
    hinted = describe_layout((2, 3, 4, 40, 50), axes="TCZYX", channel=2)
    assert hinted.channel_axis == 1 and hinted.leading_shape == (2, 4)
    assert list(describe_layout((40, 50)).slice_indices()) == [()]
    with pytest.raises(ValueError, match="axis hint"):
        describe_layout((2, 3, 4, 40, 50))
    with pytest.raises(ValueError, match="without a channel"):
        describe_layout((2, 3, 40, 50), channel_axis=1)
    with pytest.raises(ValueError, match="does not exist"):
        ch.check_index((4,))


def test_default_limits_are_the_ones_napari_gives_a_new_layer():
    """Embeddings computed headless must be cache hits in the viewer: same uint8 input."""
    napari_utils = pytest.importorskip("napari.layers.utils.layer_utils")
    rng = np.random.default_rng(0)
    big = rng.integers(0, 4000, (48, 512, 512), dtype=np.uint16)  # > 1e7 values: sampled
    big[0, 0, 0], big[20, 5, 5] = 9999, 65000  # only the first plane's outlier is seen
    flat = np.full((50, 500, 500), 7, np.uint16)
    for image in (big, flat, rng.normal(size=(31, 61, 57)).astype(np.float32),
                  rng.integers(0, 255, (40, 600, 600, 3), dtype=np.uint16)):
        rgb = image.ndim == 4
        expected = napari_utils.calc_data_range(image, rgb=rgb)
        assert default_contrast_limits(image, rgb=rgb) == pytest.approx(expected)
    assert default_contrast_limits(big) == (0.0, 9999.0)  # not a full read
    assert default_contrast_limits(flat) == (0.0, 7.0)
