// agiqa-score-cpp: score JPEG/PNG files with an exported program, like agiqa-score.
//
//   agiqa-score-cpp model.pte a.jpg b.png ...   one line per image, in input order:
//                                              "<score>\t<path>" ("--gates": then the gate
//                                              weights), "skipped\t<path>\t<reason>"
//   agiqa-score-cpp --check-golden model.pte    run the golden pairs, print a JSON report
//
// Exit status: 0 when at least one image was scored (or the golden check passed), 1 when none
// was (or it failed), 2 when the model cannot be loaded or the arguments are wrong.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <executorch/runtime/platform/platform.h>

#include "agiqa/scorer.h"
#include "golden.h"
#ifdef AGIQA_WITH_DECODERS
#include "agiqa/decode.h"
#endif

namespace {

constexpr const char* kUsage =
    "usage: agiqa-score-cpp [--gates] [--no-golden-check] MODEL.pte IMAGES...\n"
    "       agiqa-score-cpp --check-golden MODEL.pte\n"
    "Score JPEG/PNG images with an agiqa-edge ExecuTorch program (model.json beside it).\n"
    "  --gates            also print the gate weights (expert_names order)\n"
    "  --no-golden-check  load without reproducing model.golden.safetensors first\n"
    "  --check-golden     reproduce the golden pairs and print a JSON report\n"
    "  --dump-inputs DIR  also write each image's model input to DIR/<n>.safetensors\n";

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
  std::string dump_dir;
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
    } else if (a.rfind("--", 0) == 0) {
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
  const std::string model = args[0];
  try {
    if (check_golden) {
      auto scorer = agiqa::Scorer::load(model, agiqa::Scorer::GoldenCheck::Skip);
      const auto report = scorer.check_golden(agiqa::golden_path(model));
      print_golden(report);
      if (!report.passed) std::fprintf(stderr, "golden check failed: %s\n", report.failure.c_str());
      return report.passed ? 0 : 1;
    }
    auto scorer = agiqa::Scorer::load(model, golden);  // the golden check refuses a bad CPU
#ifndef AGIQA_WITH_DECODERS
    std::fprintf(stderr, "error: this build has no image decoders (libjpeg/libpng were not "
                         "found when it was configured); use --check-golden or the library\n");
    return 2;
#else
    int scored = 0, skipped = 0;
    for (size_t i = 1; i < args.size(); ++i) {
      const std::string& path = args[i];
      try {
        const auto image = agiqa::load_for(scorer.contract().preprocess, path);
        const auto input = agiqa::preprocess_rgb8(scorer.contract().preprocess, image.rgb.data(),
                                                  image.width, image.height,
                                                  static_cast<size_t>(image.width) * 3);
        if (!dump_dir.empty())
          agiqa::write_safetensors_f32(dump_dir + "/" + std::to_string(i - 1) + ".safetensors",
                                       "input", scorer.contract().input_shape, input);
        const auto s = scorer.run(input);
        std::printf("%.9g\t%s", s.score, path.c_str());
        if (gates)
          for (float g : s.gate_weights) std::printf("\t%.9g", g);
        std::printf("\n");
        ++scored;
      } catch (const agiqa::ImageLoadError& exc) {
        std::printf("skipped\t%s\t%s\n", path.c_str(), exc.reason().c_str());
        std::fprintf(stderr, "skipped %s: %s\n", path.c_str(), exc.reason().c_str());
        ++skipped;
      }
    }
    std::fprintf(stderr, "scored %d image(s), skipped %d (%s is better)\n", scored, skipped,
                 scorer.contract().lower_better ? "lower" : "higher");
    return scored ? 0 : 1;
#endif
  } catch (const agiqa::Error& exc) {
    std::fprintf(stderr, "error: %s\n", exc.what());  // names the file and the fix
    return 2;
  }
}
