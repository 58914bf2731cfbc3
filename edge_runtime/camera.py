"""Camera frames as cameras deliver them: the reference definition (numpy) of the camera path.

Android's camera gives ``YUV_420_888`` images (a luma plane and two chroma planes, each with its
own row stride, the chroma planes with a pixel stride of 1 (I420) or 2 (NV12/NV21, the two
planes interleaved in one buffer)) and a rotation; iOS gives ``CVPixelBuffer`` BGRA or NV12.
:class:`CameraFrame` describes any of these without copying, and :func:`frame_to_rgb` turns one
into the RGB8 image the model's preprocessing then squash-resizes (:class:`PreprocessSpec`).
The C++ scorer (``agiqa::Scorer::score_frame``) reproduces this definition; the golden pairs of
an export carry camera frames so a device can check its camera path at load.

The rule, in order (all integer arithmetic, so every runtime can be bitwise equal to it):

1. **Crop** to ``crop = (left, top, width, height)`` in the buffer's own coordinates, before
   rotation (Android's ``ImageProxy.getCropRect()``); default: the whole frame.
2. **Reduce** (only when the spec decodes JPEGs in draft mode, the same rule: never below twice
   the model input): with the input's size seen in buffer orientation ``(in_h, in_w)``, the
   factor ``f`` is the largest *even* integer with ``crop_w // f >= 2 * in_w`` and
   ``crop_h // f >= 2 * in_h``, else 1. With ``f > 1`` the crop's left and top are first
   rounded down to even (so each f x f luma block covers whole chroma samples) and the pixels
   that do not fill a last whole block are dropped. Each output pixel then averages its
   ``f x f`` luma block and its ``f/2 x f/2`` chroma samples (``(sum + n // 2) // n``), or for
   RGBA/BGRA its ``f x f`` pixels per channel. A 1080p frame for a 224 model is reduced by 2:
   luma at chroma resolution, no chroma upsampling at all.
3. **Convert** YUV to RGB (without reduction each pixel ``(x, y)`` takes the chroma sample
   ``(x // 2, y // 2)``, as libyuv and Android's ``YuvImage`` do): ``R = (cy * (Y - y0) +
   crv * (V - 128) + 2^15) >> 16`` etc., clamped to [0, 255], with the 16-bit fixed-point
   coefficients of :func:`yuv_coefficients` (BT.601 or BT.709, video or full range).
4. **Rotate** clockwise by ``rotation`` (0, 90, 180, 270): the rotation that makes the frame
   upright (Android's ``ImageInfo.getRotationDegrees()``).

Then the spec's resize and normalisation, exactly as for a decoded photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["CameraFrame", "Plane", "FRAME_FORMATS", "COLOR_MATRICES", "COLOR_RANGES",
           "yuv_coefficients", "reduce_factor", "frame_layout", "frame_from_layout",
           "frame_to_rgb", "preprocess_frame", "rgb_to_frame"]

FRAME_FORMATS = ("yuv420", "rgba", "bgra")
COLOR_MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}  # (Kr, Kb)
COLOR_RANGES = ("video", "full")
ROTATIONS = (0, 90, 180, 270)
_SHIFT = 16  # fixed-point bits of the conversion coefficients


@dataclass(frozen=True)
class Plane:
    """One image plane, as Android's ``Image.Plane`` gives it: sample ``(x, y)`` is
    ``data[y * row_stride + x * pixel_stride]`` (``data`` starts at the plane's first sample;
    its last row may be shorter than ``row_stride``, as on Android)."""

    data: np.ndarray  # 1-D uint8
    row_stride: int
    pixel_stride: int = 1

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.dtype != np.uint8:
            raise ValueError(f"a plane's data must be uint8 bytes, got {data.dtype}")
        object.__setattr__(self, "data", data.reshape(-1))
        if self.row_stride < 1 or self.pixel_stride < 1:
            raise ValueError(f"strides must be positive, got row_stride={self.row_stride}, "
                             f"pixel_stride={self.pixel_stride}")

    def check(self, name: str, width: int, height: int) -> None:
        if self.row_stride < (width - 1) * self.pixel_stride + 1:
            raise ValueError(f"{name} plane: row_stride {self.row_stride} is shorter than a row of "
                             f"{width} samples at pixel_stride {self.pixel_stride}")
        need = (height - 1) * self.row_stride + (width - 1) * self.pixel_stride + 1
        if self.data.size < need:
            raise ValueError(f"{name} plane: {self.data.size} bytes, a {width}x{height} plane with "
                             f"row_stride {self.row_stride} needs {need}")

    def samples(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``(len(rows), len(cols))`` samples at plane coordinates, as int32."""
        index = rows[:, None] * self.row_stride + cols[None, :] * self.pixel_stride
        return self.data[index].astype(np.int32)


