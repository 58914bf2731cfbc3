"""The camera rule (edge_runtime/camera.py): layouts, strides, colour, crop, rotation, reduction."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import PreprocessSpec
from edge_runtime.camera import (
    COLOR_MATRICES,
    CameraFrame,
    Plane,
    frame_to_rgb,
    preprocess_frame,
    reduce_factor,
    rgb_to_frame,
)

SPEC = PreprocessSpec(input_size=(32, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _photo(height: int = 61, width: int = 83, seed: int = 0) -> np.ndarray:
    """Smooth gradients with texture and saturated corners: every code path of the conversion."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([xx / width, yy / height, 1 - (xx + yy) / (width + height)], axis=-1) * 255
    return np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["rgba", "bgra"])
def test_packed_frames_are_the_image_itself(fmt):
    rgb = _photo()
    frame = rgb_to_frame(rgb, fmt, row_padding=12)
    assert np.array_equal(frame_to_rgb(frame), rgb)
    assert np.array_equal(frame_to_rgb(frame, crop=(3, 7, 40, 30)), rgb[7:37, 3:43])


def test_yuv_layouts_agree_and_strides_are_honoured():
    rgb = _photo()
    frames = [rgb_to_frame(rgb, fmt, row_padding=pad) for fmt in ("nv21", "nv12", "i420") for pad in (0, 5)]
    first = frame_to_rgb(frames[0])
    for frame in frames[1:]:
        assert np.array_equal(frame_to_rgb(frame), first)


