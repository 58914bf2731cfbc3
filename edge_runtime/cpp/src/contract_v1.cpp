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

}  // namespace

// Declared in contract_v1.h. One escaper for the v1 digest (UTF-8 already validated by
// nlohmann::json) and the CLI's JSON-lines results (paths: any bytes).
void python_json_string(const std::string& s, std::string& out) {
  out += '"';
  char buf[16];
  auto u = [&](unsigned v) { std::snprintf(buf, sizeof buf, "\\u%04x", v); out += buf; };
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || c == 0x7F) u(c); else out += static_cast<char>(c);  // outside ' '..'~'
      }
      ++i;
      continue;
    }
    int len = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    if (c >= 0xF5) len = 0;
    unsigned cp = len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    bool valid = len > 0 && i + len <= n;
    for (int k = 1; valid && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) valid = false;
      else cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8 either.
    if (valid && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) ||
                  (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
      valid = false;
    if (!valid) {
      u(0xDC00 + c);
      ++i;
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      u(0xD800 + (cp >> 10));
      u(0xDC00 + (cp & 0x3FF));
    } else {
      u(cp);
    }
    i += len;
  }
  out += '"';
}

namespace {

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
