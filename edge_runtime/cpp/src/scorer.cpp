// agiqa::Scorer over executorch::extension::Module: the program is read once, its sha256
// checked against model.json, loaded from exactly those bytes, its embedded contract digest
// compared with model.json's, and proven on the golden pairs.
#include <algorithm>
#include <cmath>
#include <map>
#include <executorch/extension/data_loader/buffer_data_loader.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <fstream>
#include <iterator>
#include <sstream>

#include "agiqa/scorer.h"
#include "golden.h"

namespace agiqa {

namespace et = ::executorch;
using et::extension::Module;

struct Scorer::Impl {
  std::string path;
  Contract contract;
  std::vector<uint8_t> program;  // the hashed bytes; the data loader points into them
  std::unique_ptr<Module> module;
  GoldenReport golden;
  size_t score_index = 0;
  int gate_index = -1;
};

namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": program not found");
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
}

std::string fmt(double v, int digits = 3) {
  std::ostringstream out;
  out.precision(digits);
  out << v;
  return out.str();
}

// The program returns its contract's digest from a constant method: refuse a model.json it
// was not exported with (edge_runtime.Scorer._check_embedded_contract).
void check_embedded_contract(Module& module, const std::string& program_path,
                             const Contract& contract) {
  constexpr const char* kMethod = "agiqa_contract_sha256";
  const auto names = module.method_names();
  if (!names.ok() || names->count(kMethod) == 0)
    throw Error(program_path + ": the program carries no contract digest (exported by an older "
                "agiqa-export); re-export it");
  const auto outputs = module.execute(kMethod);
  if (!outputs.ok() || outputs->empty() || !(*outputs)[0].isString())
    throw Error(program_path + ": cannot read the program's contract digest (method " + kMethod +
                " failed or returned no string); re-export it");
  if (std::string((*outputs)[0].toString()) != contract.contract_sha256)
    throw Error(program_path + ": model.json is not the contract this program was exported with "
                "(contract_sha256 differs from the digest inside the program); restore the "
                "exported model.json or re-export it");
}

}  // namespace

Scorer::Scorer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Scorer::Scorer(Scorer&&) noexcept = default;
Scorer& Scorer::operator=(Scorer&&) noexcept = default;
Scorer::~Scorer() = default;

const Contract& Scorer::contract() const { return impl_->contract; }
const GoldenReport& Scorer::golden_report() const { return impl_->golden; }

Scorer Scorer::load(const std::string& program_path, GoldenCheck golden) {
  auto impl = std::make_unique<Impl>();
  impl->path = program_path;
  {
    std::ifstream probe(program_path, std::ios::binary);
    if (!probe) throw Error(program_path + ": program not found");
  }
  const std::string json = contract_path(program_path);
  impl->contract = Contract::read(json);
  impl->program = read_bytes(program_path);
  const std::string digest = sha256_hex(impl->program.data(), impl->program.size());
  if (digest != impl->contract.program_sha256)
    throw Error(program_path + ": sha256 " + digest.substr(0, 16) + "... does not match " + json +
                " (" + impl->contract.program_sha256.substr(0, 16) +
                "...): the program and its contract come from different exports; re-export it");
  const auto& names = impl->contract.output_names;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == impl->contract.score_output) impl->score_index = i;
    if (names[i] == "gate_weights") impl->gate_index = static_cast<int>(i);
  }

  auto loader = std::make_unique<et::extension::BufferDataLoader>(impl->program.data(),
                                                                  impl->program.size());
  impl->module = std::make_unique<Module>(std::move(loader));
  if (impl->module->load_forward() != et::runtime::Error::Ok)
    throw Error(program_path + ": the ExecuTorch runtime cannot load 'forward' (a backend or "
                "operator missing from this build; link the XNNPACK backend and kernels)");
  check_embedded_contract(*impl->module, program_path, impl->contract);
  auto meta = impl->module->method_meta("forward");
  if (meta.ok()) {
    auto input = meta->input_tensor_meta(0);
    std::vector<int64_t> sizes;
    if (input.ok())
      for (auto d : input->sizes()) sizes.push_back(d);
    if (sizes != impl->contract.input_shape || meta->num_outputs() != names.size())
      throw Error(program_path + ": the program's input or output count disagrees with " + json +
                  "; re-export it");
  }

  Scorer scorer(std::move(impl));
  const std::string gpath = golden_path(program_path);
  const bool present = static_cast<bool>(std::ifstream(gpath));
  if (golden == GoldenCheck::Required && !present)
    throw Error(gpath + ": missing; re-export the program (agiqa-export writes it) or load with "
                "the golden check off");
  if (golden != GoldenCheck::Skip && present) {
    scorer.impl_->golden = scorer.check_golden(gpath);
    if (!scorer.impl_->golden.passed)
      throw Error(program_path + ": refused: " + scorer.impl_->golden.failure);
  }
  return scorer;
}

