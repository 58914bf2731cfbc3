// agiqa-score-cpp: score JPEG/PNG files with an exported program, like agiqa-score.
//
//   agiqa-score-cpp model.pte a.jpg b.png ...   one line per image, in input order:
//                                              "<score>\t<path>" ("--gates": then the gate
//                                              weights), "skipped\t<path>\t<reason>"
//   agiqa-score-cpp -o scores.csv [--resume] model.pte IMAGES...
//                                              rows appended and flushed as they are scored,
//                                              in agiqa-score's csv/jsonl (results.h)
//   agiqa-score-cpp --check-golden model.pte    run the golden pairs, print a JSON report
//
// Exit status: 0 when at least one image was scored (or the golden check passed), 1 when none
// was (or it failed), 2 when the model cannot be loaded or the arguments are wrong.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include <executorch/runtime/platform/platform.h>

#include "agiqa/scorer.h"
#include "golden.h"
#include "pipeline.h"
#include "results.h"
#ifdef AGIQA_WITH_DECODERS
#include "agiqa/decode.h"
#endif

namespace {

constexpr const char* kUsage =
    "usage: agiqa-score-cpp [OPTIONS] MODEL.pte IMAGES...\n"
    "       agiqa-score-cpp --check-golden MODEL.pte\n"
    "Score JPEG/PNG images with an agiqa-edge ExecuTorch program (model.json beside it).\n"
    "  --gates            also print the gate weights (expert_names order)\n"
    "  --no-golden-check  load without reproducing model.golden.safetensors first\n"
    "  --check-golden     reproduce the golden pairs and print a JSON report\n"
    "  --dump-inputs DIR  also write each image's model input to DIR/<n>.safetensors\n"
    "  -o, --output FILE  append one row per image (csv or jsonl, from the suffix) to FILE,\n"
    "                     flushed as it is scored; the rows agiqa-score --output writes\n"
    "  --resume           with --output: keep its rows, score only the files not in it yet\n"
    "  --format csv|jsonl the rows' format (stdout without --output; default: the suffix)\n"
    "  --decode-threads N threads decoding ahead of the model (default 2, 1 on one core);\n"
    "                     0 decodes one image at a time in the scoring thread\n"
    "  --timing           print the load time and the scoring rate to stderr\n"
    "  --progress N       a progress line on stderr every N images (default: every 5% when\n"
    "                     stderr is a terminal, never otherwise; 0: never)\n";

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Reads an integer option value; nullopt when it is not one (>= 0).
std::optional<int> count_arg(const std::string& text) {
  try {
    size_t used = 0;
    const int value = std::stoi(text, &used);
    if (used == text.size() && value >= 0) return value;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// The runtime logs XNNPACK's CPU probing at Info level on every start; keep errors only.
void log_errors_only(et_timestamp_t, et_pal_log_level_t level, const char* filename,
                     const char*, size_t line, const char* message, size_t length) {
  if (level == kError || level == kFatal)
    std::fprintf(stderr, "executorch %s:%zu: %.*s\n", filename, line, static_cast<int>(length),
                 message);
}

void print_golden(const agiqa::GoldenReport& r) {
  std::printf("{\"passed\": %s, \"score_tolerance\": %g, \"gate_tolerance\": %g, "
              "\"preprocess_tolerance\": %g, \"pairs\": [",
              r.passed ? "true" : "false", r.score_tolerance, r.gate_tolerance,
              r.preprocess_tolerance);
  for (size_t i = 0; i < r.pairs.size(); ++i) {
    const auto& p = r.pairs[i];
    std::printf("%s{\"name\": \"%s\", \"score\": %.9g, \"expected_score\": %.9g, "
                "\"score_abs_diff\": %.9g, \"gate_max_abs_diff\": %.9g, "
                "\"preprocess_max_abs_diff\": %.9g}",
                i ? ", " : "", p.name.c_str(), p.score, p.expected_score, p.score_abs_diff,
                p.gate_max_abs_diff, p.preprocess_max_abs_diff);
  }
  std::printf("]}\n");
}

}  // namespace

int main(int argc, char** argv) {
  executorch::runtime::register_pal(
      executorch::runtime::PalImpl::create(log_errors_only, __FILE__));
  bool gates = false, check_golden = false;
  std::string dump_dir, output, format_name;
  bool resume = false, timing = false;
  int decode_threads = agiqa::default_decode_threads(), progress_every = -1;
  auto golden = agiqa::Scorer::GoldenCheck::IfPresent;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--gates") {
      gates = true;
    } else if (a == "--no-golden-check") {
      golden = agiqa::Scorer::GoldenCheck::Skip;
    } else if (a == "--dump-inputs" && i + 1 < argc) {
      dump_dir = argv[++i];
    } else if (a == "--check-golden") {
      check_golden = true;
    } else if ((a == "-o" || a == "--output") && i + 1 < argc) {
      output = argv[++i];
    } else if (a == "--format" && i + 1 < argc) {
      format_name = argv[++i];
    } else if (a == "--resume") {
      resume = true;
    } else if (a == "--timing") {
      timing = true;
    } else if ((a == "--decode-threads" || a == "--progress") && i + 1 < argc) {
      const auto value = count_arg(argv[++i]);
      if (!value) {
        std::fprintf(stderr, "error: %s takes a count >= 0, not '%s'\n", a.c_str(), argv[i]);
        return 2;
      }
      (a == "--progress" ? progress_every : decode_threads) = *value;
    } else if (a.rfind("-", 0) == 0 && a.size() > 1) {
      std::fprintf(stderr, "error: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    } else {
      args.push_back(a);
    }
  }
  if (args.empty() || (!check_golden && args.size() < 2)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  if (resume && output.empty()) {
    std::fprintf(stderr, "error: --resume continues an --output file; name it with -o FILE\n");
    return 2;
  }
  if (gates && (!output.empty() || !format_name.empty())) {
    std::fprintf(stderr, "error: --gates prints to the tab-separated output only; drop --output "
                         "and --format to see the gate weights\n");
    return 2;
  }
  const std::string model = args[0];
  try {
    // A bad --format or an output that exists without --resume fails before the load.
    std::optional<agiqa::RowFormat> row_format;
    if (!output.empty()) row_format = agiqa::results_format(output, format_name);
    else if (!format_name.empty()) row_format = agiqa::results_format("stdout", format_name);
    std::optional<agiqa::ResultsFile> sink;
    if (!output.empty()) sink.emplace(output, *row_format, resume);
    if (check_golden) {
      auto scorer = agiqa::Scorer::load(model, agiqa::Scorer::GoldenCheck::Skip);
      const auto report = scorer.check_golden(agiqa::golden_path(model));
      print_golden(report);
      if (!report.passed) std::fprintf(stderr, "golden check failed: %s\n", report.failure.c_str());
      return report.passed ? 0 : 1;
    }
    const auto load_start = Clock::now();
    auto scorer = agiqa::Scorer::load(model, golden);  // the golden check refuses a bad CPU
    const double load_seconds = seconds_since(load_start);
#ifndef AGIQA_WITH_DECODERS
    std::fprintf(stderr, "error: this build has no image decoders (libjpeg/libpng were not "
                         "found when it was configured); use --check-golden or the library\n");
    return 2;
#else
    // The paths as agiqa-score writes them (str(Path)), so either tool can resume the other's.
    std::vector<std::string> todo;
    size_t kept = 0, kept_scored = 0;
    for (size_t i = 1; i < args.size(); ++i) {
      std::string path = agiqa::python_path_text(args[i]);
      const auto done = sink ? sink->done().find(path) : decltype(sink->done().end()){};
      if (sink && done != sink->done().end()) {
        ++kept;
        kept_scored += done->second;
      } else {
        todo.push_back(std::move(path));
      }
    }
    if (kept)
      std::fprintf(stderr, "resuming %s: %zu image(s) already there, %zu to score\n",
                   output.c_str(), kept, todo.size());
    const auto& spec = scorer.contract().preprocess;
    agiqa::DecodeAhead pipeline(
        todo.size(), decode_threads, 2 * static_cast<size_t>(decode_threads),
        [&](size_t i) {
          agiqa::Prepared p;
          try {
            const auto image = agiqa::load_for(spec, todo[i]);
            p.input = agiqa::preprocess_rgb8(spec, image.rgb.data(), image.width, image.height,
                                             static_cast<size_t>(image.width) * 3);
          } catch (const agiqa::ImageLoadError& exc) {
            p.skipped = exc.reason();
          }
          return p;
        });
    if (progress_every < 0)
      progress_every = isatty(STDERR_FILENO) ? std::max<int>(1, static_cast<int>(todo.size()) / 20) : 0;
    const auto score_start = Clock::now();
    size_t scored = 0, skipped = 0;
    for (size_t i = 0; i < todo.size(); ++i) {
      const std::string& path = todo[i];
      auto prepared = pipeline.next();
      agiqa::Row row{path, std::nullopt, prepared.skipped};
      std::vector<float> gate_weights;
      if (prepared.skipped.empty()) {
        if (!dump_dir.empty())
          agiqa::write_safetensors_f32(dump_dir + "/" + std::to_string(i) + ".safetensors",
                                       "input", scorer.contract().input_shape, prepared.input);
        auto s = scorer.run(prepared.input);
        row.score = s.score;
        gate_weights = std::move(s.gate_weights);
        ++scored;
      } else {
        std::fprintf(stderr, "skipped %s: %s\n", path.c_str(), row.skipped.c_str());
        ++skipped;
      }
      if (sink) {
        sink->write(row);
      } else if (row_format) {
        const std::string line = agiqa::format_row(row, *row_format);
        std::fwrite(line.data(), 1, line.size(), stdout);
        std::fflush(stdout);
      } else if (row.score) {
        std::printf("%.9g\t%s", *row.score, path.c_str());
        if (gates)
          for (float g : gate_weights) std::printf("\t%.9g", g);
        std::printf("\n");
        std::fflush(stdout);
      } else {
        std::printf("skipped\t%s\t%s\n", path.c_str(), row.skipped.c_str());
        std::fflush(stdout);
      }
      if (progress_every > 0 && ((i + 1) % progress_every == 0 || i + 1 == todo.size()))
        std::fprintf(stderr, "%zu/%zu images (%.0f%%), %.1f images/s\n", kept + i + 1,
                     kept + todo.size(), 100.0 * (kept + i + 1) / (kept + todo.size()),
                     (i + 1) / seconds_since(score_start));
    }
    const double score_seconds = seconds_since(score_start);
    if (sink) std::fprintf(stderr, "wrote %zu row(s) to %s\n", sink->written(), output.c_str());
    if (timing)
      std::fprintf(stderr, "timing: load %.3f s, %zu image(s) in %.3f s: %.2f images/s "
                           "(%d decode thread(s))\n",
                   load_seconds, todo.size(), score_seconds,
                   score_seconds > 0 ? todo.size() / score_seconds : 0.0, decode_threads);
    scored += kept_scored;
    skipped += kept - kept_scored;
    std::fprintf(stderr, "scored %zu image(s), skipped %zu (%s is better)\n", scored, skipped,
                 scorer.contract().lower_better ? "lower" : "higher");
    return scored ? 0 : 1;
#endif
  } catch (const agiqa::Error& exc) {
    std::fprintf(stderr, "error: %s\n", exc.what());  // names the file and the fix
    return 2;
  }
}
