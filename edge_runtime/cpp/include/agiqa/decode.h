// JPEG/PNG files -> RGB8, decoded the way edge_runtime.images.load_rgb decodes them: EXIF
// orientation applied, JPEG DCT "draft" downscale, grayscale -> 3 channels, 16-bit -> 8-bit,
// palette -> colours, alpha composited over white. Built only when libjpeg and libpng are found
// (a phone app decodes with the platform instead and calls Scorer::score_rgb8).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agiqa/scorer.h"

namespace agiqa {

// Pillow's limit (2 x its 89,478,485-pixel warning threshold), as in edge_runtime.images.
constexpr uint64_t kMaxImagePixels = 2ull * 89478485ull;

// Decoders return an agiqa::Image (agiqa/camera.h): height x width x 3 RGB8, tightly packed.

// Thrown for a file that cannot be scored; reason() is short ("empty file (0 bytes)").
class ImageLoadError : public Error {
 public:
  ImageLoadError(const std::string& path, const std::string& reason)
      : Error(path + ": " + reason), reason_(reason) {}
  const std::string& reason() const { return reason_; }

 private:
  std::string reason_;
};

// Decodes `path`. `min_side` > 0 enables the JPEG draft rule: DCT-scale by the largest
// a in {8, 4, 2, 1} with a <= min(W / min_side, H / min_side), min_side = 2 * max(input_size).
Image load_rgb(const std::string& path, int min_side);

// The decode a contract asks for (draft on or off).
Image load_for(const PreprocessSpec& spec, const std::string& path);

}  // namespace agiqa