Score Scorer::run(const std::vector<float>& input) const {
  const auto& shape = impl_->contract.input_shape;
  size_t numel = 1;
  for (auto d : shape) numel *= static_cast<size_t>(d);
  if (input.size() != numel)
    throw Error("input has " + std::to_string(input.size()) + " values, the program takes " +
                std::to_string(numel));
  std::vector<et::aten::SizesType> sizes(shape.begin(), shape.end());
  auto tensor = et::extension::from_blob(const_cast<float*>(input.data()), sizes);
  auto result = impl_->module->forward(tensor);
  if (!result.ok())
    throw Error(impl_->path + ": program run failed (ExecuTorch error " +
                std::to_string(static_cast<int>(result.error())) + ")");
  const auto& outputs = *result;
  Score score;
  const auto& s = outputs.at(impl_->score_index).toTensor();
  score.score = s.const_data_ptr<float>()[0];
  if (impl_->gate_index >= 0) {
    const auto& g = outputs.at(static_cast<size_t>(impl_->gate_index)).toTensor();
    score.gate_weights.assign(g.const_data_ptr<float>(), g.const_data_ptr<float>() + g.numel());
  }
  return score;
}

Score Scorer::score_rgb8(const uint8_t* rgb, int width, int height, size_t stride) const {
  return run(preprocess_rgb8(impl_->contract.preprocess, rgb, width, height, stride));
}

Score Scorer::score_frame(const Frame& frame, int rotation, const std::optional<Crop>& crop,
                          int threads) const {
  return run(preprocess_frame(impl_->contract.preprocess, frame, rotation, crop, threads));
}

namespace {

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

// One pair's result; its failure, if any and the first, goes into `report` (the order and the
// words of edge_runtime.golden._compare). A camera pair runs this runtime's own input, so a
// wrong input explains wrong outputs and is named first.
GoldenResult compare(const std::string& name, bool camera, const std::vector<float>& mine,
                     const std::vector<float>& stored, const Score& got,
                     const std::map<std::string, Tensor>& outputs, const std::string& score_name,
                     GoldenReport& report) {
  GoldenResult r;
  r.name = name;
  r.preprocess_max_abs_diff = max_abs_diff(mine, stored);
  r.score = got.score;
  r.expected_score = outputs.at(score_name).floats().at(0);
  r.score_abs_diff = std::fabs(double(got.score) - r.expected_score);
  if (outputs.count("gate_weights"))
    r.gate_max_abs_diff = max_abs_diff(got.gate_weights, outputs.at("gate_weights").floats());
  const bool wrong_outputs = r.score_abs_diff > report.score_tolerance ||
                             r.gate_max_abs_diff > report.gate_tolerance;
  const bool wrong_input = r.preprocess_max_abs_diff > report.preprocess_tolerance;
  const std::string kind = camera ? "golden camera pair '" : "golden pair '";
  if (report.passed && wrong_outputs && !(camera && wrong_input)) {
    report.passed = false;
    report.failure = kind + name + "' scores " + fmt(r.score, 6) + ", expected " +
                     fmt(r.expected_score, 6) + " (|diff| " + fmt(r.score_abs_diff) +
                     ", gate |diff| " + fmt(r.gate_max_abs_diff) + "; tolerances " +
                     fmt(report.score_tolerance) + ", " + fmt(report.gate_tolerance) +
                     "): this CPU/runtime computes wrong outputs; see docs/edge.md (SME)";
  } else if (report.passed && wrong_input) {
    report.passed = false;
    report.failure = kind + name + "' preprocesses differently from numpy (max |diff| " +
                     fmt(r.preprocess_max_abs_diff) + " > " + fmt(report.preprocess_tolerance) +
                     "); " + (camera ? "this build's camera conversion is wrong"
                                     : "this build's resize is wrong");
  }
  return r;
}

}  // namespace

GoldenReport Scorer::check_golden(const std::string& golden_file) const {
  const GoldenFile golden = GoldenFile::read(golden_file, impl_->contract);
  GoldenReport report;
  report.score_tolerance = golden.score_tolerance;
  report.gate_tolerance = golden.gate_tolerance;
  report.preprocess_tolerance = golden.preprocess_tolerance;
  const Contract& c = impl_->contract;
  const size_t numel = static_cast<size_t>(3) * c.preprocess.height * c.preprocess.width;
  for (const auto& pair : golden.pairs) {
    const int h = static_cast<int>(pair.rgb.shape[0]), w = static_cast<int>(pair.rgb.shape[1]);
    const auto mine = preprocess_rgb8(c.preprocess, pair.rgb.bytes.data(), w, h,
                                      static_cast<size_t>(w) * 3);
    const auto stored = pair.input.floats();
    if (mine.size() != stored.size())
      throw Error(golden_file + ": '" + pair.name + "' input has the wrong size; re-export");
    report.pairs.push_back(compare(pair.name, false, mine, stored, run(stored), pair.outputs,
                                   c.score_output, report));
  }
  for (const auto& pair : golden.camera_pairs) {
    const Frame frame = pair.layout.frame(pair.frame.bytes, golden_file);
    std::vector<float> mine;
    try {
      mine = preprocess_frame(c.preprocess, frame, pair.layout.rotation, pair.layout.crop);
    } catch (const Error& exc) {
      throw Error(golden_file + ": '" + pair.name + "': " + exc.what() + "; re-export");
    }
    const auto stored = pair.input.floats();
    if (mine.size() != stored.size() || stored.size() != numel)
      throw Error(golden_file + ": '" + pair.name + "' input has the wrong size; re-export");
    report.camera_pairs.push_back(compare(pair.name, true, mine, stored, run(mine), pair.outputs,
                                          c.score_output, report));
  }
  return report;
}

}  // namespace agiqa
