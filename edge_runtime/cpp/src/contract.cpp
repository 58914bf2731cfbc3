// model.json reader (edge_runtime/contract.py is the reference): the envelope, its digest, the
// contract's fields, and the SHA-256 of files.
//
// Version 2: model.json = {"format", "format_version": 2, "contract": "<text>",
// "contract_sha256", "program_sha256", "program_bytes"}. contract_sha256 is the SHA-256 of the
// text's UTF-8 bytes as stored; the fields are parsed from that text, and every field is
// required (the defaults live only in the Python writer). Version 1 (fields at top level, digest
// over Python's canonical JSON) is checked by contract_v1.cpp.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agiqa/scorer.h"
#include "contract_v1.h"

namespace agiqa {
namespace {

constexpr const char* kContractFormat = "agiqa-edge.executorch-program";
constexpr int kFormatVersion = 2;  // read: 1..kFormatVersion
// The keys of a version-2 model.json (edge_runtime.contract._ENVELOPE).
constexpr const char* kEnvelope[] = {"contract", "contract_sha256", "format", "format_version",
                                     "program_bytes", "program_sha256"};
constexpr const char* kEdited =
    ": edited after export (%s no longer match%s its contract_sha256); restore the exported "
    "file or re-export it";

std::string with_suffix(const std::string& path, const std::string& suffix) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  return (has_ext ? path.substr(0, dot) : path) + suffix;
}

// FIPS 180-4 SHA-256, enough to check a program's bytes against model.json.
class Sha256 {
 public:
  void update(const uint8_t* data, size_t n) {
    bits_ += static_cast<uint64_t>(n) * 8;
    while (n > 0) {
      const size_t take = std::min(n, sizeof(block_) - used_);
      std::memcpy(block_ + used_, data, take);
      used_ += take, data += take, n -= take;
      if (used_ == sizeof(block_)) compress(), used_ = 0;
    }
  }
  std::string hex() {
    const uint64_t bits = bits_;
    const uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (used_ != 56) update(&zero, 1);
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(length, 8);
    std::ostringstream out;
    for (uint32_t v : h_) {
      char buf[9];
      std::snprintf(buf, sizeof(buf), "%08x", v);
      out << buf;
    }
    return out.str();
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(block_[4 * i]) << 24) | (uint32_t(block_[4 * i + 1]) << 16) |
             (uint32_t(block_[4 * i + 2]) << 8) | uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6],
             h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                          k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g,
        h_[7] += h;
  }
  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t block_[64] = {};
  size_t used_ = 0;
  uint64_t bits_ = 0;
};

std::string edited(const std::string& path, bool v2) {
  char buf[200];
  std::snprintf(buf, sizeof(buf), kEdited, v2 ? "its contract text" : "its fields", v2 ? "es" : "");
  return path + buf;
}

template <typename T>
T field(const nlohmann::json& data, const char* key, const std::string& path) {
  if (!data.is_object() || !data.contains(key))
    throw Error(path + ": missing field '" + key + "'; re-export it with agiqa-export");
  try {
    return data.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(path + ": field '" + key + "' has the wrong type; re-export it");
  }
}

// The contract's fields (version 1: model.json itself; version 2: its contract text), every one
// required: each exported model.json of either version has them all.
Contract parse_fields(const nlohmann::json& data, const std::string& path) {
  Contract c;
  c.input_shape = field<std::vector<int64_t>>(data, "input_shape", path);
  c.output_names = field<std::vector<std::string>>(data, "output_names", path);
  c.score_output = field<std::string>(data, "score_output", path);
  c.expert_names = field<std::vector<std::string>>(data, "expert_names", path);
  c.lower_better = field<bool>(data, "lower_better", path);
  c.quantization = field<std::string>(field<nlohmann::json>(data, "quantization", path), "mode", path);

  const auto pre = field<nlohmann::json>(data, "preprocess", path);
  const auto size = field<std::vector<int>>(pre, "input_size", path);
  const auto mean = field<std::vector<float>>(pre, "mean", path);
  const auto std_ = field<std::vector<float>>(pre, "std", path);
  if (size.size() != 2 || mean.size() != 3 || std_.size() != 3)
    throw Error(path + ": preprocess needs input_size [H, W], mean [3] and std [3]; re-export it");
  const auto resize = field<std::string>(pre, "resize", path);
  if (resize != "squash")
    throw Error(path + ": unknown resize rule '" + resize +
                "'; only 'squash' is defined; update agiqa-edge");
  c.preprocess.height = size[0];
  c.preprocess.width = size[1];
  for (int i = 0; i < 3; ++i) c.preprocess.mean[i] = mean[i], c.preprocess.std[i] = std_[i];
  c.preprocess.interpolation = field<std::string>(pre, "interpolation", path);
  c.preprocess.jpeg_draft = field<bool>(pre, "jpeg_draft", path);

  if (c.input_shape.size() != 4 || c.input_shape[1] != 3 ||
      c.input_shape[2] != c.preprocess.height || c.input_shape[3] != c.preprocess.width)
    throw Error(path + ": input_shape must be (1, 3, H, W) with (H, W) = preprocess.input_size; "
                "re-export it");
  bool has_score = false;
  for (const auto& name : c.output_names) has_score |= name == c.score_output;
  if (!has_score)
    throw Error(path + ": score_output '" + c.score_output + "' is not one of the outputs");
  return c;
}

