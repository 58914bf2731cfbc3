// libjpeg-turbo / libpng decoding that matches edge_runtime/images.py (Pillow) pixel for pixel
// on the cases the tests cover; every failure becomes an ImageLoadError with a short reason.
#include "agiqa/decode.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>

extern "C" {
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
}

namespace agiqa {
namespace {

// ---- EXIF orientation --------------------------------------------------------------------
// TIFF structure inside "Exif\0\0" (JPEG APP1) or a PNG eXIf chunk: byte order, IFD0 offset,
// then 12-byte entries; tag 0x0112 (SHORT) is the orientation, 1..8.
int exif_orientation(const uint8_t* p, size_t n) {
  if (n >= 6 && std::memcmp(p, "Exif\0\0", 6) == 0) p += 6, n -= 6;
  if (n < 8) return 1;
  const bool little = p[0] == 'I' && p[1] == 'I';
  if (!little && !(p[0] == 'M' && p[1] == 'M')) return 1;
  auto u16 = [&](size_t at) -> uint32_t {
    return little ? p[at] | (p[at + 1] << 8) : (p[at] << 8) | p[at + 1];
  };
  auto u32 = [&](size_t at) -> uint32_t {
    return little ? u16(at) | (u16(at + 2) << 16) : (u16(at) << 16) | u16(at + 2);
  };
  const size_t ifd = u32(4);
  if (ifd + 2 > n) return 1;
  const uint32_t entries = u16(ifd);
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t e = ifd + 2 + 12 * i;
    if (e + 12 > n) break;
    if (u16(e) == 0x0112 && u16(e + 2) == 3) {
      const uint32_t v = u16(e + 8);
      return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
    }
  }
  return 1;
}

// Pillow's ImageOps.exif_transpose for orientations 2..8.
Image apply_orientation(Image in, int orientation) {
  if (orientation <= 1) return in;
  const int W = in.width, H = in.height;
  const bool swap = orientation >= 5;
  Image out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.rgb.resize(in.rgb.size());
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = W - 1 - x; break;                       // mirror
        case 3: sx = W - 1 - x, sy = H - 1 - y; break;       // rotate 180
        case 4: sy = H - 1 - y; break;                       // flip
        case 5: sx = y, sy = x; break;                       // transpose
        case 6: sx = y, sy = H - 1 - x; break;               // rotate 90 clockwise
        case 7: sx = W - 1 - y, sy = H - 1 - x; break;       // transverse
        case 8: sx = W - 1 - y, sy = x; break;               // rotate 90 counter-clockwise
      }
      std::memcpy(&out.rgb[(static_cast<size_t>(y) * out.width + x) * 3],
                  &in.rgb[(static_cast<size_t>(sy) * W + sx) * 3], 3);
    }
  }
  return out;
}

void check_size(const std::string& path, uint64_t w, uint64_t h) {
  if (w * h > kMaxImagePixels)
    throw ImageLoadError(path, "image too large (" + std::to_string(w) + "x" + std::to_string(h) +
                                   " pixels > " + std::to_string(kMaxImagePixels) +
                                   "); downscale it before scoring");
}

// ---- JPEG --------------------------------------------------------------------------------
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_warn(j_common_ptr cinfo, int level) {
  // Pillow refuses a truncated JPEG ("image file is truncated"); libjpeg would pad it gray.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

Image decode_jpeg(const std::string& path, const std::vector<uint8_t>& data, int min_side) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.emit_message = jpeg_warn;
  Image image;
  int orientation = 1;
  std::string failure;
  if (setjmp(err.jump)) {
    failure = err.message;
  } else {
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data.data(), static_cast<unsigned long>(data.size()));
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    for (auto* m = cinfo.marker_list; m; m = m->next)
      if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && !std::memcmp(m->data, "Exif", 4))
        orientation = exif_orientation(m->data, m->data_length);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
      failure = "CMYK JPEG (not supported by the C++ decoder; convert it to RGB)";
    } else {
      check_size(path, cinfo.image_width, cinfo.image_height);
      unsigned denom = 1;
      if (min_side > 0) {
        const unsigned scale = std::min(cinfo.image_width / min_side,
                                        cinfo.image_height / min_side);
        for (unsigned a : {8u, 4u, 2u, 1u})
          if (scale >= a) { denom = a; break; }
      }
      cinfo.scale_num = 1;
      cinfo.scale_denom = denom;
      cinfo.out_color_space = JCS_RGB;
      jpeg_start_decompress(&cinfo);
      image.width = static_cast<int>(cinfo.output_width);
      image.height = static_cast<int>(cinfo.output_height);
      image.rgb.resize(static_cast<size_t>(image.width) * image.height * 3);
      while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = &image.rgb[static_cast<size_t>(cinfo.output_scanline) * image.width * 3];
        jpeg_read_scanlines(&cinfo, &row, 1);
      }
      jpeg_finish_decompress(&cinfo);
    }
  }
  jpeg_destroy_decompress(&cinfo);
  if (!failure.empty()) {
    if (failure.rfind("CMYK", 0) == 0 || failure.rfind("image too large", 0) == 0)
      throw ImageLoadError(path, failure);
    throw ImageLoadError(path, "corrupt or truncated image data (" + failure + ")");
  }
  return apply_orientation(std::move(image), orientation);
}

