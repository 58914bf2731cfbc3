// agiqa-bench-camera: time and check the camera path (bench/camera.py drives it).
//
//   agiqa-bench-camera bench MODEL.pte FRAME.raw LAYOUT.json [--runs N] [--threads T]
//       median and p90 ms of the model alone (run on a preprocessed input), preprocess_frame
//       alone, score_frame, and the share outside the model; one JSON line, then a table.
//   agiqa-bench-camera jobs JOBS.json [MODEL.pte]
//       JOBS.json: [{"frame": path, "layout": {...}, "what": "rgb" | "reduced" | "input" |
//       "score", "spec": {...} (optional, else the model's), "out": path}]; "rgb"/"reduced":
//       frame_to_rgb8 without / with the reduction, raw uint8; "input": preprocess_frame, raw
//       float32; "score": score_frame. One JSON line per job: {"shape": [...]} or {"score": s,
//       "gate_weights": [...]}, or {"error": "..."} (agiqa::Error's one line).
//   agiqa-bench-camera golden MODEL.pte
//       the load-time golden check (RGB and camera pairs) as one JSON line.
//
// A frame travels as its bytes (FRAME.raw) and edge_runtime.camera.frame_layout's JSON with
// "rotation" and "crop" (the golden file's camera{j}.layout).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <executorch/runtime/platform/platform.h>

#include "agiqa/scorer.h"
#include "golden.h"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

void quiet(et_timestamp_t, et_pal_log_level_t level, const char* file, const char*, size_t line,
           const char* message, size_t length) {
  if (level == kError || level == kFatal)
    std::fprintf(stderr, "executorch %s:%zu: %.*s\n", file, line, int(length), message);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw agiqa::Error(path + ": cannot be read");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const void* data, size_t size) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) throw agiqa::Error(path + ": cannot be written");
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) throw agiqa::Error(path + ": cannot be written");
}

agiqa::PreprocessSpec spec_from(const json& j) {
  agiqa::PreprocessSpec s;
  s.height = j.at("input_size")[0].get<int>();
  s.width = j.at("input_size")[1].get<int>();
  s.mean = j.at("mean").get<std::array<float, 3>>();
  s.std = j.at("std").get<std::array<float, 3>>();
  s.interpolation = j.value("interpolation", std::string("bilinear"));
  s.jpeg_draft = j.value("jpeg_draft", true);
  return s;
}

struct Stats {
  double median, p90;
};

Stats stats(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, size_t(q * (ms.size() - 1) + 0.5))]; };
  return {at(0.5), at(0.9)};
}

