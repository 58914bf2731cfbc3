#include "results.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "agiqa/scorer.h"
#include "contract_v1.h"

namespace agiqa {
namespace {

constexpr const char* kCsvHeader = "path,score,skipped\n";

// Python's json.dumps of a string (contract_v1.h: python_json_string).
std::string json_string(const std::string& s) {
  std::string out;
  python_json_string(s, out);
  return out;
}

// Python's csv.writer field (QUOTE_MINIMAL, lineterminator "\n").
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// One line of Python's csv dialect "excel" -> its fields; nullopt when malformed.
std::optional<std::vector<std::string>> csv_fields(const std::string& line) {
  std::vector<std::string> fields(1);
  bool quoted = false, was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c != '"') fields.back() += c;
      else if (i + 1 < line.size() && line[i + 1] == '"') fields.back() += '"', ++i;
      else quoted = false;
    } else if (c == ',') {
      fields.emplace_back();
      was_quoted = false;
    } else if (c == '"' && fields.back().empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else {
      fields.back() += c;
    }
  }
  if (quoted) return std::nullopt;
  return fields;
}

std::optional<double> parse_float(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

// edge_runtime.results.parse_row: a line back to (path, scored?); nullopt when it is not a row.
std::optional<std::pair<std::string, bool>> parse_row(const std::string& line, RowFormat format) {
  std::string path;
  bool has_score = false, has_skipped = false;
  if (format == RowFormat::Jsonl) {
    const auto data = nlohmann::json::parse(line, nullptr, false);
    if (data.is_discarded() || !data.is_object() || data.size() != 3 || !data.contains("path") ||
        !data.contains("score") || !data.contains("skipped") || !data["path"].is_string())
      return std::nullopt;
    const auto& score = data["score"];
    const auto& skipped = data["skipped"];
    if (!(score.is_null() || score.is_number()) || !(skipped.is_null() || skipped.is_string()))
      return std::nullopt;
    path = data["path"].get<std::string>();
    has_score = !score.is_null();
    has_skipped = !skipped.is_null();
  } else {
    const auto fields = csv_fields(line);
    if (!fields || fields->size() != 3) return std::nullopt;
    path = (*fields)[0];
    has_score = !(*fields)[1].empty();
    if (has_score && !parse_float((*fields)[1])) return std::nullopt;
    has_skipped = !(*fields)[2].empty();
  }
  if (path.empty() || has_score == has_skipped) return std::nullopt;
  return std::make_pair(path, has_score);
}

}  // namespace

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
  char buf[64];
  const auto end = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific).ptr;
  std::string sci(buf, end);  // "-d.ddde+XX", the shortest digits that round-trip
  std::string sign;
  if (sci[0] == '-') sign = "-", sci.erase(0, 1);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the point
  const int exponent = std::atoi(sci.c_str() + e + 1);
  const int point = exponent + 1;  // x = 0.DIGITS * 10^point
  const int n = static_cast<int>(digits.size());
  std::string out;
  if (point > -4 && point <= 16) {  // repr's rule for fixed notation
    if (point <= 0) out = "0." + std::string(-point, '0') + digits;
    else if (point >= n) out = digits + std::string(point - n, '0') + ".0";
    else out = digits.substr(0, point) + "." + digits.substr(point);
  } else {
    out = digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    std::snprintf(buf, sizeof buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += buf;
  }
  return sign + out;
}

std::string python_path_text(const std::string& path) {
  if (path.empty()) return ".";
  // POSIX keeps exactly two leading slashes; pathlib does too.
  const size_t lead = path.rfind("//", 0) == 0 && path.rfind("///", 0) != 0 ? 2
                      : path[0] == '/'                                    ? 1
                                                                          : 0;
  std::string out(lead, '/');
  size_t i = lead;
  bool first = true;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    const std::string part = path.substr(i, j - i);
    if (!part.empty() && part != ".") {
      if (!first) out += '/';
      out += part;
      first = false;
    }
    i = j + 1;
  }
  return out.empty() ? "." : out;
}

std::string format_row(const Row& row, RowFormat format) {
  const std::string score = row.score ? python_float_repr(*row.score) : "";
  if (format == RowFormat::Jsonl)
    return "{\"path\": " + json_string(row.path) + ", \"score\": " + (row.score ? score : "null") +
           ", \"skipped\": " + (row.score ? "null" : json_string(row.skipped)) + "}\n";
  return csv_field(row.path) + "," + score + "," + csv_field(row.score ? "" : row.skipped) + "\n";
}

RowFormat results_format(const std::string& path, const std::string& name) {
  std::string fmt = name;
  if (fmt.empty()) {
    const size_t dot = path.rfind('.');
    const size_t slash = path.rfind('/');
    std::string suffix = dot == std::string::npos || (slash != std::string::npos && dot < slash)
                             ? "" : path.substr(dot);
    for (char& c : suffix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    fmt = suffix == ".csv" ? "csv" : suffix == ".jsonl" || suffix == ".ndjson" ? "jsonl" : "";
    if (fmt.empty())
      throw Error(path + ": cannot tell the output format from the suffix; name it *.csv or "
                  "*.jsonl, or pass --format csv or --format jsonl");
  }
  if (fmt == "csv") return RowFormat::Csv;
  if (fmt == "jsonl") return RowFormat::Jsonl;
  throw Error(path + ": results are streamed as csv or jsonl, not " + fmt +
              "; pass --format csv or --format jsonl");
}

ResultsFile::ResultsFile(const std::string& path, RowFormat format, bool resume)
    : path_(path), format_(format) {
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && !S_ISREG(st.st_mode)) throw Error(path + ": not a file; pick another --output");
  if (exists && st.st_size > 0) {
    if (!resume)
      throw Error(path + ": already holds results; pass --resume to continue it, or remove it "
                  "or pick another --output");
    std::ifstream in(path, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t end = data.rfind('\n') + 1;  // npos + 1 == 0: no whole line at all
    if (end < data.size() && ::truncate(path.c_str(), static_cast<off_t>(end)) != 0)
      throw Error(path + ": cannot cut its last, partial line; check its permissions");
    std::istringstream lines(data.substr(0, end));
    std::string line;
    int number = 0;
    while (std::getline(lines, line)) {
      ++number;
      if (format == RowFormat::Csv && number == 1) {
        if (line + "\n" != kCsvHeader)
          throw Error(path + ": not an agiqa-score csv stream (first line '" + line.substr(0, 60) +
                      "', expected 'path,score,skipped'); remove it or pick another --output");
        continue;
      }
      const auto row = parse_row(line, format);
      if (!row)
        throw Error(path + ":" + std::to_string(number) + ": not a row of agiqa-score's " +
                    (format == RowFormat::Csv ? "csv" : "jsonl") + " output ('" +
                    line.substr(0, 60) + "'); fix or delete that line, or pick another --output");
      done_[row->first] = row->second;
    }
  }
  file_ = std::fopen(path.c_str(), "ab");
  if (!file_) throw Error(path + ": cannot open it for appending; check the folder exists and is writable");
  if (format == RowFormat::Csv && std::ftell(file_) == 0) {
    std::fputs(kCsvHeader, file_);
    std::fflush(file_);
  }
}

ResultsFile::~ResultsFile() {
  if (file_) std::fclose(file_);
}

void ResultsFile::write(const Row& row) {
  const std::string line = format_row(row, format_);
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    throw Error(path_ + ": cannot append a row (disk full?); free space and rerun with --resume");
  ++written_;
}

}  // namespace agiqa
