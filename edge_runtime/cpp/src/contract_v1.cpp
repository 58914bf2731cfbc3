// Version-1 model.json only: its contract_sha256 was defined as Python's
// json.dumps(fields, sort_keys=True, separators=(",", ":")), so checking it means writing that
// exact text again. Version 2 hashes the stored contract text and needs none of this; delete
// this file when version-1 contracts are no longer read.
#include "contract_v1.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "agiqa/scorer.h"

namespace agiqa {
namespace {

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

}  // namespace

// edge_runtime.contract.contract_digest_v1: sha256 of the canonical JSON of every field but the
// program's hash and size and the digest itself.
std::string contract_digest_v1(const nlohmann::json& data) {
  nlohmann::json covered = data;
  for (const char* key : {"program_sha256", "program_bytes", "contract_sha256"}) covered.erase(key);
  std::string canonical;
  python_json(covered, canonical);
  return sha256_hex(reinterpret_cast<const uint8_t*>(canonical.data()), canonical.size());
}

}  // namespace agiqa
