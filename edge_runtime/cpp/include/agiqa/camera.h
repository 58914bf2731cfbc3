// Camera frames as cameras deliver them: YUV 4:2:0 (Android YUV_420_888 planes with row and
// pixel strides: NV21, NV12, I420; iOS 420YpCbCr8BiPlanar) or 4-byte RGBA/BGRA pixels, plus the
// rotation that makes them upright and an optional crop. The rule is edge_runtime/camera.py's
// (crop in buffer coordinates, even-factor reduction when the contract decodes JPEGs in draft
// mode, 16-bit fixed-point YUV -> RGB, clockwise rotation, then the contract's resize and
// normalisation); it is integer arithmetic, and this implementation is bitwise equal to it.
//
//   agiqa::Frame frame = agiqa::Frame::nv21(bytes, 1920, 1080);
//   agiqa::Score s = scorer.score_frame(frame, /*rotation=*/90);
//
// Included by agiqa/scorer.h. Frames are views: nothing is copied, the caller keeps the bytes
// alive during the call.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace agiqa {

struct PreprocessSpec;

enum class FrameFormat { YUV420, RGBA, BGRA };
enum class ColorMatrix { BT601, BT709 };
enum class ColorRange { Video, Full };  // Video: Y in [16, 235], chroma in [16, 240]

// One plane as Android's Image.Plane gives it: sample (x, y) is
// data[y * row_stride + x * pixel_stride]. `size` is how many bytes may be read from `data`
// (0: the caller vouches for the geometry; the checks below then only cover the strides).
struct Plane {
  const uint8_t* data = nullptr;
  size_t row_stride = 0;
  size_t pixel_stride = 1;
  size_t size = 0;
};

// A frame: YUV420 with planes {Y, U, V} (chroma at half width and height, rounded up), or
// RGBA/BGRA with planes[0] of 4-byte pixels (pixel_stride 4, alpha ignored).
struct Frame {
  FrameFormat format = FrameFormat::YUV420;
  int width = 0;
  int height = 0;
  std::array<Plane, 3> planes{};
  ColorMatrix matrix = ColorMatrix::BT601;
  ColorRange range = ColorRange::Video;

  // Android YUV_420_888 as ImageProxy.getPlanes() gives it (any pixel strides).
  static Frame yuv420(int width, int height, Plane y, Plane u, Plane v,
                      ColorMatrix matrix = ColorMatrix::BT601,
                      ColorRange range = ColorRange::Video);
  // One buffer: Y rows, then interleaved V/U (NV21) or U/V (NV12) rows. Strides 0: tightly
  // packed (row_stride = width, chroma rows as long as luma rows, chroma right after the luma).
  // `size` 0: not checked.
  static Frame nv21(const uint8_t* data, int width, int height, size_t row_stride = 0,
                    size_t chroma_row_stride = 0, size_t chroma_offset = 0, size_t size = 0,
                    ColorMatrix matrix = ColorMatrix::BT601, ColorRange range = ColorRange::Video);
  static Frame nv12(const uint8_t* data, int width, int height, size_t row_stride = 0,
                    size_t chroma_row_stride = 0, size_t chroma_offset = 0, size_t size = 0,
                    ColorMatrix matrix = ColorMatrix::BT601, ColorRange range = ColorRange::Video);
  // Three planes, chroma pixel stride 1. Strides 0: width and (width + 1) / 2.
  static Frame i420(const uint8_t* y, const uint8_t* u, const uint8_t* v, int width, int height,
                    size_t row_stride = 0, size_t chroma_row_stride = 0,
                    ColorMatrix matrix = ColorMatrix::BT601, ColorRange range = ColorRange::Video);
  // 4-byte pixels (Android RGBA_8888, iOS kCVPixelFormatType_32BGRA). Stride 0: 4 * width.
  static Frame rgba(const uint8_t* data, int width, int height, size_t row_stride = 0,
                    size_t size = 0);
  static Frame bgra(const uint8_t* data, int width, int height, size_t row_stride = 0,
                    size_t size = 0);
};

// A rectangle in the buffer's own coordinates, before rotation (ImageProxy.getCropRect()).
struct Crop {
  int left = 0;
  int top = 0;
  int width = 0;
  int height = 0;
};

// The model input's size, (height, width), for the reduction step.
struct InputSize {
  int height = 0;
  int width = 0;
};

// An RGB8 image, height x width x 3, tightly packed.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;
};

// Crop, reduce (when `reduce_for_input` is given: the largest even factor that keeps the crop
// >= 2x that input, seen in buffer orientation), convert and rotate clockwise by `rotation`
// (0, 90, 180, 270): edge_runtime.camera.frame_to_rgb, bitwise. Throws agiqa::Error (one line)
// for a bad rotation, a crop outside the frame, or planes whose strides or sizes are too short.
Image frame_to_rgb8(const Frame& frame, int rotation = 0,
                    const std::optional<Crop>& crop = std::nullopt,
                    const std::optional<InputSize>& reduce_for_input = std::nullopt);

// A frame -> (3, H, W) float32 model input, in one pass that converts only the crop's pixels
// the resize reads, straight into the resize (no full-size RGB image is written):
// edge_runtime.camera.preprocess_frame, bitwise. `threads` > 1 splits the output rows over the
// ExecuTorch runtime's thread pool (the model's; a call made while the model runs on another
// thread waits for that run), or over threads of its own when the pool has fewer threads.
std::vector<float> preprocess_frame(const PreprocessSpec& spec, const Frame& frame,
                                    int rotation = 0,
                                    const std::optional<Crop>& crop = std::nullopt,
                                    int threads = 2);

// The same up to the resize: the (H, W, 3) RGB8 image the normalisation reads.
Image preprocess_frame_rgb8(const PreprocessSpec& spec, const Frame& frame, int rotation = 0,
                            const std::optional<Crop>& crop = std::nullopt, int threads = 2);

}  // namespace agiqa
