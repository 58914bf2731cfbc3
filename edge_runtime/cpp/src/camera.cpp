// The camera path (agiqa/camera.h), bitwise equal to edge_runtime/camera.py.
//
// One pass: a row converter turns one row of the reduced crop C (buffer orientation) into RGB8,
// chosen once per frame by format, reduction and pixel stride (templates: no branch on the
// format per pixel). The resize then consumes those rows directly. Pillow resizes the *rotated*
// image R: first along R's x (rounded to uint8), then along R's y. For 0/180 degrees R's x is
// C's x: each C row is converted and filtered along x at once, then the kept rows are filtered
// along y. For 90/270 degrees R's x is C's y: a ring of converted C rows is combined into one
// intermediate line per output column, the lines are transposed, and the transposed rows are
// combined along C's x. A rotation that reverses an axis mirrors that axis's coefficients. The
// integer sums are the same terms as Pillow's, so the bytes are the same; no full-size RGB
// image is written.
//
// Rows are planar inside (each row's red samples, then its green, then its blue) so that every
// hot loop reads and writes contiguous bytes and vectorises; on x86-64 those loops also get an
// AVX2 clone (AGIQA_MULTIVERSION, resample.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>

#include "agiqa/scorer.h"
#include "resample.h"
#include "runtime_pool.h"