@dataclass(frozen=True)
class CameraFrame:
    """A camera frame: ``format="yuv420"`` with planes ``(Y, U, V)`` (chroma at half width and
    height, rounded up), or ``"rgba"``/``"bgra"`` with one plane of 4-byte pixels
    (``pixel_stride=4``; alpha ignored). ``matrix``/``range`` say how YUV encodes RGB."""

    format: Literal["yuv420", "rgba", "bgra"]
    width: int
    height: int
    planes: tuple[Plane, ...]
    matrix: Literal["bt601", "bt709"] = "bt601"
    range: Literal["video", "full"] = "video"

    def __post_init__(self) -> None:
        if self.format not in FRAME_FORMATS:
            raise ValueError(f"unknown frame format {self.format!r}; choose from {list(FRAME_FORMATS)}")
        if self.matrix not in COLOR_MATRICES:
            raise ValueError(f"unknown color matrix {self.matrix!r}; choose from {list(COLOR_MATRICES)}")
        if self.range not in COLOR_RANGES:
            raise ValueError(f"unknown color range {self.range!r}; choose from {list(COLOR_RANGES)}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "planes", tuple(self.planes))
        if self.format == "yuv420":
            if len(self.planes) != 3:
                raise ValueError(f"a yuv420 frame has 3 planes (Y, U, V), got {len(self.planes)}")
            cw, ch = (self.width + 1) // 2, (self.height + 1) // 2
            for name, plane, (w, h) in zip("YUV", self.planes, ((self.width, self.height), (cw, ch), (cw, ch))):
                plane.check(name, w, h)
        else:
            if len(self.planes) != 1 or self.planes[0].pixel_stride != 4:
                raise ValueError(f"an {self.format} frame has one plane of 4-byte pixels (pixel_stride=4)")
            # The plane addresses bytes: its last pixel's 4th byte must be there too.
            Plane(self.planes[0].data, self.planes[0].row_stride, 1).check(
                self.format.upper(), 4 * self.width, self.height)

    # -- the layouts cameras deliver ------------------------------------------------------------
    @classmethod
    def nv21(cls, buffer: np.ndarray, width: int, height: int, *, row_stride: int | None = None,
             chroma_row_stride: int | None = None, chroma_offset: int | None = None,
             **color: str) -> CameraFrame:
        """Y rows, then interleaved V/U rows (Android's default preview format)."""
        return cls._semi_planar(buffer, width, height, row_stride, chroma_row_stride, chroma_offset,
                                vu=True, **color)

    @classmethod
    def nv12(cls, buffer: np.ndarray, width: int, height: int, *, row_stride: int | None = None,
             chroma_row_stride: int | None = None, chroma_offset: int | None = None,
             **color: str) -> CameraFrame:
        """Y rows, then interleaved U/V rows (iOS ``420YpCbCr8BiPlanar``, many Android devices)."""
        return cls._semi_planar(buffer, width, height, row_stride, chroma_row_stride, chroma_offset,
                                vu=False, **color)

    @classmethod
    def _semi_planar(cls, buffer, width, height, row_stride, chroma_row_stride, chroma_offset, *,
                     vu: bool, **color: str) -> CameraFrame:
        buffer = np.asarray(buffer, np.uint8).reshape(-1)
        row_stride = width if row_stride is None else row_stride
        chroma_row_stride = row_stride if chroma_row_stride is None else chroma_row_stride
        offset = row_stride * height if chroma_offset is None else chroma_offset
        first, second = buffer[offset:], buffer[offset + 1:]
        u, v = (second, first) if vu else (first, second)
        return cls("yuv420", width, height, (Plane(buffer, row_stride), Plane(u, chroma_row_stride, 2),
                                             Plane(v, chroma_row_stride, 2)), **color)

    @classmethod
    def i420(cls, y: np.ndarray, u: np.ndarray, v: np.ndarray, width: int, height: int, *,
             row_stride: int | None = None, chroma_row_stride: int | None = None,
             **color: str) -> CameraFrame:
        """Three planes (``YUV_420_888`` with chroma pixel stride 1)."""
        row_stride = width if row_stride is None else row_stride
        chroma_row_stride = (width + 1) // 2 if chroma_row_stride is None else chroma_row_stride
        return cls("yuv420", width, height, (Plane(y, row_stride), Plane(u, chroma_row_stride),
                                             Plane(v, chroma_row_stride)), **color)

    @classmethod
    def packed(cls, buffer: np.ndarray, width: int, height: int, order: Literal["rgba", "bgra"] = "rgba",
               *, row_stride: int | None = None) -> CameraFrame:
        """4-byte pixels (Android ``RGBA_8888``, iOS ``kCVPixelFormatType_32BGRA``)."""
        row_stride = 4 * width if row_stride is None else row_stride
        return cls(order, width, height, (Plane(buffer, row_stride, 4),))


def frame_layout(frame: CameraFrame) -> tuple[np.ndarray, dict]:
    """The frame as bytes and a JSON-able layout (the golden file's ``camera{j}.frame`` and
    ``camera{j}.layout``): ``{"format", "width", "height", "matrix", "range", "planes":
    [[offset, row_stride, pixel_stride], ...]}``, offsets into the bytes. Planes that are views
    of one buffer (NV21's interleaved chroma, a contiguous I420) keep that one buffer."""
    bounds = [np.lib.array_utils.byte_bounds(plane.data) for plane in frame.planes]
    low, high = min(b[0] for b in bounds), max(b[1] for b in bounds)
    if high - low <= sum(plane.data.size for plane in frame.planes):  # one region: keep it
        region = np.frombuffer(_region(frame.planes, bounds, low, high), np.uint8)
        offsets = [b[0] - low for b in bounds]
    else:
        region = np.concatenate([plane.data for plane in frame.planes])
        offsets = np.cumsum([0] + [plane.data.size for plane in frame.planes[:-1]]).tolist()
    layout = {"format": frame.format, "width": frame.width, "height": frame.height,
              "matrix": frame.matrix, "range": frame.range,
              "planes": [[int(o), p.row_stride, p.pixel_stride] for o, p in zip(offsets, frame.planes)]}
    return np.array(region, np.uint8), layout


def _region(planes, bounds, low: int, high: int) -> bytes:
    """The bytes from address ``low`` to ``high``, read through the planes that cover them."""
    out = bytearray(high - low)
    for plane, (start, end) in zip(planes, bounds):
        out[start - low:end - low] = plane.data.tobytes()
    return bytes(out)


def frame_from_layout(buffer: np.ndarray, layout: dict) -> CameraFrame:
    """Inverse of :func:`frame_layout`. Raises ``ValueError`` for a layout that does not fit."""
    buffer = np.asarray(buffer, np.uint8).reshape(-1)
    try:
        planes = tuple(Plane(buffer[int(offset):], int(row), int(pixel)) for offset, row, pixel in layout["planes"])
        return CameraFrame(layout["format"], int(layout["width"]), int(layout["height"]), planes,
                           matrix=layout.get("matrix", "bt601"), range=layout.get("range", "video"))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"camera frame layout lacks or misstates {exc}") from None


