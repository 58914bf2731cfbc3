// model.golden.safetensors, written by export/golden.py: a few (RGB8 image, preprocessed input,
// expected outputs) pairs that a runtime must reproduce before it is trusted with photos.
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agiqa/scorer.h"

namespace agiqa {

struct Tensor {
  std::string dtype;  // safetensors dtype: "U8" or "F32"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  std::vector<float> floats() const;  // F32 only
};

struct GoldenPair {
  std::string name;
  Tensor rgb;     // (H, W, 3) uint8
  Tensor input;   // (1, 3, h, w) float32, numpy preprocessing of rgb
  std::map<std::string, Tensor> outputs;  // by contract output name
};

// A camera frame as the golden file (and the camera bench) store it: the frame's bytes plus
// camera{j}.layout, edge_runtime.camera.frame_layout's JSON with the rotation and crop.
struct CameraLayout {
  FrameFormat format = FrameFormat::YUV420;
  int width = 0;
  int height = 0;
  std::vector<std::array<size_t, 3>> planes;  // offset into the bytes, row_stride, pixel_stride
  ColorMatrix matrix = ColorMatrix::BT601;
  ColorRange range = ColorRange::Video;
  int rotation = 0;
  std::optional<Crop> crop;
  std::string encoding;  // nv21 | nv12 | i420 | rgba | bgra (for names only)

  // Parses the JSON text; throws Error naming `where`.
  static CameraLayout parse(const std::string& json, const std::string& where);
  // The frame over `bytes` (which must outlive it); throws Error when a plane lies outside.
  Frame frame(const std::vector<uint8_t>& bytes, const std::string& where) const;
};

struct GoldenCameraPair {
  std::string name;  // "camera0 (nv21, 90 deg) of photo.jpg", as edge_runtime.golden names it
  Tensor frame;      // (N,) uint8, the frame's bytes
  CameraLayout layout;
  Tensor input;      // (1, 3, h, w) float32, numpy's preprocess_frame
  std::map<std::string, Tensor> outputs;  // the program on that input
};

struct GoldenFile {
  std::string program_sha256;
  double score_tolerance = 0.0;
  double gate_tolerance = 0.0;
  double preprocess_tolerance = 0.0;
  std::vector<GoldenPair> pairs;
  std::vector<GoldenCameraPair> camera_pairs;  // none in files written before them

  static GoldenFile read(const std::string& path, const Contract& contract);
};

// A whole safetensors file: tensors by name, plus the string metadata.
void read_safetensors(const std::string& path, std::map<std::string, Tensor>* tensors,
                      std::map<std::string, std::string>* metadata);

// Writes one float32 tensor as a safetensors file (temp file, then rename).
void write_safetensors_f32(const std::string& path, const std::string& name,
                           const std::vector<int64_t>& shape, const std::vector<float>& values);

}  // namespace agiqa
