// agiqa-edge C++ scorer: load an exported model.pte with its model.json contract and score
// RGB8 images or camera frames (agiqa/camera.h) with the ExecuTorch runtime (XNNPACK), exactly
// as edge_runtime.Scorer does.
//
//   agiqa::Scorer scorer = agiqa::Scorer::load("model.pte");  // contract, sha256, golden check
//   agiqa::Score s = scorer.score_rgb8(pixels, width, height, stride);
//   s.score; s.gate_weights;
//   agiqa::Score f = scorer.score_frame(agiqa::Frame::nv21(bytes, 1920, 1080), /*rotation=*/90);
//
// Every failure is an agiqa::Error whose what() is one line naming the file and the fix.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "agiqa/camera.h"

namespace agiqa {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// model.json's "preprocess": edge_runtime.preprocess.PreprocessSpec. Always filled from the
// contract, which spells out every field; no defaults here (edge_runtime.contract.ModelContract,
// the writer, is the one place they live).
struct PreprocessSpec {
  int height = 0;  // model input height (input_size[0])
  int width = 0;   // model input width (input_size[1])
  std::array<float, 3> mean{};  // per channel, on the [0, 1] scale
  std::array<float, 3> std{};
  std::string interpolation;  // bilinear | bicubic | area (Pillow filters) | cv2_bicubic
  bool jpeg_draft = false;  // JPEG DCT downscale to >= 2 * max(input_size) before resizing
};

// The parts of model.json a runtime needs (edge_runtime.contract.ModelContract).
struct Contract {
  std::string program_sha256;
  PreprocessSpec preprocess;
  std::vector<int64_t> input_shape;  // (1, 3, H, W)
  std::vector<std::string> output_names;
  std::string score_output;
  std::vector<std::string> expert_names;
  bool lower_better = false;
  std::string quantization;  // quantization.mode: "int8" or "fp32"
  // model.json's contract_sha256: the SHA-256 of its stored contract text (format version 2)
  // or of Python's canonical JSON of its fields (version 1); checked on read, and against the
  // digest the program embeds on load.
  std::string contract_sha256;

  // Reads and validates model.json (format version 1 or 2), checking contract_sha256; throws
  // Error naming the file.
  static Contract read(const std::string& json_path);
};

// dir/model.pte -> dir/model.json, dir/model.golden.safetensors
std::string contract_path(const std::string& program_path);
std::string golden_path(const std::string& program_path);

// Pillow's antialiased resize (Image.resize, uint8 fixed point) of a (height, width, 3) RGB8
// buffer whose rows are `stride` bytes apart, to (out_height, out_width, 3), tightly packed.
// Bitwise equal to Pillow for the filters "bilinear", "bicubic" and "area" (box), and to
// edge_runtime.preprocess.resize_cv2_bicubic (OpenCV's INTER_CUBIC, float32) for "cv2_bicubic".
std::vector<uint8_t> resize_rgb8(const uint8_t* rgb, int width, int height, size_t stride,
                                 int out_width, int out_height,
                                 const std::string& interpolation);

// RGB8 image -> (3, H, W) float32 model input: squash-resize, x / 255, (x - mean) / std.
std::vector<float> preprocess_rgb8(const PreprocessSpec& spec, const uint8_t* rgb, int width,
                                   int height, size_t stride);

struct Score {
  float score = 0.0f;
  std::vector<float> gate_weights;  // softmax over Contract::expert_names
};

// One golden pair checked at load: how far this runtime landed from the export's outputs.
struct GoldenResult {
  std::string name;
  double preprocess_max_abs_diff = 0.0;  // C++ preprocessing vs the stored numpy input
  double score_abs_diff = 0.0;           // program on the stored input vs the stored score
  double gate_max_abs_diff = 0.0;
  float score = 0.0f;
  float expected_score = 0.0f;
};

struct GoldenReport {
  std::vector<GoldenResult> pairs;
  // Camera pairs: this runtime's preprocess_frame vs the stored input, then the program on
  // *that* input vs the stored outputs (the camera path end to end).
  std::vector<GoldenResult> camera_pairs;
  double score_tolerance = 0.0;
  double gate_tolerance = 0.0;
  double preprocess_tolerance = 0.0;
  bool passed = true;
  std::string failure;  // one line when !passed
};

class Scorer {
 public:
  enum class GoldenCheck {
    Required,  // refuse to load without model.golden.safetensors
    IfPresent,  // check it when it is there (default)
    Skip,       // never check (for diagnosing a refused program)
  };

  // Loads program + contract (checks the program's sha256, the contract's own digest and the one
  // the program embeds), runs the golden pairs and throws Error when the outputs disagree
  // beyond the tolerances stored with them (see docs/edge.md, "SME").
  static Scorer load(const std::string& program_path,
                     GoldenCheck golden = GoldenCheck::IfPresent);

  Scorer(Scorer&&) noexcept;
  Scorer& operator=(Scorer&&) noexcept;
  ~Scorer();

  const Contract& contract() const;
  // The golden check done at load (empty when skipped or absent).
  const GoldenReport& golden_report() const;

  // Runs the program on a preprocessed (1, 3, H, W) float32 input.
  Score run(const std::vector<float>& input) const;
  // Preprocesses then runs: width x height RGB8 pixels, rows `stride` bytes apart.
  Score score_rgb8(const uint8_t* rgb, int width, int height, size_t stride) const;
  // Preprocesses a camera frame (agiqa/camera.h: crop, reduce, convert, rotate, resize) on
  // `threads` threads, then runs the program.
  Score score_frame(const Frame& frame, int rotation = 0,
                    const std::optional<Crop>& crop = std::nullopt, int threads = 2) const;
  // Runs every golden pair of `golden_file` and compares (no throw; see GoldenReport::passed).
  GoldenReport check_golden(const std::string& golden_file) const;

 private:
  struct Impl;
  explicit Scorer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// SHA-256, lowercase hex (what model.json's program_sha256 holds).
std::string sha256_hex(const uint8_t* data, size_t size);

}  // namespace agiqa