@pytest.mark.parametrize("matrix", sorted(COLOR_MATRICES))
@pytest.mark.parametrize("color_range", ["video", "full"])
def test_conversion_matches_the_float_inverse_of_the_standard_matrix(matrix, color_range):
    """The fixed-point conversion is within 1 of the exact (float64) inverse of the YCbCr matrix,
    computed independently here with numpy.linalg.inv, on every (Y, U, V) in a grid."""
    kr, kb = COLOR_MATRICES[matrix]
    kg = 1 - kr - kb
    forward = np.array([[kr, kg, kb],
                        [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                        [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]])
    y, u, v = (a.reshape(-1) for a in np.meshgrid(np.arange(0, 256, 3), np.arange(0, 256, 5), np.arange(0, 256, 5)))
    yuv = np.stack([y, u, v], axis=-1).astype(np.float64)
    if color_range == "video":
        yuv = (yuv - [16, 128, 128]) * [255 / 219, 255 / 224, 255 / 224]
    else:
        yuv = yuv - [0, 128, 128]
    expected = np.clip(np.rint(yuv @ np.linalg.inv(forward).T), 0, 255)
    # One frame of 1 x N pixels with its own chroma per 2 pixels: repeat each sample twice.
    n = y.size
    frame = CameraFrame.i420(np.repeat(y, 2).astype(np.uint8), u.astype(np.uint8), v.astype(np.uint8),
                             2 * n, 1, matrix=matrix, range=color_range)
    got = frame_to_rgb(frame)[0, ::2].astype(np.int64)
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("matrix", sorted(COLOR_MATRICES))
@pytest.mark.parametrize("color_range", ["video", "full"])
def test_encoding_then_the_camera_rule_round_trips(matrix, color_range):
    """Where chroma is constant over each 2x2 block, subsampling loses nothing: RGB survives
    encode (float, rounded) + decode (fixed point) within 2 grey levels (two roundings)."""
    rgb = np.repeat(np.repeat(_photo(30, 40), 2, axis=0), 2, axis=1)
    frame = rgb_to_frame(rgb, "nv21", matrix=matrix, color_range=color_range)
    assert np.abs(frame_to_rgb(frame).astype(int) - rgb).max() <= 2


def test_rotation_is_clockwise_and_after_the_crop():
    frame = rgb_to_frame(_photo(), "nv12", row_padding=3)
    crop = (5, 3, 50, 41)  # odd offsets: chroma is addressed in buffer coordinates
    upright = frame_to_rgb(frame, crop=crop)
    assert np.array_equal(upright, frame_to_rgb(frame)[3:44, 5:55])
    for rotation in (90, 180, 270):
        rotated = frame_to_rgb(frame, rotation=rotation, crop=crop)
        assert np.array_equal(rotated, np.rot90(upright, k=-rotation // 90))
    # Clockwise: the top-left pixel of the buffer ends up top-right.
    assert np.array_equal(frame_to_rgb(frame, rotation=90, crop=crop)[0, -1], upright[0, 0])


def test_reduction_factor_and_block_means():
    assert reduce_factor((1920, 1080), (224, 224), 90) == 2
    assert reduce_factor((3840, 2160), (224, 224), 0) == 4
    assert reduce_factor((640, 480), (224, 224), 0) == 1
    assert reduce_factor((1000, 1000), (224, 112), 0) == 2  # the tighter side decides
    assert reduce_factor((1000, 100), (25, 224), 0) == 2
    assert reduce_factor((1000, 100), (25, 224), 90) == 1  # a 90-degree frame: input seen transposed
    rgb = _photo(131, 197)
    frame = rgb_to_frame(rgb, "bgra")
    reduced = frame_to_rgb(frame, crop=(3, 2, 190, 120), input_size=(30, 40))  # f = 2, left 3 -> 2
    block = rgb[2:122, 2:192].astype(np.int64).reshape(60, 2, 95, 2, 3).sum(axis=(1, 3))
    assert np.array_equal(reduced, (block + 2) // 4)


def test_reduced_yuv_takes_luma_at_chroma_resolution():
    rgb = _photo(120, 160)
    frame = rgb_to_frame(rgb, "i420")
    reduced = frame_to_rgb(frame, input_size=(30, 40))
    assert reduced.shape == (60, 80, 3)
    # The same as averaging the full-resolution conversion, up to the rounding the two orders differ by.
    full = frame_to_rgb(frame).astype(np.float64).reshape(60, 2, 80, 2, 3).mean(axis=(1, 3))
    assert np.abs(reduced - full).mean() < 0.5


def test_preprocess_frame_is_the_spec_on_the_rule_rgb():
    rgb = _photo(200, 300)
    frame = rgb_to_frame(rgb, "rgba")
    for spec in (SPEC, PreprocessSpec(input_size=(32, 24), mean=(0.5,) * 3, std=(0.25,) * 3, jpeg_draft=False)):
        expected = spec(frame_to_rgb(frame, rotation=270,
                                     input_size=tuple(spec.input_size) if spec.jpeg_draft else None))
        assert np.array_equal(preprocess_frame(spec, frame, rotation=270), expected)
    assert not np.array_equal(preprocess_frame(SPEC, frame), preprocess_frame(SPEC, frame, rotation=90))


def test_android_planes_whose_last_row_is_short_are_accepted():
    """Android's chroma ByteBuffers end at the last sample, not at a full row_stride."""
    rgb = _photo(10, 16)
    frame = rgb_to_frame(rgb, "nv21", row_padding=4)
    y, u, v = frame.planes
    last = lambda p, w, h: (h - 1) * p.row_stride + (w - 1) * p.pixel_stride + 1  # noqa: E731
    trimmed = CameraFrame("yuv420", 16, 10, (Plane(y.data[:last(y, 16, 10)], y.row_stride),
                                            Plane(u.data[:last(u, 8, 5)], u.row_stride, 2),
                                            Plane(v.data[:last(v, 8, 5)], v.row_stride, 2)))
    assert np.array_equal(frame_to_rgb(trimmed), frame_to_rgb(frame))


@pytest.mark.parametrize("make, message", [
    (lambda: CameraFrame.nv21(np.zeros(100, np.uint8), 10, 10), "U plane: .* bytes"),
    (lambda: CameraFrame.packed(np.zeros(400, np.uint8), 10, 10, row_stride=30), "row_stride 30"),
    (lambda: CameraFrame("yuv444", 2, 2, ()), "unknown frame format"),
    (lambda: CameraFrame.i420(np.zeros(4, np.uint8), np.zeros(1, np.uint8), np.zeros(1, np.uint8), 2, 2,
                              matrix="bt2020"), "unknown color matrix"),
])
def test_bad_frames_are_refused_in_one_line(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_crop_and_rotation_are_refused():
    frame = rgb_to_frame(_photo(), "nv21")
    with pytest.raises(ValueError, match="not inside the 83x61 frame"):
        frame_to_rgb(frame, crop=(80, 0, 10, 10))
    with pytest.raises(ValueError, match="rotation must be one of"):
        frame_to_rgb(frame, rotation=45)