std::string digest_of(const nlohmann::json& data, const std::string& path) {
  if (!data.contains("contract_sha256") || !data["contract_sha256"].is_string())
    throw Error(path + ": has no contract_sha256, so edits to it cannot be detected (written by "
                "an older agiqa-export); re-export it");
  return data["contract_sha256"].get<std::string>();
}

// Version 1: the fields at top level, the digest recomputed as Python wrote it.
Contract read_v1(const nlohmann::json& data, const std::string& path) {
  Contract c = parse_fields(data, path);
  c.program_sha256 = field<std::string>(data, "program_sha256", path);
  c.contract_sha256 = digest_of(data, path);
  if (contract_digest_v1(data) != c.contract_sha256) throw Error(edited(path, false));
  return c;
}

// Version 2: hash the stored text as bytes, then read the fields from it.
Contract read_v2(const nlohmann::json& data, const std::string& path) {
  for (auto it = data.begin(); it != data.end(); ++it)
    if (std::none_of(std::begin(kEnvelope), std::end(kEnvelope),
                     [&](const char* key) { return it.key() == key; }))
      throw Error(path + ": unexpected top-level key '" + it.key() + "': a version-2 model.json "
                  "holds only its envelope (the fields are inside 'contract'); re-export it");
  const std::string digest = digest_of(data, path);
  if (!data.contains("contract") || !data["contract"].is_string())
    throw Error(path + ": has no contract text (key 'contract'); re-export it");
  const auto& text = data["contract"].get_ref<const std::string&>();
  if (sha256_hex(reinterpret_cast<const uint8_t*>(text.data()), text.size()) != digest)
    throw Error(edited(path, true));
  nlohmann::json fields;
  try {
    fields = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& exc) {
    throw Error(path + ": its contract text is malformed JSON (" + std::string(exc.what()) +
                "); re-export it");
  }
  if (!fields.is_object()) throw Error(path + ": its contract text is not a JSON object; re-export it");
  for (const char* key : {"format", "format_version"})
    if (!fields.contains(key) || fields[key] != data[key])
      throw Error(path + ": " + key + " disagrees with the contract text's; re-export it");
  Contract c = parse_fields(fields, path);
  c.program_sha256 = field<std::string>(data, "program_sha256", path);
  c.contract_sha256 = digest;
  return c;
}

}  // namespace

std::string contract_path(const std::string& program_path) {
  return with_suffix(program_path, ".json");
}

std::string golden_path(const std::string& program_path) {
  return with_suffix(program_path, ".golden.safetensors");
}

std::string sha256_hex(const uint8_t* data, size_t size) {
  Sha256 sha;
  sha.update(data, size);
  return sha.hex();
}

Contract Contract::read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path + ": missing. Every .pte needs the model.json that agiqa-export writes "
                "beside it (same stem); re-export it");
  nlohmann::json data;
  try {
    data = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& exc) {
    throw Error(path + ": malformed JSON (" + std::string(exc.what()) + "); re-export it");
  }
  if (!data.is_object() || !data.contains("format") || data["format"] != kContractFormat)
    throw Error(path + ": not an agiqa-edge contract (format is not '" + kContractFormat +
                "'); re-export it");
  const int version = data.contains("format_version") && data["format_version"].is_number_integer()
                          ? data["format_version"].get<int>()
                          : 0;
  if (version < 1 || version > kFormatVersion)
    throw Error(path + ": format_version " +
                (data.contains("format_version") ? data["format_version"].dump() : "missing") +
                " is not supported by this runtime (reads 1.." + std::to_string(kFormatVersion) +
                "); update agiqa-edge or re-export");
  try {
    return version == 1 ? read_v1(data, path) : read_v2(data, path);
  } catch (const nlohmann::json::exception& exc) {  // a value of the wrong type
    throw Error(path + ": invalid contract (" + std::string(exc.what()) + "); re-export it");
  }
}

}  // namespace agiqa