namespace agiqa {
namespace {

constexpr int kShift = 16;  // fixed-point bits of the YUV -> RGB coefficients

struct YuvCoefficients {
  int32_t y_offset, cy, crv, cgu, cgv, cbu;
};

// edge_runtime.camera.yuv_coefficients: the same float64 expressions, rounded half to even
// like Python's round().
YuvCoefficients yuv_coefficients(ColorMatrix matrix, ColorRange range) {
  const double kr = matrix == ColorMatrix::BT601 ? 0.299 : 0.2126;
  const double kb = matrix == ColorMatrix::BT601 ? 0.114 : 0.0722;
  const double kg = 1.0 - kr - kb;
  const bool video = range == ColorRange::Video;
  const double y_scale = video ? 255.0 / 219.0 : 1.0, c_scale = video ? 255.0 / 224.0 : 1.0;
  const double one = 1 << kShift;
  auto r = [](double v) { return static_cast<int32_t>(std::nearbyint(v)); };
  return {video ? 16 : 0, r(y_scale * one), r(2 * (1 - kr) * c_scale * one),
          r(2 * kb * (1 - kb) / kg * c_scale * one), r(2 * kr * (1 - kr) / kg * c_scale * one),
          r(2 * (1 - kb) * c_scale * one)};
}

// Where the reduced crop C comes from: after rounding for the reduction, C is rows x cols
// pixels, pixel (r, c) averaging the f x f block at buffer (left + c f, top + r f).
struct Plan {
  int left = 0, top = 0, f = 1, rows = 0, cols = 0;
};

void check_plane(const Plane& p, const char* name, size_t width, size_t height, size_t bytes) {
  // `bytes` per sample (4 for packed pixels, whose pixel_stride is 4).
  const std::string where = std::string("camera frame: ") + name + " plane: ";
  if (p.data == nullptr) throw Error(where + "no data; pass the plane's buffer");
  if (p.pixel_stride < 1 || p.row_stride < 1)
    throw Error(where + "strides must be positive (row_stride " + std::to_string(p.row_stride) +
                ", pixel_stride " + std::to_string(p.pixel_stride) + ")");
  const size_t row = (width - 1) * p.pixel_stride + bytes;
  if (p.row_stride < row)
    throw Error(where + "row_stride " + std::to_string(p.row_stride) + " is shorter than a row of " +
                std::to_string(width) + " samples at pixel_stride " +
                std::to_string(p.pixel_stride) + " (" + std::to_string(row) + " bytes)");
  const size_t need = (height - 1) * p.row_stride + row;
  if (p.size != 0 && p.size < need)
    throw Error(where + std::to_string(p.size) + " bytes, a " + std::to_string(width) + "x" +
                std::to_string(height) + " plane with row_stride " +
                std::to_string(p.row_stride) + " needs " + std::to_string(need));
}

void check_frame(const Frame& frame, int rotation) {
  if (rotation != 0 && rotation != 90 && rotation != 180 && rotation != 270)
    throw Error("camera frame: rotation must be 0, 90, 180 or 270 degrees clockwise, got " +
                std::to_string(rotation));
  if (frame.width < 1 || frame.height < 1)
    throw Error("camera frame: size must be positive, got " + std::to_string(frame.width) + "x" +
                std::to_string(frame.height));
  const size_t w = frame.width, h = frame.height;
  if (frame.format == FrameFormat::YUV420) {
    check_plane(frame.planes[0], "Y", w, h, 1);
    check_plane(frame.planes[1], "U", (w + 1) / 2, (h + 1) / 2, 1);
    check_plane(frame.planes[2], "V", (w + 1) / 2, (h + 1) / 2, 1);
  } else {
    if (frame.planes[0].pixel_stride != 4)
      throw Error("camera frame: RGBA/BGRA pixels are 4 bytes (pixel_stride 4), got pixel_stride " +
                  std::to_string(frame.planes[0].pixel_stride));
    check_plane(frame.planes[0], frame.format == FrameFormat::RGBA ? "RGBA" : "BGRA", w, h, 4);
  }
}

// edge_runtime.camera: _crop_rect, reduce_factor and the even rounding of frame_to_rgb.
Plan make_plan(const Frame& frame, int rotation, const std::optional<Crop>& crop,
               const std::optional<InputSize>& input) {
  check_frame(frame, rotation);
  Crop c = crop.value_or(Crop{0, 0, frame.width, frame.height});
  if (c.left < 0 || c.top < 0 || c.width < 1 || c.height < 1 ||
      c.left > frame.width - c.width || c.top > frame.height - c.height)
    throw Error("camera frame: crop (left " + std::to_string(c.left) + ", top " +
                std::to_string(c.top) + ", width " + std::to_string(c.width) + ", height " +
                std::to_string(c.height) + ") is not inside the " + std::to_string(frame.width) +
                "x" + std::to_string(frame.height) + " frame");
  Plan plan;
  if (input) {
    const bool turned = rotation == 90 || rotation == 270;
    const int in_h = turned ? input->width : input->height;
    const int in_w = turned ? input->height : input->width;
    int f = std::min(c.width / (2 * in_w), c.height / (2 * in_h));
    f -= f % 2;
    plan.f = f >= 2 ? f : 1;
  }
  if (plan.f > 1) {
    c.left -= c.left % 2;
    c.top -= c.top % 2;
    c.width = std::min(c.width, frame.width - c.left);
    c.height = std::min(c.height, frame.height - c.top);
  }
  plan.left = c.left;
  plan.top = c.top;
  plan.rows = c.height / plan.f;
  plan.cols = c.width / plan.f;
  return plan;
}

// -- rows of C ------------------------------------------------------------------------------
// A converted row of C is planar: its n = c1 - c0 red samples, then n green, then n blue. Every
// loop from here on then reads and writes contiguous bytes, which compilers vectorise
// (interleaved RGB made the conversion's stores and the resize's loads 3 bytes apart, and they
// stayed scalar).
struct Source {
  const Frame* frame;
  Plan plan;
  YuvCoefficients k;
};

// Scratch of one thread: the Y, U, V samples of a row before conversion.
struct Scratch {
  std::vector<int32_t> y, u, v;
};

using RowFn = void (*)(const Source&, int r, int c0, int c1, Scratch&, uint8_t* out);

inline uint8_t clamp8(int32_t v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// Step 3 for one pixel: its Y, U, V samples (block means when reduced) -> R, G, B.
inline void yuv_to_rgb(const YuvCoefficients& k, int32_t y, int32_t u, int32_t v, uint8_t& r,
                       uint8_t& g, uint8_t& b) {
  const int32_t luma = k.cy * (y - k.y_offset) + (1 << (kShift - 1));
  const int32_t cb = u - 128, cr = v - 128;
  r = clamp8((luma + k.crv * cr) >> kShift);
  g = clamp8((luma - k.cgu * cb - k.cgv * cr) >> kShift);
  b = clamp8((luma + k.cbu * cb) >> kShift);
}

// Step 3 for a row of samples.
AGIQA_MULTIVERSION void yuv_line(const int32_t* __restrict y, const int32_t* __restrict u,
                                 const int32_t* __restrict v, int n, const YuvCoefficients k,
                                 uint8_t* __restrict r, uint8_t* __restrict g,
                                 uint8_t* __restrict b) {
  for (int i = 0; i < n; ++i) yuv_to_rgb(k, y[i], u[i], v[i], r[i], g[i], b[i]);
}

// Step 3 split in two for picked samples, whose chroma serves two luma rows: the chroma terms
// of yuv_to_rgb once per chroma row (U, V samples CS apart: 2 for NV12/NV21 pairs), ...
template <int CS>
AGIQA_MULTIVERSION void chroma_terms(const uint8_t* __restrict u, const uint8_t* __restrict v,
                                     int n, const YuvCoefficients k, int32_t* __restrict r,
                                     int32_t* __restrict g, int32_t* __restrict b) {
  for (int i = 0; i < n; ++i) {
    const int32_t cb = u[CS * i] - 128, cr = v[CS * i] - 128;
    r[i] = k.crv * cr;
    g[i] = -k.cgu * cb - k.cgv * cr;
    b[i] = k.cbu * cb;
  }
}

// ... then the luma rows: the same integers as yuv_to_rgb (no sum leaves int32, so the order
// of the additions does not matter).
AGIQA_MULTIVERSION void luma_line(const uint8_t* __restrict y, const int32_t* __restrict tr,
                                  const int32_t* __restrict tg, const int32_t* __restrict tb,
                                  int n, const YuvCoefficients k, uint8_t* __restrict r,
                                  uint8_t* __restrict g, uint8_t* __restrict b) {
  for (int i = 0; i < n; ++i) {
    const int32_t luma = k.cy * (y[i] - k.y_offset) + (1 << (kShift - 1));
    r[i] = clamp8((luma + tr[i]) >> kShift);
    g[i] = clamp8((luma + tg[i]) >> kShift);
    b[i] = clamp8((luma + tb[i]) >> kShift);
  }
}

// YUV samples of C row r, columns [c0, c1): block means of f x f luma and f/2 x f/2 chroma
// (F: f when known at compile time, 0 = runtime), or, unreduced, the chroma sample (x/2, y/2).
// YPS, CPS: the luma and chroma pixel strides when known (0 = runtime).
template <int F, int YPS, int CPS>
AGIQA_MULTIVERSION void yuv_row(const Source& s, int r, int c0, int c1, Scratch& t, uint8_t* out) {
  const Frame& fr = *s.frame;
  const Plane &Y = fr.planes[0], &U = fr.planes[1], &V = fr.planes[2];
  const size_t yps = YPS ? YPS : Y.pixel_stride, cps = CPS ? CPS : U.pixel_stride;
  const size_t vps = CPS ? CPS : V.pixel_stride;
  const int f = F ? F : s.plan.f, n = c1 - c0;
  int32_t* ys = t.y.data();
  int32_t* us = t.u.data();
  int32_t* vs = t.v.data();
  if (f == 1) {
    const int y = s.plan.top + r, x0 = s.plan.left + c0;
    const uint8_t* yrow = Y.data + size_t(y) * Y.row_stride + size_t(x0) * yps;
    const uint8_t* urow = U.data + size_t(y / 2) * U.row_stride;
    const uint8_t* vrow = V.data + size_t(y / 2) * V.row_stride;
    for (int i = 0; i < n; ++i) {
      const size_t cx = size_t(x0 + i) >> 1;
      ys[i] = yrow[size_t(i) * yps];
      us[i] = urow[cx * cps];
      vs[i] = vrow[cx * vps];
    }
  } else {
    const int g = f / 2, nl = f * f, nc = g * g;
    const int y = s.plan.top + r * f, x0 = s.plan.left + c0 * f;
    std::fill(ys, ys + n, nl / 2);
    std::fill(us, us + n, nc / 2);
    std::fill(vs, vs + n, nc / 2);
    for (int dy = 0; dy < f; ++dy) {
      const uint8_t* row = Y.data + size_t(y + dy) * Y.row_stride + size_t(x0) * yps;
      for (int i = 0; i < n; ++i) {
        int32_t sum = 0;
        for (int dx = 0; dx < f; ++dx) sum += row[(size_t(i) * f + dx) * yps];
        ys[i] += sum;
      }
    }
    for (int dy = 0; dy < g; ++dy) {
      const size_t cy = size_t(y / 2 + dy);
      const uint8_t* urow = U.data + cy * U.row_stride + size_t(x0 / 2) * cps;
      const uint8_t* vrow = V.data + cy * V.row_stride + size_t(x0 / 2) * vps;
      for (int i = 0; i < n; ++i) {
        int32_t su = 0, sv = 0;
        for (int dx = 0; dx < g; ++dx) {
          su += urow[(size_t(i) * g + dx) * cps];
          sv += vrow[(size_t(i) * g + dx) * vps];
        }
        us[i] += su;
        vs[i] += sv;
      }
    }
    for (int i = 0; i < n; ++i) {  // (sum + n / 2) // n, sums are non-negative
      ys[i] /= nl;
      us[i] /= nc;
      vs[i] /= nc;
    }
  }
  yuv_line(ys, us, vs, n, s.k, out, out + n, out + 2 * n);
}

// The 1080p case: f = 2 from NV12/NV21 (chroma pixel stride CPS 2, U and V one byte apart) or
// I420 (CPS 1): each output pixel is a 2x2 luma mean and one chroma sample. One loop over
// restrict pointers, no scratch, so the compiler vectorises it.
template <int CPS>
AGIQA_MULTIVERSION void yuv_half_line(const uint8_t* __restrict y0, const uint8_t* __restrict y1,
                                      const uint8_t* __restrict u, const uint8_t* __restrict v,
                                      int n, const YuvCoefficients k, uint8_t* __restrict r,
                                      uint8_t* __restrict g, uint8_t* __restrict b) {
  for (int i = 0; i < n; ++i) {
    const int32_t sum = y0[2 * i] + y0[2 * i + 1] + y1[2 * i] + y1[2 * i + 1];
    yuv_to_rgb(k, (sum + 2) >> 2, u[CPS * i], v[CPS * i], r[i], g[i], b[i]);
  }
}

template <int CPS>
void yuv_row_half(const Source& s, int r, int c0, int c1, Scratch&, uint8_t* out) {
  const Frame& fr = *s.frame;
  const Plane &Y = fr.planes[0], &U = fr.planes[1], &V = fr.planes[2];
  const int n = c1 - c0, y = s.plan.top + 2 * r, x0 = s.plan.left + 2 * c0;
  const uint8_t* y0 = Y.data + size_t(y) * Y.row_stride + size_t(x0);
  const uint8_t* u = U.data + size_t(y / 2) * U.row_stride + size_t(x0 / 2) * CPS;
  const uint8_t* v = V.data + size_t(y / 2) * V.row_stride + size_t(x0 / 2) * CPS;
  yuv_half_line<CPS>(y0, y0 + Y.row_stride, u, v, n, s.k, out, out + n, out + 2 * n);
}

// 4-byte pixels: channel RC (0 for RGBA, 2 for BGRA) is red, 2 - RC blue.
template <int F, int RC>
AGIQA_MULTIVERSION void packed_row(const Source& s, int r, int c0, int c1, Scratch&, uint8_t* out) {
  const Plane& P = s.frame->planes[0];
  const int f = F ? F : s.plan.f, n = c1 - c0, nb = f * f;
  const int y = s.plan.top + r * f, x0 = s.plan.left + c0 * f;
  const uint8_t* base = P.data + size_t(y) * P.row_stride + size_t(x0) * 4;
  uint8_t *red = out, *green = out + n, *blue = out + 2 * n;
  if (f == 1) {
    for (int i = 0; i < n; ++i) {
      red[i] = base[4 * i + RC];
      green[i] = base[4 * i + 1];
      blue[i] = base[4 * i + 2 - RC];
    }
    return;
  }
  for (int i = 0; i < n; ++i) {
    int32_t sr = nb / 2, sg = nb / 2, sb = nb / 2;
    for (int dy = 0; dy < f; ++dy) {
      const uint8_t* p = base + size_t(dy) * P.row_stride + size_t(i) * f * 4;
      for (int dx = 0; dx < f; ++dx) {
        sr += p[4 * dx + RC];
        sg += p[4 * dx + 1];
        sb += p[4 * dx + 2 - RC];
      }
    }
    red[i] = static_cast<uint8_t>(sr / nb);
    green[i] = static_cast<uint8_t>(sg / nb);
    blue[i] = static_cast<uint8_t>(sb / nb);
  }
}

template <int F>
RowFn yuv_for(const Frame& fr) {
  const size_t yps = fr.planes[0].pixel_stride, ups = fr.planes[1].pixel_stride;
  const bool same = ups == fr.planes[2].pixel_stride;
  if (yps == 1 && same && ups == 2) return F == 2 ? yuv_row_half<2> : yuv_row<F, 1, 2>;  // NV
  if (yps == 1 && same && ups == 1) return F == 2 ? yuv_row_half<1> : yuv_row<F, 1, 1>;  // I420
  return yuv_row<F, 0, 0>;
}

RowFn row_function(const Frame& fr, int f) {
  if (fr.format == FrameFormat::YUV420)
    return f == 1 ? yuv_for<1>(fr) : f == 2 ? yuv_for<2>(fr) : yuv_for<0>(fr);
  if (fr.format == FrameFormat::RGBA)
    return f == 1 ? packed_row<1, 0> : f == 2 ? packed_row<2, 0> : packed_row<0, 0>;
  return f == 1 ? packed_row<1, 2> : f == 2 ? packed_row<2, 2> : packed_row<0, 2>;
}

struct Converter {
  Source source;
  RowFn fn;

  Converter(const Frame& frame, const Plan& plan)
      : source{&frame, plan, yuv_coefficients(frame.matrix, frame.range)},
        fn(row_function(frame, plan.f)) {}
  Scratch scratch() const {
    const size_t n = source.plan.cols;
    return {std::vector<int32_t>(n), std::vector<int32_t>(n), std::vector<int32_t>(n)};
  }
  // Planar C row r, columns [c0, c1), into out[0, 3 (c1 - c0)).
  void row(int r, int c0, int c1, Scratch& t, uint8_t* out) const {
    fn(source, r, c0, c1, t, out);
  }
};

// out[i] = row[at[i]] for i < n (a restrict kernel: inlined, the byte stores would make the
// compiler reload every pointer from memory at each sample).
AGIQA_MULTIVERSION void pick_samples(const uint8_t* __restrict row, const size_t* __restrict at,
                                     size_t n, uint8_t* __restrict out) {
  for (size_t i = 0; i < n; ++i) out[i] = row[at[i]];
}

// The 2-byte pairs at row + at[i] into out[2 i, 2 i + 2): NV12/NV21 chroma, U and V together.
AGIQA_MULTIVERSION void pick_pairs(const uint8_t* __restrict row, const size_t* __restrict at,
                                   size_t n, uint8_t* __restrict out) {
  for (size_t i = 0; i < n; ++i) std::memcpy(out + 2 * i, row + at[i], 2);
}

// Luma of the picked columns, which come as the 4 taps of each output: a tap quad of 4
// neighbouring columns (every quad of a downscale but those clamped at a border) is copied as
// one 4-byte word, the others sample by sample. from[q]: quad q's first byte in the row
// (4 consecutive bytes), or SIZE_MAX for the others, whose samples are at at[4 q + k].
AGIQA_MULTIVERSION void pick_quads(const uint8_t* __restrict row, const size_t* __restrict from,
                                   const size_t* __restrict at, size_t quads,
                                   uint8_t* __restrict out) {
  for (size_t q = 0; q < quads; ++q) {
    if (from[q] != SIZE_MAX) {
      std::memcpy(out + 4 * q, row + from[q], 4);
    } else {
      for (size_t k = 4 * q; k < 4 * q + 4; ++k) out[k] = row[at[k]];
    }
  }
}

// Picks the same columns of C, cols[0..n) (the 4 taps of each output, n = 4 outputs), from
// row after row: planar RGB, n red, then n green, then n blue. Unreduced, where each picked
// sample lies in a row is worked out once per frame and only those samples are read (a 1080p
// frame's cubic taps read under half of each row); a chroma row serves two luma rows, so its
// chroma terms are worked out once for both (chroma_terms, luma_line). Reduced, each row is
// converted whole (block means are cheaper along a row) and the columns picked from it. One
// per thread.
class RowPicker {
 public:
  RowPicker(const Converter& conv, const std::vector<int>& cols)
      : conv_(conv), cols_(cols), n_(cols.size()), scratch_(conv.scratch()) {
    const Frame& fr = *conv.source.frame;
    const int left = conv.source.plan.left;
    if (conv.source.plan.f != 1) {
      line_.resize(size_t(conv.source.plan.cols) * 3);
      return;
    }
    const bool yuv = fr.format == FrameFormat::YUV420;
    for (auto* at : {&y_at_, &u_at_, &v_at_}) at->resize(n_);
    for (size_t i = 0; i < n_; ++i) {
      const size_t x = size_t(left + cols[i]);
      y_at_[i] = yuv ? x * fr.planes[0].pixel_stride : 4 * x;
      u_at_[i] = (x >> 1) * fr.planes[1].pixel_stride;
      v_at_[i] = (x >> 1) * fr.planes[2].pixel_stride;
    }
    if (!yuv) return;
    const Plane &Y = fr.planes[0], &U = fr.planes[1], &V = fr.planes[2];
    y_quads_.resize(n_ / 4);
    for (size_t q = 0; q < n_ / 4; ++q) {
      const size_t* a = &y_at_[4 * q];
      const bool whole = Y.pixel_stride == 1 && a[1] == a[0] + 1 && a[2] == a[0] + 2 && a[3] == a[0] + 3;
      y_quads_[q] = whole ? a[0] : SIZE_MAX;
    }
    // NV12/NV21: U and V interleaved, one byte apart in the same rows.
    paired_ = U.pixel_stride == 2 && V.pixel_stride == 2 && U.row_stride == V.row_stride &&
              (U.data + 1 == V.data || V.data + 1 == U.data);
    y_.resize(n_);
    u_.resize(paired_ ? 2 * n_ : n_);
    v_.resize(paired_ ? 0 : n_);
    terms_.resize(3 * n_);
  }

  // C row r's picked pixels into out[0, 3 n).
  void row(int r, uint8_t* out) {
    const Source& s = conv_.source;
    const Frame& fr = *s.frame;
    uint8_t *red = out, *green = out + n_, *blue = out + 2 * n_;
    if (s.plan.f != 1) {
      const size_t w = s.plan.cols;
      conv_.row(r, 0, s.plan.cols, scratch_, line_.data());
      for (size_t ch = 0; ch < 3; ++ch)
        for (size_t i = 0; i < n_; ++i) out[ch * n_ + i] = line_[ch * w + cols_[i]];
      return;
    }
    const size_t y = size_t(s.plan.top + r);
    if (fr.format != FrameFormat::YUV420) {
      const uint8_t* row = fr.planes[0].data + y * fr.planes[0].row_stride;
      const int rc = fr.format == FrameFormat::RGBA ? 0 : 2;
      for (size_t i = 0; i < n_; ++i) {
        const uint8_t* p = row + y_at_[i];
        red[i] = p[rc];
        green[i] = p[1];
        blue[i] = p[2 - rc];
      }
      return;
    }
    const Plane &Y = fr.planes[0], &U = fr.planes[1], &V = fr.planes[2];
    const uint8_t* yrow = Y.data + y * Y.row_stride;
    pick_quads(yrow, y_quads_.data(), y_at_.data(), n_ / 4, y_.data());
    const size_t cy = y / 2;
    if (cy != chroma_row_) {
      int32_t *tr = terms_.data(), *tg = tr + n_, *tb = tg + n_;
      if (paired_) {
        const bool u_first = U.data < V.data;
        pick_pairs((u_first ? U.data : V.data) + cy * U.row_stride, u_at_.data(), n_, u_.data());
        const uint8_t *u = &u_[u_first ? 0 : 1], *v = &u_[u_first ? 1 : 0];
        chroma_terms<2>(u, v, int(n_), s.k, tr, tg, tb);
      } else {
        pick_samples(U.data + cy * U.row_stride, u_at_.data(), n_, u_.data());
        pick_samples(V.data + cy * V.row_stride, v_at_.data(), n_, v_.data());
        chroma_terms<1>(u_.data(), v_.data(), int(n_), s.k, tr, tg, tb);
      }
      chroma_row_ = cy;
    }
    luma_line(y_.data(), terms_.data(), terms_.data() + n_, terms_.data() + 2 * n_, int(n_), s.k,
              red, green, blue);
  }

 private:
  const Converter& conv_;
  const std::vector<int>& cols_;
  size_t n_;
  Scratch scratch_;
  std::vector<uint8_t> line_;              // a whole converted row (reduced)
  std::vector<size_t> y_at_, u_at_, v_at_;  // byte offsets of the picked samples in their rows
  std::vector<size_t> y_quads_;            // pick_quads' from
  bool paired_ = false;                    // u_ holds U, V pairs (NV12/NV21)
  std::vector<uint8_t> y_, u_, v_;          // the picked samples of the current rows
  std::vector<int32_t> terms_;             // chroma_terms of chroma_row_: n red, n green, n blue
  size_t chroma_row_ = SIZE_MAX;           // the chroma row terms_ hold
};

// -- the fused resize -----------------------------------------------------------------------
// The coefficients of an axis read backwards (a rotation that reverses it).
Coefficients mirrored(const Coefficients& c, int in_size) {
  Coefficients m = c;
  for (size_t i = 0; i < c.first.size(); ++i) {
    m.first[i] = in_size - c.first[i] - c.count[i];
    for (int j = 0; j < c.count[i]; ++j)
      m.k[i * c.ksize + j] = c.k[i * c.ksize + c.count[i] - 1 - j];
  }
  return m;
}

// The source samples [lo, hi) that outputs [o0, o1) of `c` read.
std::pair<int, int> span(const Coefficients& c, int o0, int o1) {
  int lo = c.first[o0], hi = c.first[o0] + c.count[o0];
  for (int o = o0 + 1; o < o1; ++o) {
    lo = std::min(lo, c.first[o]);
    hi = std::max(hi, c.first[o] + c.count[o]);
  }
  return {lo, hi};
}

// One filtered line along one channel: out[o] for the outputs o of `c`, from the samples `in`
// whose first is source sample `in_first`.
AGIQA_MULTIVERSION void filter_line(const Coefficients& c, const uint8_t* __restrict in,
                                    int in_first, uint8_t* __restrict out) {
  const int n = static_cast<int>(c.first.size());
  for (int o = 0; o < n; ++o) {
    const uint8_t* p = in + (c.first[o] - in_first);
    const int32_t* k = &c.k[size_t(o) * c.ksize];
    int32_t s = 1 << (kPrecisionBits - 1);
    for (int j = 0; j < c.count[o]; ++j) s += p[j] * k[j];
    out[o] = clip8(s);
  }
}

// out[i] = clip8(sum_j rows[j][i] * k[j]) for i < n: the across-rows filter, vectorisable.
AGIQA_MULTIVERSION void filter_across(const uint8_t* const* rows, const int32_t* k, int count,
                                      int n, int32_t* __restrict acc, uint8_t* __restrict out) {
  std::fill(acc, acc + n, 1 << (kPrecisionBits - 1));
  // Two rows per sweep over acc, written out: GCC's own unroll-and-jam of the one-row loop
  // made a two-row loop it left scalar, and that loop did most of the work.
  int j = 0;
  for (; j + 1 < count; j += 2) {
    const uint8_t* __restrict r0 = rows[j];
    const uint8_t* __restrict r1 = rows[j + 1];
    const int32_t w0 = k[j], w1 = k[j + 1];
    for (int i = 0; i < n; ++i) acc[i] += r0[i] * w0 + r1[i] * w1;
  }
  if (j < count) {
    const uint8_t* __restrict r0 = rows[j];
    const int32_t w0 = k[j];
    for (int i = 0; i < n; ++i) acc[i] += r0[i] * w0;
  }
  for (int i = 0; i < n; ++i) out[i] = clip8(acc[i]);
}

// Output rows are planar (RowLayout::Planar): row y holds out_w red, then green, then blue
// samples, 3 out_w bytes.
struct Resize {
  const Converter* conv;
  bool turned;       // 90/270: R's x is C's y
  Coefficients first;   // R's x pass, in C coordinates (C's x, or C's y when turned)
  Coefficients second;  // R's y pass, in C coordinates
  int out_w, out_h;

  // Output rows [y0, y1) into `out` (out_h rows of 3 out_w bytes).
  void rows(int y0, int y1, uint8_t* out) const {
    if (y0 >= y1) return;
    if (turned) return rows_turned(y0, y1, out);
    const auto [lo, hi] = span(second, y0, y1);           // C rows needed
    const auto [c0, c1] = span(first, 0, out_w);          // C columns needed
    const int m = c1 - c0;
    Scratch t = conv->scratch();
    std::vector<uint8_t> line(size_t(m) * 3);
    const size_t tw = size_t(out_w) * 3;
    std::vector<uint8_t> tmp(size_t(hi - lo) * tw);
    for (int r = lo; r < hi; ++r) {
      conv->row(r, c0, c1, t, line.data());
      for (int ch = 0; ch < 3; ++ch)
        filter_line(first, &line[size_t(ch) * m], c0, &tmp[size_t(r - lo) * tw + ch * out_w]);
    }
    std::vector<int32_t> acc(tw);
    std::vector<const uint8_t*> src(second.ksize);
    for (int y = y0; y < y1; ++y) {
      for (int j = 0; j < second.count[y]; ++j) src[j] = &tmp[size_t(second.first[y] + j - lo) * tw];
      filter_across(src.data(), &second.k[size_t(y) * second.ksize], second.count[y],
                    static_cast<int>(tw), acc.data(), out + size_t(y) * tw);
    }
  }

  void rows_turned(int y0, int y1, uint8_t* out) const {
    const auto [c0, c1] = span(second, y0, y1);  // C columns needed
    const int m = c1 - c0, n = 3 * m;
    const size_t tw = size_t(out_w) * 3;
    // R's x pass along C's y, output column by output column, over a ring of C rows; the
    // windows move forward through C when the columns are visited in this order.
    const bool backwards = out_w > 1 && first.first[0] > first.first[out_w - 1];
    int cap = 1;
    for (int c : first.count) cap = std::max(cap, c);
    std::vector<uint8_t> ring(size_t(cap) * n);
    // The intermediate image transposed: row c (C column c0 + c) holds R's x for its three
    // channels (planar), so R's y pass below is across rows too, the contiguous kind. Lines
    // are transposed kBlock at a time: a byte store per line and column, each to a different
    // row of tmp, made the transposition cost as much as the filtering.
    constexpr int kBlock = 16;
    std::vector<uint8_t> block(size_t(kBlock) * n);
    std::vector<uint8_t> tmp(size_t(m) * tw);
    std::vector<int32_t> acc(std::max(size_t(n), tw));
    std::vector<const uint8_t*> src(std::max(cap, second.ksize));
    Scratch t = conv->scratch();
    int next = 0;  // next C row to convert
    for (int s0 = 0; s0 < out_w; s0 += kBlock) {
      const int s1 = std::min(s0 + kBlock, out_w);
      const int x_low = backwards ? out_w - s1 : s0;  // the block's output columns from x_low
      for (int step = s0; step < s1; ++step) {
        const int x = backwards ? out_w - 1 - step : step;
        const int a = first.first[x], b = a + first.count[x];
        for (int r = std::max(next, a); r < b; ++r)
          conv->row(r, c0, c1, t, &ring[size_t(r % cap) * n]);
        next = std::max(next, b);
        for (int j = 0; j < first.count[x]; ++j) src[j] = &ring[size_t((a + j) % cap) * n];
        filter_across(src.data(), &first.k[size_t(x) * first.ksize], first.count[x], n,
                      acc.data(), &block[size_t(x - x_low) * n]);
      }
      for (int ch = 0; ch < 3; ++ch) {
        for (int c = 0; c < m; ++c) {
          const uint8_t* in = &block[size_t(ch) * m + c];
          uint8_t* o = &tmp[size_t(c) * tw + size_t(ch) * out_w + x_low];
          for (int i = 0; i < s1 - s0; ++i) o[i] = in[size_t(i) * n];
        }
      }
    }
    // R's y pass along C's x.
    for (int y = y0; y < y1; ++y) {
      for (int j = 0; j < second.count[y]; ++j) src[j] = &tmp[size_t(second.first[y] + j - c0) * tw];
      filter_across(src.data(), &second.k[size_t(y) * second.ksize], second.count[y],
                    static_cast<int>(tw), acc.data(), out + size_t(y) * tw);
    }
  }
};

Resize make_resize(const Converter& conv, int rotation, int out_w, int out_h,
                   const std::string& interpolation) {
  const Plan& p = conv.source.plan;
  const bool turned = rotation == 90 || rotation == 270;
  const int r_w = turned ? p.rows : p.cols, r_h = turned ? p.cols : p.rows;
  Coefficients h = precompute(r_w, out_w, interpolation);
  Coefficients v = precompute(r_h, out_h, interpolation);
  // R[i][j] = C[i][j] (0), C[rows-1-i][cols-1-j] (180), C[rows-1-j][i] (90), C[j][cols-1-i] (270).
  if (rotation == 180 || rotation == 90) h = mirrored(h, r_w);
  if (rotation == 180 || rotation == 270) v = mirrored(v, r_h);
  return {&conv, turned, std::move(h), std::move(v), out_w, out_h};
}

}  // namespace

// -- makers ---------------------------------------------------------------------------------
Frame Frame::yuv420(int width, int height, Plane y, Plane u, Plane v, ColorMatrix matrix,
                    ColorRange range) {
  return {FrameFormat::YUV420, width, height, {y, u, v}, matrix, range};
}

namespace {
Frame semi_planar(const uint8_t* data, int width, int height, size_t row_stride,
                  size_t chroma_row_stride, size_t chroma_offset, size_t size, bool vu,
                  ColorMatrix matrix, ColorRange range) {
  row_stride = row_stride ? row_stride : size_t(std::max(width, 0));
  chroma_row_stride = chroma_row_stride ? chroma_row_stride : row_stride;
  chroma_offset = chroma_offset ? chroma_offset : row_stride * size_t(std::max(height, 0));
  auto from = [&](size_t offset) {
    return Plane{data + offset, 0, 2, size && size > offset ? size - offset : (size ? 1 : 0)};
  };
  Plane first = from(chroma_offset), second = from(chroma_offset + 1);
  first.row_stride = second.row_stride = chroma_row_stride;
  const Plane y{data, row_stride, 1, size};
  return Frame::yuv420(width, height, y, vu ? second : first, vu ? first : second, matrix, range);
}

Frame packed(FrameFormat format, const uint8_t* data, int width, int height, size_t row_stride,
             size_t size) {
  Frame f;
  f.format = format;
  f.width = width;
  f.height = height;
  f.planes[0] = {data, row_stride ? row_stride : 4 * size_t(std::max(width, 0)), 4, size};
  return f;
}
}  // namespace

Frame Frame::nv21(const uint8_t* data, int width, int height, size_t row_stride,
                  size_t chroma_row_stride, size_t chroma_offset, size_t size, ColorMatrix matrix,
                  ColorRange range) {
  return semi_planar(data, width, height, row_stride, chroma_row_stride, chroma_offset, size,
                     true, matrix, range);
}

Frame Frame::nv12(const uint8_t* data, int width, int height, size_t row_stride,
                  size_t chroma_row_stride, size_t chroma_offset, size_t size, ColorMatrix matrix,
                  ColorRange range) {
  return semi_planar(data, width, height, row_stride, chroma_row_stride, chroma_offset, size,
                     false, matrix, range);
}

Frame Frame::i420(const uint8_t* y, const uint8_t* u, const uint8_t* v, int width, int height,
                  size_t row_stride, size_t chroma_row_stride, ColorMatrix matrix,
                  ColorRange range) {
  row_stride = row_stride ? row_stride : size_t(std::max(width, 0));
  chroma_row_stride = chroma_row_stride ? chroma_row_stride : size_t(std::max(width + 1, 0) / 2);
  return yuv420(width, height, {y, row_stride, 1, 0}, {u, chroma_row_stride, 1, 0},
                {v, chroma_row_stride, 1, 0}, matrix, range);
}

Frame Frame::rgba(const uint8_t* data, int width, int height, size_t row_stride, size_t size) {
  return packed(FrameFormat::RGBA, data, width, height, row_stride, size);
}

Frame Frame::bgra(const uint8_t* data, int width, int height, size_t row_stride, size_t size) {
  return packed(FrameFormat::BGRA, data, width, height, row_stride, size);
}

// -- the two entry points -------------------------------------------------------------------
Image frame_to_rgb8(const Frame& frame, int rotation, const std::optional<Crop>& crop,
                    const std::optional<InputSize>& reduce_for_input) {
  const Plan plan = make_plan(frame, rotation, crop, reduce_for_input);
  const Converter conv(frame, plan);
  const bool turned = rotation == 90 || rotation == 270;
  Image image;
  image.width = turned ? plan.rows : plan.cols;
  image.height = turned ? plan.cols : plan.rows;
  image.rgb.resize(size_t(plan.rows) * plan.cols * 3);
  Scratch t = conv.scratch();
  std::vector<uint8_t> line(size_t(plan.cols) * 3);
  const size_t w = image.width;
  for (int r = 0; r < plan.rows; ++r) {
    conv.row(r, 0, plan.cols, t, line.data());
    for (int c = 0; c < plan.cols; ++c) {  // where C(r, c) lands in R
      size_t i = r, j = c;
      if (rotation == 180) i = plan.rows - 1 - r, j = plan.cols - 1 - c;
      if (rotation == 90) i = c, j = plan.rows - 1 - r;
      if (rotation == 270) i = plan.cols - 1 - c, j = r;
      for (int ch = 0; ch < 3; ++ch) image.rgb[(i * w + j) * 3 + ch] = line[size_t(ch) * plan.cols + c];
    }
  }
  return image;
}

namespace {
// The fused path: part(resize, y0, y1) for slices of the output rows, on `threads` threads.
template <typename Part>
void fused(const PreprocessSpec& spec, const Frame& frame, int rotation,
           const std::optional<Crop>& crop, int threads, const Part& part) {
  std::optional<InputSize> reduce;  // the draft rule of photos, for frames
  if (spec.jpeg_draft) reduce = InputSize{spec.height, spec.width};
  const Plan plan = make_plan(frame, rotation, crop, reduce);
  const Converter conv(frame, plan);
  const Resize resize = make_resize(conv, rotation, spec.width, spec.height, spec.interpolation);
  split_rows_on_runtime_pool(spec.height, threads, [&](int y0, int y1) { part(resize, y0, y1); });
}


// cv2_bicubic (float32, 4 taps, no antialiasing) is not a fixed-point filter for the fused
// loops, and it reads only the 4 source rows and columns next to each output: those R pixels
// are converted into a compact image (on `threads` threads, by C rows), which is then resized
// with the taps renumbered into it. The same pixels and the same arithmetic as converting the
// whole frame and resizing it, which is what the numpy reference does.
// out[s] = sum_k float(p[k][s]) * w[k] (cubic_sum's order) for s < n: the first cubic pass of
// a turned frame, along C columns, vectorisable.
AGIQA_MULTIVERSION void cubic_across(const uint8_t* const* p, const float* w, int n,
                                     float* __restrict out) {
  const uint8_t *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  for (int s = 0; s < n; ++s) {
    float total = float(p0[s]) * w0;
    total = total + float(p1[s]) * w1;
    total = total + float(p2[s]) * w2;
    out[s] = total + float(p3[s]) * w3;
  }
}

// out[o] = sum_k float(in[4 o + k]) * w[k][o] (cubic_sum's order) for o < n: a pass along a
// line that holds each output's 4 taps side by side (a stride the compiler vectorises, where
// an index per tap made it load sample by sample). Reversed (a rotation that reverses the
// line), output o's taps are in[4 (n - 1 - o) + 3 - k], so the line still runs forward in C.
// Out = float: the first pass along a C row (unturned); Out = uint8_t, rounded: the second pass
// along one line of the first (turned).
template <typename In, typename Out, bool kReversed>
AGIQA_MULTIVERSION void cubic_along(const In* __restrict in, const float* const* w, int n,
                                    Out* __restrict out) {
  const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  for (int o = 0; o < n; ++o) {
    const In* p = kReversed ? in + 4 * size_t(n - 1 - o) : in + 4 * size_t(o);
    const int a = kReversed ? 3 : 0, d = kReversed ? -1 : 1;
    float total = float(p[a]) * w0[o];
    total = total + float(p[a + d]) * w1[o];
    total = total + float(p[a + 2 * d]) * w2[o];
    total = total + float(p[a + 3 * d]) * w3[o];
    if constexpr (std::is_same_v<Out, uint8_t>) out[o] = cubic_round8(total);
    else out[o] = total;
  }
}

template <typename In, typename Out>
void cubic_along(bool reversed, const In* in, const float* const* w, int n, Out* out) {
  if (reversed) cubic_along<In, Out, true>(in, w, n, out);
  else cubic_along<In, Out, false>(in, w, n, out);
}

// out[x * step] = cubic_round8(sum_k src[k][x] * w[k]) for x < n: the second cubic pass across
// four lines of the first (unturned).
AGIQA_MULTIVERSION void cubic_down(const float* const* src, const float* w, int n, size_t step,
                                   uint8_t* __restrict out) {
  const float *s0 = src[0], *s1 = src[1], *s2 = src[2], *s3 = src[3];
  const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
  for (size_t x = 0; x < size_t(n); ++x) {
    float total = s0[x] * w0;
    total = total + s1[x] * w1;
    total = total + s2[x] * w2;
    out[x * step] = cubic_round8(total + s3[x] * w3);
  }
}

// cv2_bicubic of the rotated, cropped frame R, as cubic_resize would give it from R itself
// (its x taps first, then its y taps, in the same float32 order), without making R: only the
// C pixels the taps read are converted, and each pass runs along whichever C axis carries it.
//
// The outputs are sliced along the axis whose taps index C rows (R's x when turned, R's y
// otherwise), one slice per thread (one fork per frame, no barrier). An output's taps read 4
// consecutive picked rows and the rows grow with the output, so a slice picks its rows in order
// into a ring of 4 and runs each pass as soon as its rows are there: every buffer is a few KiB
// (whole intermediate images, 2.4 MB each for a 1080p frame, went through memory and cost more
// than the arithmetic). Neighbouring slices share up to 3 rows; each picks them. Along C's x,
// each output of the pass along the picked rows gets its own 4 picked columns, in C order (a
// downscale's taps do not overlap, so nothing is picked twice there).
template <typename Sink>
void cubic_frame(const PreprocessSpec& spec, const Frame& frame, int rotation,
                 const std::optional<Crop>& crop, int threads, const Sink& sink) {
  std::optional<InputSize> reduce;
  if (spec.jpeg_draft) reduce = InputSize{spec.height, spec.width};
  const Plan plan = make_plan(frame, rotation, crop, reduce);
  const Converter conv(frame, plan);
  const bool turned = rotation == 90 || rotation == 270;
  const int r_w = turned ? plan.rows : plan.cols, r_h = turned ? plan.cols : plan.rows;
  CubicTaps xt = cubic_taps(r_w, spec.width), yt = cubic_taps(r_h, spec.height);
  // R(i, j) = C(i, j) (0), C(rows-1-i, cols-1-j) (180), C(rows-1-j, i) (90), C(j, cols-1-i) (270).
  const bool flip_row = rotation == 180 || rotation == 90, flip_col = rotation == 180 || rotation == 270;
  const int W = spec.width, H = spec.height;
  // The picked C rows: the R indices the row taps read, numbered compactly in increasing order.
  CubicTaps& row_taps = turned ? xt : yt;
  std::vector<int> slot(turned ? r_w : r_h, -1), by_c_row;
  for (int i : row_taps.index) slot[i] = 0;
  for (size_t i = 0; i < slot.size(); ++i)
    if (slot[i] == 0) slot[i] = static_cast<int>(by_c_row.size()), by_c_row.push_back(int(i));
  for (int& i : row_taps.index) i = slot[i];
  // The picked C columns: output o's 4 taps at 4 o + k, or at 4 (n - 1 - o) + 3 - k reversed.
  const CubicTaps& col_taps = turned ? yt : xt;
  const int n_along = turned ? H : W, nb = 4 * n_along;
  std::vector<int> c_cols(nb);
  std::vector<float> col_weight(nb);  // by tap: [k * n_along + o]
  for (int o = 0; o < n_along; ++o)
    for (int k = 0; k < 4; ++k) {
      const int i = col_taps.index[size_t(o) * 4 + k];
      if (flip_col) c_cols[4 * (n_along - 1 - o) + 3 - k] = plan.cols - 1 - i;
      else c_cols[4 * o + k] = i;
      col_weight[size_t(k) * n_along + o] = col_taps.weight[size_t(o) * 4 + k];
    }
  const float* const col_w[4] = {&col_weight[0], &col_weight[size_t(n_along)],
                                 &col_weight[2 * size_t(n_along)], &col_weight[3 * size_t(n_along)]};
  const int outs = turned ? W : H;
  const int parts = std::max(1, std::min(threads, outs));
  split_rows_on_runtime_pool(outs, parts, [&](int o0, int o1) {
    if (o0 >= o1) return;
    RowPicker picker(conv, c_cols);
    constexpr int kRing = 4;
    std::vector<uint8_t> picked(size_t(turned ? kRing : 1) * 3 * nb);
    // Unturned: the x pass of each ring row; turned: one line of the x pass, then its y pass.
    std::vector<float> line(turned ? size_t(nb) : size_t(kRing) * 3 * W);
    std::vector<uint8_t> out(W);  // unturned: one output row of one channel
    // Turned: output columns gathered kTile at a time (each channel's H values per column), so
    // the sink writes whole rows of kTile samples instead of one sample per row and column.
    constexpr int kTile = 16;
    std::vector<uint8_t> tile(turned ? size_t(3) * kTile * H : 0);
    int next = row_taps.index[size_t(o0) * 4];  // the next slot to pick (an output's first tap is its lowest)
    for (int o = o0; o < o1; ++o) {
      const int* taps = &row_taps.index[size_t(o) * 4];
      for (; next <= taps[3]; ++next) {
        const int c_row = flip_row ? plan.rows - 1 - by_c_row[next] : by_c_row[next];
        if (turned) {
          picker.row(c_row, &picked[size_t(next % kRing) * 3 * nb]);
          continue;
        }
        picker.row(c_row, picked.data());
        for (int ch = 0; ch < 3; ++ch)
          cubic_along(flip_col, &picked[size_t(ch) * nb], col_w, W, &line[(size_t(next % kRing) * 3 + ch) * W]);
      }
      const int in_tile = (o - o0) % kTile;
      for (int ch = 0; ch < 3; ++ch) {
        if (turned) {  // output column o: the x pass across 4 picked rows, then the y pass along it
          const uint8_t* p[4];
          for (int k = 0; k < 4; ++k) p[k] = &picked[(size_t(taps[k] % kRing) * 3 + ch) * nb];
          cubic_across(p, &xt.weight[size_t(o) * 4], nb, line.data());
          cubic_along(flip_col, line.data(), col_w, H, &tile[(size_t(ch) * kTile + in_tile) * H]);
          continue;
        }
        const float* src[4];  // output row o: the y pass across 4 lines of the x pass
        for (int k = 0; k < 4; ++k) src[k] = &line[(size_t(taps[k] % kRing) * 3 + ch) * W];
        cubic_down(src, &yt.weight[size_t(o) * 4], W, 1, out.data());
        sink.row(o, ch, out.data());
      }
      if (turned && (in_tile == kTile - 1 || o == o1 - 1)) sink.columns(o - in_tile, in_tile + 1, kTile, tile.data());
    }
  });
}

// Where cubic_frame's output lines go: the RGB8 image (preprocess_frame_rgb8) ...
// columns(x0, n, tile_w, v): output columns x0 .. x0 + n of every channel, where
// v[(ch * tile_w + i) * height + y] is column x0 + i's value at row y; row(y, ch, v): v[x] for
// x < width.
struct Rgb8Sink {
  Image* image;
  void columns(int x0, int n, int tile_w, const uint8_t* v) const {
    const size_t h = size_t(image->height);
    for (size_t y = 0; y < h; ++y) {
      uint8_t* out = &image->rgb[(y * image->width + size_t(x0)) * 3];
      for (int i = 0; i < n; ++i)
        for (int ch = 0; ch < 3; ++ch) out[size_t(i) * 3 + ch] = v[(size_t(ch) * tile_w + i) * h + y];
    }
  }
  void row(int y, int ch, const uint8_t* v) const {  // v[x] for x < width
    uint8_t* out = &image->rgb[size_t(y) * image->width * 3 + ch];
    for (size_t x = 0; x < size_t(image->width); ++x) out[x * 3] = v[x];
  }
};

// ... or the model input, normalised on the way (preprocess_frame).
struct InputSink {
  const NormalizeTable* table;
  float* chw;
  int width, height;
  void columns(int x0, int n, int tile_w, const uint8_t* v) const {
    for (int ch = 0; ch < 3; ++ch) {
      const float* t = (*table)[ch].data();
      const uint8_t* in = v + size_t(ch) * tile_w * height;
      for (size_t y = 0; y < size_t(height); ++y) {
        float* out = chw + (size_t(ch) * height + y) * width + x0;
        for (int i = 0; i < n; ++i) out[i] = t[in[size_t(i) * height + y]];
      }
    }
  }
  void row(int y, int ch, const uint8_t* v) const {
    const float* t = (*table)[ch].data();
    float* out = chw + (size_t(ch) * height + y) * width;
    for (size_t x = 0; x < size_t(width); ++x) out[x] = t[v[x]];
  }
};
}  // namespace

Image preprocess_frame_rgb8(const PreprocessSpec& spec, const Frame& frame, int rotation,
                            const std::optional<Crop>& crop, int threads) {
  if (spec.interpolation == "cv2_bicubic") {
    Image image{spec.width, spec.height, std::vector<uint8_t>(size_t(spec.width) * spec.height * 3)};
    cubic_frame(spec, frame, rotation, crop, threads, Rgb8Sink{&image});
    return image;
  }
  const size_t w = spec.width;
  std::vector<uint8_t> planar(w * spec.height * 3);
  Image image{spec.width, spec.height, std::vector<uint8_t>(planar.size())};
  fused(spec, frame, rotation, crop, threads, [&](const Resize& resize, int y0, int y1) {
    resize.rows(y0, y1, planar.data());
    for (size_t y = y0; y < size_t(y1); ++y)  // interleave
      for (size_t x = 0; x < w; ++x)
        for (size_t ch = 0; ch < 3; ++ch)
          image.rgb[(y * w + x) * 3 + ch] = planar[(y * 3 + ch) * w + x];
  });
  return image;
}

std::vector<float> preprocess_frame(const PreprocessSpec& spec, const Frame& frame, int rotation,
                                    const std::optional<Crop>& crop, int threads) {
  if (spec.interpolation == "cv2_bicubic") {
    std::vector<float> chw(size_t(spec.width) * spec.height * 3);
    const NormalizeTable table = normalize_table(spec);
    cubic_frame(spec, frame, rotation, crop, threads, InputSink{&table, chw.data(), spec.width, spec.height});
    return chw;
  }
  std::vector<uint8_t> rgb(size_t(spec.width) * spec.height * 3);
  std::vector<float> chw(rgb.size());
  fused(spec, frame, rotation, crop, threads, [&](const Resize& resize, int y0, int y1) {
    resize.rows(y0, y1, rgb.data());
    normalize_rows(spec, rgb.data(), size_t(spec.width) * 3, RowLayout::Planar, y0, y1, chw.data());
  });
  return chw;
}

}  // namespace agiqa