// ---- PNG ---------------------------------------------------------------------------------
struct PngReader {
  const std::vector<uint8_t>* data;
  size_t at;
};

void png_read_mem(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (r->at + n > r->data->size()) png_error(png, "file is truncated");
  std::memcpy(out, r->data->data() + r->at, n);
  r->at += n;
}

// Pillow's alpha_composite of (r, g, b, a) over opaque white (libImaging/AlphaComposite.c).
uint8_t over_white(uint32_t c, uint32_t a) {
  constexpr uint32_t bits = 7;
  if (a == 0) return 255;
  const uint32_t coef1 = a * 255 * 255 * (1u << bits) / (255 * 255);
  const uint32_t coef2 = 255 * (1u << bits) - coef1;
  const uint32_t t = c * coef1 + 255 * coef2 + (0x80u << bits);
  return static_cast<uint8_t>((((t >> 8) + t) >> 8) >> bits);
}

Image decode_png(const std::string& path, const std::vector<uint8_t>& data) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) throw ImageLoadError(path, "out of memory");
  PngReader reader{&data, 0};
  Image image;
  std::vector<uint8_t> pixels;
  std::vector<png_bytep> rows;
  int orientation = 1;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw ImageLoadError(path, "corrupt or truncated image data (libpng)");
  }
  png_set_read_fn(png, &reader, png_read_mem);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  try {
    check_size(path, w, h);
  } catch (...) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw;
  }
  const int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  const bool gray = !(type & PNG_COLOR_MASK_COLOR) && type != PNG_COLOR_TYPE_PALETTE;
  // Pillow keeps 16-bit grayscale as "I;16" and rescales it (round(v / 257)) unless no value
  // exceeds 255; 16-bit colour keeps the high byte (its "RGB;16B" unpacker).
  const bool gray16 = gray && !(type & PNG_COLOR_MASK_ALPHA) && depth == 16;
  if (type == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);  // Pillow: P -> RGBA
  }
  if (gray && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16 && !gray16) png_set_strip_16(png);
  if (depth == 16 && gray16) png_set_swap(png);  // host order below
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  pixels.resize(row_bytes * h);
  rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = &pixels[y * row_bytes];
  png_read_image(png, rows.data());
  png_read_end(png, info);
#ifdef PNG_eXIf_SUPPORTED
  png_uint_32 exif_len = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &exif_len, &exif) && exif)
    orientation = exif_orientation(exif, exif_len);
#endif
  png_destroy_read_struct(&png, &info, nullptr);

  image.width = static_cast<int>(w);
  image.height = static_cast<int>(h);
  image.rgb.resize(static_cast<size_t>(w) * h * 3);
  uint16_t max16 = 0;
  if (gray16)
    for (size_t i = 0; i < static_cast<size_t>(w) * h; ++i)
      max16 = std::max(max16, reinterpret_cast<const uint16_t*>(pixels.data())[i]);
  for (size_t i = 0; i < static_cast<size_t>(w) * h; ++i) {
    uint8_t* out = &image.rgb[i * 3];
    if (gray16) {
      const uint16_t v = reinterpret_cast<const uint16_t*>(pixels.data())[i];
      const int g = max16 > 255 ? static_cast<int>(v / 257.0 + 0.5) : v;  // numpy rint
      out[0] = out[1] = out[2] = static_cast<uint8_t>(g > 255 ? 255 : g);
      continue;
    }
    const uint8_t* p = &pixels[i * channels];
    const bool alpha = channels == 2 || channels == 4;
    const uint8_t r = p[0], g = channels >= 3 ? p[1] : p[0], b = channels >= 3 ? p[2] : p[0];
    if (!alpha) {
      out[0] = r, out[1] = g, out[2] = b;
    } else {
      const uint8_t a = p[channels - 1];
      out[0] = over_white(r, a), out[1] = over_white(g, a), out[2] = over_white(b, a);
    }
  }
  return apply_orientation(std::move(image), orientation);
}

}  // namespace

Image load_rgb(const std::string& path, int min_side) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ImageLoadError(path, "file not found");
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  if (data.empty()) throw ImageLoadError(path, "empty file (0 bytes)");
  if (data.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
    return decode_jpeg(path, data, min_side);
  if (data.size() >= 8 && !png_sig_cmp(data.data(), 0, 8)) return decode_png(path, data);
  throw ImageLoadError(path, "not an image this decoder reads (JPEG and PNG only)");
}

Image load_for(const PreprocessSpec& spec, const std::string& path) {
  return load_rgb(path, spec.jpeg_draft ? 2 * std::max(spec.height, spec.width) : 0);
}

}  // namespace agiqa
