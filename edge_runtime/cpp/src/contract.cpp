// model.json reader (edge_runtime/contract.py is the reference): its fields, its own digest
// (contract_sha256, recomputed from Python's canonical JSON), and the SHA-256 of files.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agiqa/scorer.h"

namespace agiqa {
namespace {

constexpr const char* kContractFormat = "agiqa-edge.executorch-program";
constexpr int kFormatVersion = 1;

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

// Python's repr(float): the shortest digits that read back to the same double (the correctly
// rounded ones, as glibc's printf gives), in exponent form when the decimal point is more than
// 16 places right or 4 places left of the first digit ("1e-05", "1e+16", "0.0001", "224.0").
std::string python_float_repr(double v) {
  if (v == 0.0) return std::signbit(v) ? "-0.0" : "0.0";
  char buf[40];
  for (int precision = 0; precision < 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*e", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string text = buf, sign;
  if (text[0] == '-') sign = "-", text.erase(0, 1);
  const size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits = text.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  const int point = exponent + 1;  // digits[0:point] are the integer part
  const int n = static_cast<int>(digits.size());
  if (point > 16 || point < -3) {
    char exp[8];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return sign + digits.substr(0, 1) + (n > 1 ? "." + digits.substr(1) : "") + exp;
  }
  if (point <= 0) return sign + "0." + std::string(-point, '0') + digits;
  if (point >= n) return sign + digits + std::string(point - n, '0') + ".0";
  return sign + digits.substr(0, point) + "." + digits.substr(point);
}

// A UTF-8 string as Python's json.dumps writes it (ensure_ascii): \" \\ \n \r \t \b \f, and
// \uXXXX (lowercase hex, surrogate pairs above U+FFFF) for everything outside ' '..'~'.
void python_json_string(const std::string& s, std::string& out) {
  auto escape = [&out](uint32_t unit) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "\\u%04x", unit);
    out += buf;
  };
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<uint8_t>(s[i]);
    uint32_t code = c;
    int extra = 0;
    if (c >= 0xf0) code = c & 0x07, extra = 3;
    else if (c >= 0xe0) code = c & 0x0f, extra = 2;
    else if (c >= 0xc0) code = c & 0x1f, extra = 1;
    for (int k = 1; k <= extra && i + k < s.size(); ++k)
      code = (code << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3f);
    i += 1 + extra;  // nlohmann::json validated the UTF-8 when it parsed
    switch (code) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (code >= 0x20 && code <= 0x7e) {
          out += static_cast<char>(code);
        } else if (code > 0xffff) {
          code -= 0x10000;
          escape(0xd800 | (code >> 10)), escape(0xdc00 | (code & 0x3ff));
        } else {
          escape(code);
        }
    }
  }
  out += '"';
}

// json.dumps(value, sort_keys=True, separators=(",", ":")) of the same JSON value. Object keys
// come sorted by UTF-8 bytes, which is code point order, as Python sorts them. What Python reads
// and nlohmann::json does not (NaN, Infinity, lone surrogates) is refused as malformed, and an
// integer beyond 64 bits (read as a float here) gives another digest: refused as edited.
void python_json(const nlohmann::json& value, std::string& out) {
  switch (value.type()) {
    case nlohmann::json::value_t::object: {
      out += '{';
      bool first = true;
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (!first) out += ',';
        first = false;
        python_json_string(it.key(), out);
        out += ':';
        python_json(it.value(), out);
      }
      out += '}';
      break;
    }
    case nlohmann::json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < value.size(); ++i) {
        if (i) out += ',';
        python_json(value[i], out);
      }
      out += ']';
      break;
    }
    case nlohmann::json::value_t::string:
      python_json_string(value.get_ref<const std::string&>(), out);
      break;
    case nlohmann::json::value_t::boolean:
      out += value.get<bool>() ? "true" : "false";
      break;
    case nlohmann::json::value_t::number_integer:
      out += std::to_string(value.get<int64_t>());
      break;
    case nlohmann::json::value_t::number_unsigned:
      out += std::to_string(value.get<uint64_t>());
      break;
    case nlohmann::json::value_t::number_float:
      out += python_float_repr(value.get<double>());
      break;
    default:
      out += "null";
      break;
  }
}

