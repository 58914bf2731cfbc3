// model.golden.safetensors, written by export/golden.py: a few (RGB8 image, preprocessed input,
// expected outputs) pairs that a runtime must reproduce before it is trusted with photos.
#pragma once

#include <map>
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

struct GoldenFile {
  std::string program_sha256;
  double score_tolerance = 0.0;
  double gate_tolerance = 0.0;
  double preprocess_tolerance = 0.0;
  std::vector<GoldenPair> pairs;

  static GoldenFile read(const std::string& path, const Contract& contract);
};

// A whole safetensors file: tensors by name, plus the string metadata.
void read_safetensors(const std::string& path, std::map<std::string, Tensor>* tensors,
                      std::map<std::string, std::string>* metadata);

// Writes one float32 tensor as a safetensors file (temp file, then rename).
void write_safetensors_f32(const std::string& path, const std::string& name,
                           const std::vector<int64_t>& shape, const std::vector<float>& values);

}  // namespace agiqa
