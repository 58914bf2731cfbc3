// The C++ twin of edge_runtime/preprocess.py: Pillow's antialiased resize, then normalise.
//
// The resize follows Pillow's two-pass separable resampling for 8-bit images
// (libImaging/Resample.c): per output pixel, filter weights over the source interval the pixel
// covers (support widened by the downscale factor, which is what antialiases), normalised,
// turned into 22-bit fixed point, a horizontal pass over the rows the vertical pass needs,
// then a vertical pass, each rounding and clamping to uint8. Doing the same integer arithmetic
// gives the same bytes as Pillow, so the model input matches numpy's to float rounding.
//
// "cv2_bicubic" (OpenCV's INTER_CUBIC, the official MA-AGIQA teacher's resize: Keys cubic with
// A = -0.75, half-pixel centres, replicated border, no antialiasing) is float32 instead, in the
// exact order of operations of numpy's resize_cv2_bicubic, so its bytes match numpy's too.
#include <cmath>
#include <cstring>

#include "agiqa/scorer.h"
#include "resample.h"

namespace agiqa {
namespace {

struct Filter {
  double (*weight)(double);
  double support;
};

double bilinear_weight(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double box_weight(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

double bicubic_weight(double x) {
  constexpr double a = -0.5;  // Pillow's choice
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

Filter filter_for(const std::string& interpolation) {
  if (interpolation == "bilinear") return {bilinear_weight, 1.0};
  if (interpolation == "bicubic") return {bicubic_weight, 2.0};
  if (interpolation == "area") return {box_weight, 0.5};
  throw Error("unknown interpolation '" + interpolation +
              "' in model.json; choose from area, bicubic, bilinear, cv2_bicubic");
}

}  // namespace

Coefficients precompute(int in_size, int out_size, const std::string& interpolation) {
  const Filter filter = filter_for(interpolation);
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filter.support * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = filter.weight((x + xmin - center + 0.5) * ss);
      total += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = total != 0.0 ? w[x] / total : w[x];
      const double fixed = v * (1 << kPrecisionBits);
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(v < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

// Per output sample: the 4 source indices (border replicated) and Keys weights (A = -0.75),
// computed in double and rounded to float32 as numpy's _cubic_taps does.
CubicTaps cubic_taps(int in_size, int out_size) {
  CubicTaps t;
  t.index.resize(static_cast<size_t>(out_size) * 4);
  t.weight.resize(static_cast<size_t>(out_size) * 4);
  const double scale = static_cast<double>(in_size) / out_size, a = -0.75;
  for (int i = 0; i < out_size; ++i) {
    const double pos = (static_cast<double>(i) + 0.5) * scale - 0.5;
    const double start = std::floor(pos);
    for (int k = 0; k < 4; ++k) {
      const double d = std::fabs((pos - start) - (k - 1));
      const double near = ((a + 2) * d - (a + 3)) * d * d + 1;
      const double far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
      const double w = d <= 1 ? near : (d < 2 ? far : 0.0);
      int j = static_cast<int>(start) + k - 1;
      j = j < 0 ? 0 : (j > in_size - 1 ? in_size - 1 : j);
      t.index[static_cast<size_t>(i) * 4 + k] = j;
      t.weight[static_cast<size_t>(i) * 4 + k] = static_cast<float>(w);
    }
  }
  return t;
}

std::vector<uint8_t> cubic_resize(const uint8_t* rgb, int height, size_t stride, const CubicTaps& xt,
                                  const CubicTaps& yt, int threads) {
  const int out_width = static_cast<int>(xt.index.size() / 4);
  const int out_height = static_cast<int>(yt.index.size() / 4);
  // The horizontal pass over only the source rows the vertical pass reads, as float32.
  std::vector<int> slot(height, -1), rows;
  for (int r : yt.index) slot[r] = 0;
  for (int r = 0; r < height; ++r)
    if (slot[r] == 0) slot[r] = static_cast<int>(rows.size()), rows.push_back(r);
  const size_t row_len = static_cast<size_t>(out_width) * 3;
  std::vector<float> horizontal(rows.size() * row_len);
  split_rows(static_cast<int>(rows.size()), threads, [&](int s0, int s1) {
    for (int s = s0; s < s1; ++s) {
      const uint8_t* in = rgb + static_cast<size_t>(rows[s]) * stride;
      float* out = &horizontal[static_cast<size_t>(s) * row_len];
      for (int x = 0; x < out_width; ++x) {
        const int* idx = &xt.index[static_cast<size_t>(x) * 4];
        const float* w = &xt.weight[static_cast<size_t>(x) * 4];
        for (int c = 0; c < 3; ++c)
          out[x * 3 + c] = cubic_sum([&](int k) { return static_cast<float>(in[idx[k] * 3 + c]); }, w);
      }
    }
  });
  std::vector<uint8_t> result(static_cast<size_t>(out_height) * row_len);
  split_rows(out_height, threads, [&](int y0, int y1) {
    for (int y = y0; y < y1; ++y) {
      const float* src[4];
      for (int k = 0; k < 4; ++k)
        src[k] = &horizontal[static_cast<size_t>(slot[yt.index[static_cast<size_t>(y) * 4 + k]]) * row_len];
      const float* w = &yt.weight[static_cast<size_t>(y) * 4];
      uint8_t* out = &result[static_cast<size_t>(y) * row_len];
      for (size_t i = 0; i < row_len; ++i) {
        out[i] = cubic_round8(cubic_sum([&](int k) { return src[k][i]; }, w));
      }
    }
  });
  return result;
}

std::vector<uint8_t> resize_rgb8(const uint8_t* rgb, int width, int height, size_t stride,
                                 int out_width, int out_height,
                                 const std::string& interpolation) {
  if (width <= 0 || height <= 0 || out_width <= 0 || out_height <= 0)
    throw Error("resize_rgb8: image sizes must be positive");
  if (stride < static_cast<size_t>(width) * 3)
    throw Error("resize_rgb8: stride " + std::to_string(stride) + " < 3 * width " +
                std::to_string(width));
  if (interpolation == "cv2_bicubic") {
    if (width == out_width && height == out_height) {  // numpy returns the image as it is
      std::vector<uint8_t> copy(static_cast<size_t>(height) * width * 3);
      for (int y = 0; y < height; ++y)
        std::memcpy(&copy[static_cast<size_t>(y) * width * 3], rgb + static_cast<size_t>(y) * stride,
                    static_cast<size_t>(width) * 3);
      return copy;
    }
    return cubic_resize(rgb, height, stride, cubic_taps(width, out_width), cubic_taps(height, out_height));
  }
  const Coefficients horiz = precompute(width, out_width, interpolation);
  const Coefficients vert = precompute(height, out_height, interpolation);
  const bool need_horizontal = out_width != width;
  const bool need_vertical = out_height != height;

  // Horizontal pass over only the source rows the vertical pass reads (Pillow does the same;
  // the result does not depend on it, the work does).
  const int row_first = need_horizontal ? vert.first[0] : 0;
  const int row_last = need_horizontal ? vert.first[out_height - 1] + vert.count[out_height - 1]
                                       : height;
  const int rows = row_last - row_first;
  std::vector<uint8_t> temp;
  const uint8_t* src = rgb;
  size_t src_stride = stride;
  int src_width = width;
  if (need_horizontal) {
    temp.resize(static_cast<size_t>(rows) * out_width * 3);
    for (int y = 0; y < rows; ++y) {
      const uint8_t* in = rgb + static_cast<size_t>(y + row_first) * stride;
      uint8_t* out = temp.data() + static_cast<size_t>(y) * out_width * 3;
      for (int xx = 0; xx < out_width; ++xx)
        filter_pixel3(in + static_cast<size_t>(horiz.first[xx]) * 3,
                      &horiz.k[static_cast<size_t>(xx) * horiz.ksize], horiz.count[xx], out + xx * 3);
    }
    src = temp.data();
    src_stride = static_cast<size_t>(out_width) * 3;
    src_width = out_width;
  } else {
    src = rgb + static_cast<size_t>(row_first) * stride;
  }

  std::vector<uint8_t> result(static_cast<size_t>(out_height) * src_width * 3);
  if (!need_vertical) {
    for (int y = 0; y < out_height; ++y)
      std::memcpy(&result[static_cast<size_t>(y) * src_width * 3],
                  src + static_cast<size_t>(y) * src_stride, static_cast<size_t>(src_width) * 3);
    return result;
  }
  for (int yy = 0; yy < out_height; ++yy) {
    const int32_t* k = &vert.k[static_cast<size_t>(yy) * vert.ksize];
    const int first = vert.first[yy] - row_first;
    uint8_t* out = &result[static_cast<size_t>(yy) * src_width * 3];
    for (int xx = 0; xx < src_width * 3; ++xx) {
      int32_t s = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < vert.count[yy]; ++y)
        s += src[static_cast<size_t>(first + y) * src_stride + xx] * k[y];
      out[xx] = clip8(s);
    }
  }
  return result;
}

std::vector<float> preprocess_rgb8(const PreprocessSpec& spec, const uint8_t* rgb, int width,
                                   int height, size_t stride) {
  const int h = spec.height, w = spec.width;
  std::vector<uint8_t> packed;
  const uint8_t* pixels = rgb;
  size_t row_bytes = stride;
  if (width != w || height != h) {
    packed = resize_rgb8(rgb, width, height, stride, w, h, spec.interpolation);
    pixels = packed.data();
    row_bytes = static_cast<size_t>(w) * 3;
  }
  std::vector<float> chw(static_cast<size_t>(3) * h * w);
  normalize_rows(spec, pixels, row_bytes, RowLayout::Interleaved, 0, h, chw.data());
  return chw;
}

namespace {
// One channel of one row; STEP: 3 for interleaved pixels, 1 for a planar row.
template <int STEP>
AGIQA_MULTIVERSION void normalize_line(const uint8_t* __restrict in, int w, float mean, float std,
                                       float* __restrict out) {
  const float inv255 = static_cast<float>(1.0 / 255.0);
  for (int x = 0; x < w; ++x) out[x] = (static_cast<float>(in[x * STEP]) * inv255 - mean) / std;
}
}  // namespace

void normalize_rows(const PreprocessSpec& spec, const uint8_t* pixels, size_t row_bytes,
                    RowLayout layout, int row_begin, int row_end, float* chw) {
  // numpy: float32(v) * float32(1 / 255), then (x - mean) / std, all in float32. Built with
  // -ffp-contract=off so no fused multiply-add changes the last bit on aarch64; vector
  // division rounds exactly like scalar division.
  const int h = spec.height, w = spec.width;
  for (int y = row_begin; y < row_end; ++y) {
    const uint8_t* row = pixels + static_cast<size_t>(y) * row_bytes;
    for (int c = 0; c < 3; ++c) {
      float* out = chw + (static_cast<size_t>(c) * h + y) * w;
      if (layout == RowLayout::Planar)
        normalize_line<1>(row + static_cast<size_t>(c) * w, w, spec.mean[c], spec.std[c], out);
      else
        normalize_line<3>(row + c, w, spec.mean[c], spec.std[c], out);
    }
  }
}

NormalizeTable normalize_table(const PreprocessSpec& spec) {
  std::array<uint8_t, 256> values;
  for (int v = 0; v < 256; ++v) values[v] = static_cast<uint8_t>(v);
  NormalizeTable table;
  for (int c = 0; c < 3; ++c) normalize_line<1>(values.data(), 256, spec.mean[c], spec.std[c], table[c].data());
  return table;
}

}  // namespace agiqa
