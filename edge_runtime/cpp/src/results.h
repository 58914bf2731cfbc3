// Streamed results, the files agiqa-score --output writes (edge_runtime/results.py): one row per
// image, appended and flushed as it is scored, so a killed run keeps its rows and --resume
// continues it. Either tool can resume a file the other wrote: same header, columns, quoting,
// JSON spacing and float text (Python's repr of the float32 score as a double).
//
//   csv:   path,score,skipped            (Python's csv module, minimal quoting)
//   jsonl: {"path": ..., "score": ..., "skipped": ...}   (json.dumps, ASCII only)
#pragma once

#include <cstdio>
#include <optional>
#include <map>
#include <string>

namespace agiqa {

enum class RowFormat { Csv, Jsonl };

struct Row {
  std::string path;
  std::optional<float> score;  // set, or skipped is non-empty (never both)
  std::string skipped;
};

// Python's repr(float(x)): the shortest digits that read back to x, in repr's layout
// ("0.5", "123.0", "1e-05", "1.5e+16").
std::string python_float_repr(double x);

// "a//b/./c/" -> "a/b/c": str(pathlib.Path(p)), the path text the Python CLI writes and looks
// up on --resume.
std::string python_path_text(const std::string& path);

// One row of `format`, with its newline.
std::string format_row(const Row& row, RowFormat format);

// The format of a results file: `name` ("csv" | "jsonl") when given, else from the suffix
// (.csv, .jsonl, .ndjson). Throws agiqa::Error naming the file and the fix.
RowFormat results_format(const std::string& path, const std::string& name);

// An append-only results file (edge_runtime.results.ResultsFile).
class ResultsFile {
 public:
  // Without `resume` the file must not already hold results. With it, the rows there are kept
  // (done()) and a last line cut short by a kill is cut off the file. Throws agiqa::Error.
  ResultsFile(const std::string& path, RowFormat format, bool resume);
  ~ResultsFile();
  ResultsFile(const ResultsFile&) = delete;
  ResultsFile& operator=(const ResultsFile&) = delete;

  // The kept rows: path -> whether it has a score (a path listed twice: its last row).
  const std::map<std::string, bool>& done() const { return done_; }
  size_t written() const { return written_; }                  // rows written by this run
  // Appends one row and flushes it to the OS.
  void write(const Row& row);

 private:
  std::string path_;
  RowFormat format_;
  std::FILE* file_ = nullptr;
  std::map<std::string, bool> done_;
  size_t written_ = 0;
};

}  // namespace agiqa