def yuv_coefficients(matrix: str = "bt601", color_range: str = "video") -> dict[str, int]:
    """The 16-bit fixed-point YUV -> RGB coefficients: ``y_offset``, ``cy`` (luma scale),
    ``crv``, ``cgu``, ``cgv``, ``cbu`` (``R = cy*(Y-y0) + crv*Cr``, ``G = cy*(Y-y0) - cgu*Cb -
    cgv*Cr``, ``B = cy*(Y-y0) + cbu*Cb``, ``Cb = U - 128``, ``Cr = V - 128``)."""
    kr, kb = COLOR_MATRICES[matrix]
    kg = 1.0 - kr - kb
    if color_range == "video":  # Y in [16, 235], chroma in [16, 240]
        y_offset, y_scale, c_scale = 16, 255.0 / 219.0, 255.0 / 224.0
    elif color_range == "full":
        y_offset, y_scale, c_scale = 0, 1.0, 1.0
    else:
        raise ValueError(f"unknown color range {color_range!r}; choose from {list(COLOR_RANGES)}")
    one = 1 << _SHIFT
    return {"y_offset": y_offset, "cy": round(y_scale * one),
            "crv": round(2 * (1 - kr) * c_scale * one), "cbu": round(2 * (1 - kb) * c_scale * one),
            "cgu": round(2 * kb * (1 - kb) / kg * c_scale * one),
            "cgv": round(2 * kr * (1 - kr) / kg * c_scale * one)}


