// Internals shared by the photo path (preprocess.cpp) and the camera path (camera.cpp): Pillow's
// fixed-point resampling coefficients and the normalisation, so both resize and normalise with
// the very same arithmetic.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "agiqa/scorer.h"

namespace agiqa {

// The hot integer loops get clones for AVX2 and (GCC) AVX-512 that the loader picks on CPUs
// that have them: the x86-64 baseline (SSE2) has no 32-bit multiply and 16-byte registers, so
// the same loops run 3-4x slower there. aarch64's baseline (NEON) vectorises them as they are.
#if defined(__x86_64__) && defined(__linux__) && !defined(__ANDROID__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__clang__)
#define AGIQA_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#elif __has_attribute(target_clones)
#define AGIQA_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#endif
#endif
// Elsewhere the kernels only stay out of line: inlined into their callers, GCC forgets that
// their __restrict pointers do not alias and gives up on vectorising.
#ifndef AGIQA_MULTIVERSION
#if defined(__GNUC__)
#define AGIQA_MULTIVERSION __attribute__((noinline))
#else
#define AGIQA_MULTIVERSION
#endif
#endif

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images

// Fixed-point weights for resampling `in_size` samples to `out_size` (Pillow's
// precompute_coeffs): output i reads source samples first[i] .. first[i] + count[i] - 1.
struct Coefficients {
  int ksize = 0;
  std::vector<int> first;   // first source sample of each output sample
  std::vector<int> count;   // number of source samples
  std::vector<int32_t> k;   // out_size x ksize weights, kPrecisionBits fixed point
};

// Throws Error for an interpolation the C++ runtime does not implement.
Coefficients precompute(int in_size, int out_size, const std::string& interpolation);

// cv2_bicubic (OpenCV's INTER_CUBIC: Keys cubic, A = -0.75, border replicated, no
// antialiasing), in the float32 arithmetic of numpy's resize_cv2_bicubic. Output i of an axis
// reads source samples index[4 i .. 4 i + 3] with weights weight[4 i ..].
struct CubicTaps {
  std::vector<int> index;     // out_size x 4
  std::vector<float> weight;  // out_size x 4
};
CubicTaps cubic_taps(int in_size, int out_size);

// sum_k value(k) * w[k] in float32, each product rounded, the taps added in order (numpy's
// _weighted_taps; -ffp-contract=off keeps it from fusing).
template <typename Value>
inline float cubic_sum(const Value& value, const float* w) {
  float total = value(0) * w[0];
  for (int k = 1; k < 4; ++k) total = total + value(k) * w[k];
  return total;
}

// The second pass's output value: float32 rounded half to even, clamped to [0, 255].
inline uint8_t cubic_round8(float v) {
  v = std::nearbyint(v);
  return static_cast<uint8_t>(v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v));
}

// A (height, *, 3) RGB8 image, rows `stride` bytes apart, resized with the taps of each axis
// (indices into its rows and columns) to (yt outputs, xt outputs, 3), tightly packed; each
// pass split over `threads` threads by rows.
std::vector<uint8_t> cubic_resize(const uint8_t* rgb, int height, size_t stride, const CubicTaps& xt,
                                  const CubicTaps& yt, int threads = 1);

// Runs part(y0, y1) over `threads` slices of [0, n) rows, the first on this thread.
template <typename Part>
void split_rows(int n, int threads, const Part& part) {
  threads = std::max(1, std::min(threads, n));
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i)
    workers.emplace_back([&, i] { part(n * i / threads, n * (i + 1) / threads); });
  part(0, n / threads);
  for (auto& w : workers) w.join();
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// One output pixel of a pass over interleaved RGB: sum_j p[j * 3 + ch] * k[j] for j < count,
// rounded and clamped into out[0..2]. Every resize pass along samples 3 bytes apart uses it.
inline void filter_pixel3(const uint8_t* p, const int32_t* k, int count, uint8_t* out) {
  int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
  for (int j = 0; j < count; ++j) {
    s0 += p[j * 3 + 0] * k[j];
    s1 += p[j * 3 + 1] * k[j];
    s2 += p[j * 3 + 2] * k[j];
  }
  out[0] = clip8(s0);
  out[1] = clip8(s1);
  out[2] = clip8(s2);
}

// How the samples of an RGB8 image's row lie: interleaved (R, G, B of pixel 0, then of pixel 1,
// ...: decoded photos) or planar (the row's width red samples, then its green, then its blue:
// the camera path, whose loops stay contiguous that way).
enum class RowLayout { Interleaved, Planar };

// Rows [row_begin, row_end) of a spec.height x spec.width RGB8 image (rows `row_bytes` apart)
// into the (3, H, W) float32 input `chw`: x / 255, (x - mean) / std, as numpy rounds it.
void normalize_rows(const PreprocessSpec& spec, const uint8_t* pixels, size_t row_bytes,
                    RowLayout layout, int row_begin, int row_end, float* chw);

// normalize_rows for every value of each channel: table[ch][v] is what it makes of v.
using NormalizeTable = std::array<std::array<float, 256>, 3>;
NormalizeTable normalize_table(const PreprocessSpec& spec);

}  // namespace agiqa