template <typename F>
double time_ms(const F& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

int bench(const std::vector<std::string>& args) {
  if (args.size() < 3) throw agiqa::Error("bench needs MODEL.pte FRAME.raw LAYOUT.json");
  int runs = 200, threads = 2;
  for (size_t i = 3; i + 1 < args.size(); i += 2) {
    if (args[i] == "--runs") runs = std::stoi(args[i + 1]);
    else if (args[i] == "--threads") threads = std::stoi(args[i + 1]);
    else throw agiqa::Error("unknown option " + args[i]);
  }
  const auto scorer = agiqa::Scorer::load(args[0], agiqa::Scorer::GoldenCheck::Skip);
  const auto bytes = read_file(args[1]);
  const auto text = read_file(args[2]);
  const auto layout = agiqa::CameraLayout::parse(std::string(text.begin(), text.end()), args[2]);
  const agiqa::Frame frame = layout.frame(bytes, args[1]);
  const auto& spec = scorer.contract().preprocess;
  const auto input = agiqa::preprocess_frame(spec, frame, layout.rotation, layout.crop, threads);
  for (int i = 0; i < 10; ++i) scorer.score_frame(frame, layout.rotation, layout.crop, threads);
  // Alternating: each round times all three, so a slow spell of the machine hits them alike.
  std::vector<double> model, pre, pre1, total;
  for (int i = 0; i < runs; ++i) {
    model.push_back(time_ms([&] { scorer.run(input); }));
    pre.push_back(time_ms([&] {
      agiqa::preprocess_frame(spec, frame, layout.rotation, layout.crop, threads);
    }));
    pre1.push_back(time_ms([&] {
      agiqa::preprocess_frame(spec, frame, layout.rotation, layout.crop, 1);
    }));
    total.push_back(time_ms([&] { scorer.score_frame(frame, layout.rotation, layout.crop, threads); }));
  }
  const Stats m = stats(model), p = stats(pre), p1 = stats(pre1), t = stats(total);
  const double outside = (t.median - m.median) / t.median;
  std::printf("{\"model_ms\": [%.4f, %.4f], \"preprocess_ms\": [%.4f, %.4f], "
              "\"preprocess_1thread_ms\": [%.4f, %.4f], \"total_ms\": [%.4f, %.4f], "
              "\"outside_share\": %.4f, \"ratio\": %.4f, \"runs\": %d, \"threads\": %d}\n",
              m.median, m.p90, p.median, p.p90, p1.median, p1.p90, t.median, t.p90, outside,
              t.median / m.median, runs, threads);
  std::printf("%dx%d %s, rotation %d, %d runs, preprocessing on %d threads (median / p90 ms)\n",
              frame.width, frame.height, layout.encoding.c_str(), layout.rotation, runs, threads);
  std::printf("  model alone      %8.3f %8.3f\n", m.median, m.p90);
  std::printf("  preprocess_frame %8.3f %8.3f   (1 thread: %.3f %.3f)\n", p.median, p.p90,
              p1.median, p1.p90);
  std::printf("  score_frame      %8.3f %8.3f   = %.2fx the model, %.0f%% outside it\n", t.median,
              t.p90, t.median / m.median, 100 * outside);
  return 0;
}

json one_job(const json& job, const agiqa::Scorer* scorer) {
  const auto bytes = read_file(job.at("frame").get<std::string>());
  const auto layout = agiqa::CameraLayout::parse(job.at("layout").dump(), "job layout");
  const agiqa::Frame frame = layout.frame(bytes, job.at("frame").get<std::string>());
  const std::string what = job.at("what").get<std::string>();
  if (what == "score") {
    if (!scorer) throw agiqa::Error("a score job needs MODEL.pte");
    const auto s = scorer->score_frame(frame, layout.rotation, layout.crop);
    return {{"score", s.score}, {"gate_weights", s.gate_weights}};
  }
  const std::string out = job.at("out").get<std::string>();
  if (what == "rgb" || what == "reduced") {
    std::optional<agiqa::InputSize> reduce;
    if (what == "reduced") {
      const auto size = job.at("input_size").get<std::array<int, 2>>();
      reduce = agiqa::InputSize{size[0], size[1]};
    }
    const auto image = agiqa::frame_to_rgb8(frame, layout.rotation, layout.crop, reduce);
    write_file(out, image.rgb.data(), image.rgb.size());
    return {{"shape", {image.height, image.width, 3}}};
  }
  if (what != "input") throw agiqa::Error("unknown job '" + what + "'");
  if (!job.contains("spec") && !scorer) throw agiqa::Error("an input job needs a spec or MODEL.pte");
  const agiqa::PreprocessSpec spec =
      job.contains("spec") ? spec_from(job.at("spec")) : scorer->contract().preprocess;
  const int threads = job.value("threads", 2);
  const auto input = agiqa::preprocess_frame(spec, frame, layout.rotation, layout.crop, threads);
  write_file(out, input.data(), input.size() * sizeof(float));
  return {{"shape", {3, spec.height, spec.width}}};
}

int jobs(const std::vector<std::string>& args) {
  if (args.empty()) throw agiqa::Error("jobs needs JOBS.json [MODEL.pte]");
  std::optional<agiqa::Scorer> scorer;
  if (args.size() > 1) scorer.emplace(agiqa::Scorer::load(args[1], agiqa::Scorer::GoldenCheck::Skip));
  const auto text = read_file(args[0]);
  const json all = json::parse(text.begin(), text.end());
  for (const auto& job : all) {
    json result;
    try {
      result = one_job(job, scorer ? &*scorer : nullptr);
    } catch (const agiqa::Error& exc) {
      result = {{"error", exc.what()}};
    }
    std::printf("%s\n", result.dump().c_str());
  }
  return 0;
}

json results(const std::vector<agiqa::GoldenResult>& pairs) {
  json out = json::array();
  for (const auto& p : pairs)
    out.push_back({{"name", p.name}, {"score", p.score}, {"expected_score", p.expected_score},
                   {"score_abs_diff", p.score_abs_diff}, {"gate_max_abs_diff", p.gate_max_abs_diff},
                   {"preprocess_max_abs_diff", p.preprocess_max_abs_diff}});
  return out;
}

int golden(const std::vector<std::string>& args) {
  if (args.empty()) throw agiqa::Error("golden needs MODEL.pte");
  const auto scorer = agiqa::Scorer::load(args[0], agiqa::Scorer::GoldenCheck::Skip);
  const auto r = scorer.check_golden(agiqa::golden_path(args[0]));
  const json out = {{"passed", r.passed}, {"failure", r.failure},
                    {"preprocess_tolerance", r.preprocess_tolerance},
                    {"score_tolerance", r.score_tolerance}, {"gate_tolerance", r.gate_tolerance},
                    {"pairs", results(r.pairs)}, {"camera_pairs", results(r.camera_pairs)}};
  std::printf("%s\n", out.dump().c_str());
  return r.passed ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  executorch::runtime::register_pal(executorch::runtime::PalImpl::create(quiet, __FILE__));
  const std::string usage =
      "usage: agiqa-bench-camera bench MODEL.pte FRAME.raw LAYOUT.json [--runs N] [--threads T]\n"
      "       agiqa-bench-camera jobs JOBS.json [MODEL.pte]\n"
      "       agiqa-bench-camera golden MODEL.pte\n";
  if (argc < 2) {
    std::fputs(usage.c_str(), stderr);
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (command == "bench") return bench(args);
    if (command == "jobs") return jobs(args);
    if (command == "golden") return golden(args);
    std::fputs(usage.c_str(), stderr);
    return 2;
  } catch (const std::exception& exc) {  // agiqa::Error and JSON errors: one line
    std::fprintf(stderr, "error: %s\n", exc.what());
    return 2;
  }
}