def _crop_rect(frame: CameraFrame, crop: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
    if crop is None:
        return 0, 0, frame.width, frame.height
    left, top, width, height = (int(v) for v in crop)
    if left < 0 or top < 0 or width < 1 or height < 1 or left + width > frame.width or top + height > frame.height:
        raise ValueError(f"crop {tuple(crop)} (left, top, width, height) is not inside the "
                         f"{frame.width}x{frame.height} frame")
    return left, top, width, height


def reduce_factor(crop_size: tuple[int, int], input_size: tuple[int, int], rotation: int) -> int:
    """Step 2's factor: the largest even ``f`` with ``crop // f >= 2 * input`` on both sides
    (the input's size seen in buffer orientation), else 1. ``crop_size = (width, height)``,
    ``input_size = (height, width)`` of the model input."""
    in_h, in_w = input_size if rotation in (0, 180) else input_size[::-1]
    crop_w, crop_h = crop_size
    f = min(crop_w // (2 * in_w), crop_h // (2 * in_h))
    f -= f % 2
    return f if f >= 2 else 1


def _block_mean(plane: Plane, first_row: int, first_col: int, rows: int, cols: int, block: int) -> np.ndarray:
    """``(rows, cols)`` means of ``block x block`` samples starting at plane ``(first_col, first_row)``."""
    r = first_row + np.arange(rows * block)
    c = first_col + np.arange(cols * block)
    total = plane.samples(r, c).reshape(rows, block, cols, block).sum(axis=(1, 3))
    n = block * block
    return (total + n // 2) // n


def frame_to_rgb(frame: CameraFrame, *, rotation: int = 0, crop: tuple[int, int, int, int] | None = None,
                 input_size: tuple[int, int] | None = None) -> np.ndarray:
    """Steps 1-4 of the module's rule: ``(H, W, 3) uint8`` RGB, upright. ``input_size = (h, w)``
    of the model input turns on the reduction (step 2); ``None`` keeps full resolution."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {list(ROTATIONS)} degrees clockwise, got {rotation!r}")
    left, top, width, height = _crop_rect(frame, crop)
    f = 1 if input_size is None else reduce_factor((width, height), input_size, rotation)
    if f > 1:
        left, top = left - left % 2, top - top % 2
        width, height = min(width, frame.width - left), min(height, frame.height - top)
    rows, cols = height // f, width // f
    if frame.format == "yuv420":
        y_plane, u_plane, v_plane = frame.planes
        if f > 1:
            y = _block_mean(y_plane, top, left, rows, cols, f)
            u = _block_mean(u_plane, top // 2, left // 2, rows, cols, f // 2)
            v = _block_mean(v_plane, top // 2, left // 2, rows, cols, f // 2)
        else:
            r, c = top + np.arange(rows), left + np.arange(cols)
            y = y_plane.samples(r, c)
            u, v = u_plane.samples(r // 2, c // 2), v_plane.samples(r // 2, c // 2)
        k = yuv_coefficients(frame.matrix, frame.range)
        luma = k["cy"] * (y - k["y_offset"]) + (1 << (_SHIFT - 1))
        cb, cr = u - 128, v - 128
        channels = (luma + k["crv"] * cr, luma - k["cgu"] * cb - k["cgv"] * cr, luma + k["cbu"] * cb)
        rgb = np.stack([np.clip(ch >> _SHIFT, 0, 255) for ch in channels], axis=-1).astype(np.uint8)
    else:
        order = (0, 1, 2) if frame.format == "rgba" else (2, 1, 0)
        rgb = np.stack([_packed_channel(frame.planes[0], top, left, rows, cols, f, channel)
                        for channel in order], axis=-1).astype(np.uint8)
    return np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90)))


def _packed_channel(plane: Plane, top: int, left: int, rows: int, cols: int, block: int, channel: int) -> np.ndarray:
    """One channel of 4-byte pixels as a ``(rows, cols)`` plane, block-averaged."""
    channel_plane = Plane(plane.data[channel:], plane.row_stride, 4)
    return _block_mean(channel_plane, top, left, rows, cols, block)


def preprocess_frame(spec, frame: CameraFrame, *, rotation: int = 0,
                     crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A camera frame -> ``(3, h, w) float32`` model input: :func:`frame_to_rgb` (reduced when
    ``spec.jpeg_draft``), then ``spec`` (its resize and normalisation)."""
    rgb = frame_to_rgb(frame, rotation=rotation, crop=crop,
                       input_size=tuple(spec.input_size) if spec.jpeg_draft else None)
    return spec(rgb)


def rgb_to_frame(rgb: np.ndarray, format: str = "nv21", *, matrix: str = "bt601",
                 color_range: str = "video", row_padding: int = 0, alpha: int = 255) -> CameraFrame:
    """Encode an ``(H, W, 3) uint8`` RGB image as a camera would deliver it (tests, golden pairs,
    benches): ``format`` one of ``"nv21"``, ``"nv12"``, ``"i420"``, ``"rgba"``, ``"bgra"``;
    ``row_padding`` extra bytes at the end of every row (cameras align rows). YUV: the standard
    RGB -> YCbCr of ``matrix``/``color_range`` in float, rounded; chroma the mean of each 2x2
    block (libyuv's ``ARGBToI420``)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    if format in ("rgba", "bgra"):
        row_stride = 4 * width + row_padding
        buffer = np.zeros((height, row_stride), np.uint8)
        pixels = buffer[:, :4 * width].reshape(height, width, 4)
        pixels[..., :3] = rgb if format == "rgba" else rgb[..., ::-1]
        pixels[..., 3] = alpha
        return CameraFrame.packed(buffer.reshape(-1), width, height, format, row_stride=row_stride)
    kr, kb = COLOR_MATRICES[matrix]
    x = rgb.astype(np.float64)
    y = kr * x[..., 0] + (1 - kr - kb) * x[..., 1] + kb * x[..., 2]
    cb, cr = (x[..., 2] - y) / (2 * (1 - kb)), (x[..., 0] - y) / (2 * (1 - kr))
    if color_range == "video":
        y, cb, cr = 16 + y * 219 / 255, cb * 224 / 255, cr * 224 / 255
    cw, ch = (width + 1) // 2, (height + 1) // 2
    def chroma(c: np.ndarray) -> np.ndarray:  # odd sizes: the last sample covers the replicated edge
        c = np.pad(c, ((0, 2 * ch - height), (0, 2 * cw - width)), mode="edge")
        return np.clip(np.rint(c.reshape(ch, 2, cw, 2).mean(axis=(1, 3)) + 128), 0, 255).astype(np.uint8)

    luma = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    u, v = chroma(cb), chroma(cr)
    row_stride = width + row_padding
    y_plane = np.zeros((height, row_stride), np.uint8)
    y_plane[:, :width] = luma
    if format == "i420":  # one allocation, Y then U then V (as Android's I420 buffers are laid out)
        chroma_stride = cw + row_padding
        buffer = np.zeros(y_plane.size + 2 * ch * chroma_stride, np.uint8)
        buffer[:y_plane.size] = y_plane.reshape(-1)
        u_plane = buffer[y_plane.size:y_plane.size + ch * chroma_stride].reshape(ch, chroma_stride)
        v_plane = buffer[y_plane.size + ch * chroma_stride:].reshape(ch, chroma_stride)
        u_plane[:, :cw], v_plane[:, :cw] = u, v
        return CameraFrame.i420(buffer[:y_plane.size], u_plane.reshape(-1), v_plane.reshape(-1), width, height,
                                row_stride=row_stride, chroma_row_stride=chroma_stride, matrix=matrix,
                                range=color_range)
    if format not in ("nv21", "nv12"):
        raise ValueError(f"unknown frame format {format!r}; choose from nv21, nv12, i420, rgba, bgra")
    chroma_stride = max(row_stride, 2 * cw)  # odd widths: a chroma row is one byte longer
    interleaved = np.zeros((ch, chroma_stride), np.uint8)
    first, second = (v, u) if format == "nv21" else (u, v)
    interleaved[:, 0:2 * cw:2], interleaved[:, 1:2 * cw:2] = first, second
    buffer = np.concatenate([y_plane.reshape(-1), interleaved.reshape(-1)])
    make = CameraFrame.nv21 if format == "nv21" else CameraFrame.nv12
    return make(buffer, width, height, row_stride=row_stride, chroma_row_stride=chroma_stride,
                matrix=matrix, range=color_range)