// edge_runtime.contract.contract_digest: sha256 of the canonical JSON of every field but the
// program's hash and size and the digest itself.
std::string contract_digest(const nlohmann::json& data) {
  nlohmann::json covered = data;
  for (const char* key : {"program_sha256", "program_bytes", "contract_sha256"}) covered.erase(key);
  std::string canonical;
  python_json(covered, canonical);
  return sha256_hex(reinterpret_cast<const uint8_t*>(canonical.data()), canonical.size());
}


template <typename T>
T field(const nlohmann::json& data, const char* key, const std::string& path) {
  if (!data.contains(key))
    throw Error(path + ": missing field '" + key + "'; re-export it with agiqa-export");
  try {
    return data.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(path + ": field '" + key + "' has the wrong type; re-export it");
  }
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

namespace {

Contract parse_contract(const nlohmann::json& data, const std::string& path);

}  // namespace

Contract Contract::read(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw Error(path + ": missing. Every .pte needs the model.json that agiqa-export writes "
                "beside it (same stem); re-export it");
  nlohmann::json data;
  try {
    data = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& exc) {
    throw Error(path + ": malformed JSON (" + std::string(exc.what()) + "); re-export it");
  }
  Contract contract;
  try {
    contract = parse_contract(data, path);
  } catch (const nlohmann::json::exception& exc) {  // a field of the wrong type
    throw Error(path + ": invalid contract (" + std::string(exc.what()) + "); re-export it");
  }
  if (!data.contains("contract_sha256") || !data["contract_sha256"].is_string())
    throw Error(path + ": has no contract_sha256, so edits to it cannot be detected (written by "
                "an older agiqa-export); re-export it");
  contract.contract_sha256 = data["contract_sha256"].get<std::string>();
  if (contract_digest(data) != contract.contract_sha256)
    throw Error(path + ": edited after export (its fields no longer match its contract_sha256); "
                "restore the exported file or re-export it");
  return contract;
}

namespace {

Contract parse_contract(const nlohmann::json& data, const std::string& path) {
  if (!data.is_object() || data.value("format", std::string()) != kContractFormat)
    throw Error(path + ": not an agiqa-edge contract (format is not '" + kContractFormat +
                "'); re-export it");
  const int version = data.value("format_version", 0);
  if (version < 1 || version > kFormatVersion)
    throw Error(path + ": format_version " + std::to_string(version) +
                " is not supported by this runtime (reads 1.." + std::to_string(kFormatVersion) +
                "); update agiqa-edge or re-export");

  Contract c;
  c.program_sha256 = field<std::string>(data, "program_sha256", path);
  c.input_shape = field<std::vector<int64_t>>(data, "input_shape", path);
  c.output_names = data.value("output_names", std::vector<std::string>{"score", "gate_weights"});
  c.score_output = data.value("score_output", std::string("score"));
  if (data.contains("expert_names") && data["expert_names"].is_array())
    c.expert_names = data["expert_names"].get<std::vector<std::string>>();
  c.lower_better = data.value("lower_better", false);
  if (data.contains("quantization") && data["quantization"].is_object())
    c.quantization = data["quantization"].value("mode", std::string("fp32"));

  const auto pre = field<nlohmann::json>(data, "preprocess", path);
  const auto size = field<std::vector<int>>(pre, "input_size", path);
  const auto mean = field<std::vector<float>>(pre, "mean", path);
  const auto std_ = field<std::vector<float>>(pre, "std", path);
  if (size.size() != 2 || mean.size() != 3 || std_.size() != 3)
    throw Error(path + ": preprocess needs input_size [H, W], mean [3] and std [3]; re-export it");
  if (pre.value("resize", std::string("squash")) != "squash")
    throw Error(path + ": unknown resize rule '" + pre.value("resize", std::string()) +
                "'; only 'squash' is defined; update agiqa-edge");
  c.preprocess.height = size[0];
  c.preprocess.width = size[1];
  for (int i = 0; i < 3; ++i) c.preprocess.mean[i] = mean[i], c.preprocess.std[i] = std_[i];
  c.preprocess.interpolation = pre.value("interpolation", std::string("bilinear"));
  c.preprocess.jpeg_draft = pre.value("jpeg_draft", true);

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

}  // namespace
}  // namespace agiqa
