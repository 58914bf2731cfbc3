// Reads model.golden.safetensors (format: export/golden.py). Safetensors is an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
// raw little-endian tensor bytes.
#include "golden.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

namespace agiqa {
namespace {

constexpr const char* kGoldenFormat = "agiqa-edge.golden";

size_t dtype_size(const std::string& dtype) {
  if (dtype == "U8") return 1;
  if (dtype == "F32") return 4;
  return 0;
}

double number(const std::map<std::string, std::string>& meta, const char* key,
              const std::string& path) {
  const auto it = meta.find(key);
  if (it == meta.end())
    throw Error(path + ": metadata '" + key + "' missing; re-export the program");
  try {
    return std::stod(it->second);
  } catch (const std::exception&) {
    throw Error(path + ": metadata '" + key + "' is not a number; re-export the program");
  }
}

// tensors[name], which must have `dtype`; an Error naming the golden file otherwise.
const Tensor& tensor(const std::map<std::string, Tensor>& tensors, const std::string& name,
                     const char* dtype, const std::string& path) {
  auto it = tensors.find(name);
  if (it == tensors.end() || it->second.dtype != dtype)
    throw Error(path + ": tensor '" + name + "' (" + dtype + ") missing; re-export the program");
  return it->second;
}

}  // namespace

std::vector<float> Tensor::floats() const {
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);  // little-endian on every target
  return out;
}

void read_safetensors(const std::string& path, std::map<std::string, Tensor>* tensors,
                      std::map<std::string, std::string>* metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot be read");
  const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
  const std::string bad = path + ": not a valid safetensors file; re-export the program";
  if (data.size() < 8) throw Error(bad);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  if (header_len > data.size() - 8) throw Error(bad);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(data.begin() + 8, data.begin() + 8 + header_len);
  } catch (const nlohmann::json::exception&) {
    throw Error(bad);
  }
  const size_t base = 8 + header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) (*metadata)[m.key()] = m->get<std::string>();
      continue;
    }
    Tensor t;
    try {
      t.dtype = it->at("dtype").get<std::string>();
      t.shape = it->at("shape").get<std::vector<int64_t>>();
      const auto offsets = it->at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2 || offsets[0] > offsets[1] || base + offsets[1] > data.size())
        throw Error(bad);
      size_t numel = 1;
      for (int64_t d : t.shape) numel *= static_cast<size_t>(d);
      if (dtype_size(t.dtype) == 0 || numel * dtype_size(t.dtype) != offsets[1] - offsets[0])
        throw Error(path + ": tensor '" + it.key() + "' has dtype " + t.dtype +
                    " or a size this reader does not handle; re-export the program");
      t.bytes.assign(data.begin() + base + offsets[0], data.begin() + base + offsets[1]);
    } catch (const nlohmann::json::exception&) {
      throw Error(bad);
    }
    (*tensors)[it.key()] = std::move(t);
  }
}

GoldenFile GoldenFile::read(const std::string& path, const Contract& contract) {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> meta;
  read_safetensors(path, &tensors, &meta);
  if (meta["format"] != kGoldenFormat)
    throw Error(path + ": not an agiqa-edge golden file; re-export the program");
  GoldenFile golden;
  golden.program_sha256 = meta["program_sha256"];
  if (golden.program_sha256 != contract.program_sha256)
    throw Error(path + ": made for another program (sha256 differs from model.json); "
                "re-export the program");
  golden.score_tolerance = number(meta, "score_tolerance", path);
  golden.gate_tolerance = number(meta, "gate_tolerance", path);
  golden.preprocess_tolerance = number(meta, "preprocess_tolerance", path);
  const int count = static_cast<int>(number(meta, "pairs", path));
  for (int i = 0; i < count; ++i) {
    GoldenPair pair;
    const std::string prefix = "pair" + std::to_string(i) + ".";
    pair.name = meta.count(prefix + "name") ? meta[prefix + "name"] : prefix;
    auto take = [&](const std::string& key, const char* dtype) {
      return tensor(tensors, prefix + key, dtype, path);
    };
    pair.rgb = take("rgb", "U8");
    if (pair.rgb.shape.size() != 3 || pair.rgb.shape[2] != 3)
      throw Error(path + ": '" + prefix + "rgb' must be (H, W, 3); re-export the program");
    pair.input = take("input", "F32");
    for (const auto& name : contract.output_names) pair.outputs[name] = take(name, "F32");
    golden.pairs.push_back(std::move(pair));
  }
  if (golden.pairs.empty()) throw Error(path + ": holds no golden pairs; re-export the program");
  const int cameras = meta.count("camera_pairs") ? static_cast<int>(number(meta, "camera_pairs", path)) : 0;
  for (int j = 0; j < cameras; ++j) {
    GoldenCameraPair pair;
    const std::string prefix = "camera" + std::to_string(j) + ".";
    auto take = [&](const std::string& key, const char* dtype) {
      return tensor(tensors, prefix + key, dtype, path);
    };
    if (!meta.count(prefix + "layout"))
      throw Error(path + ": metadata '" + prefix + "layout' missing; re-export the program");
    pair.layout = CameraLayout::parse(meta[prefix + "layout"], path + ": '" + prefix + "layout'");
    pair.frame = take("frame", "U8");
    pair.layout.frame(pair.frame.bytes, path + ": '" + prefix + "frame'");  // fits its bytes
    pair.input = take("input", "F32");
    for (const auto& name : contract.output_names) pair.outputs[name] = take(name, "F32");
    std::string source = "?";
    try {
      source = nlohmann::json::parse(meta[prefix + "layout"]).value("name", "?");
    } catch (const nlohmann::json::exception&) {
    }
    pair.name = "camera" + std::to_string(j) + " (" + pair.layout.encoding + ", " +
                std::to_string(pair.layout.rotation) + " deg) of " + source;
    golden.camera_pairs.push_back(std::move(pair));
  }
  return golden;
}

CameraLayout CameraLayout::parse(const std::string& text, const std::string& where) {
  const std::string bad = where + ": not a camera frame layout (";
  CameraLayout l;
  try {
    const auto j = nlohmann::json::parse(text);
    const auto format = j.at("format").get<std::string>();
    if (format == "yuv420") l.format = FrameFormat::YUV420;
    else if (format == "rgba") l.format = FrameFormat::RGBA;
    else if (format == "bgra") l.format = FrameFormat::BGRA;
    else throw Error(bad + "format '" + format + "' is not yuv420, rgba or bgra)");
    l.width = j.at("width").get<int>();
    l.height = j.at("height").get<int>();
    for (const auto& p : j.at("planes")) l.planes.push_back(p.get<std::array<size_t, 3>>());
    const auto matrix = j.value("matrix", std::string("bt601"));
    const auto range = j.value("range", std::string("video"));
    if (matrix != "bt601" && matrix != "bt709") throw Error(bad + "matrix '" + matrix + "')");
    if (range != "video" && range != "full") throw Error(bad + "range '" + range + "')");
    l.matrix = matrix == "bt601" ? ColorMatrix::BT601 : ColorMatrix::BT709;
    l.range = range == "video" ? ColorRange::Video : ColorRange::Full;
    l.rotation = j.value("rotation", 0);
    if (j.contains("crop") && !j.at("crop").is_null()) {
      const auto c = j.at("crop").get<std::array<int, 4>>();
      l.crop = Crop{c[0], c[1], c[2], c[3]};
    }
    l.encoding = j.value("encoding", format);
  } catch (const nlohmann::json::exception& exc) {
    throw Error(bad + exc.what() + "); re-export the program");
  }
  const size_t want = l.format == FrameFormat::YUV420 ? 3 : 1;
  if (l.planes.size() != want)
    throw Error(bad + std::to_string(l.planes.size()) + " planes, the format has " +
                std::to_string(want) + "); re-export the program");
  return l;
}

Frame CameraLayout::frame(const std::vector<uint8_t>& bytes, const std::string& where) const {
  Frame f;
  f.format = format;
  f.width = width;
  f.height = height;
  f.matrix = matrix;
  f.range = range;
  for (size_t i = 0; i < planes.size(); ++i) {
    if (planes[i][0] >= bytes.size())
      throw Error(where + ": plane " + std::to_string(i) + " starts at byte " +
                  std::to_string(planes[i][0]) + " of " + std::to_string(bytes.size()) +
                  "; re-export the program");
    f.planes[i] = {bytes.data() + planes[i][0], planes[i][1], planes[i][2],
                   bytes.size() - planes[i][0]};
  }
  return f;
}

void write_safetensors_f32(const std::string& path, const std::string& name,
                           const std::vector<int64_t>& shape, const std::vector<float>& values) {
  const uint64_t nbytes = values.size() * sizeof(float);
  std::string header = nlohmann::json{{name, {{"dtype", "F32"}, {"shape", shape},
                                              {"data_offsets", {0, nbytes}}}}}.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // the format pads the header to 8 bytes
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t(header.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(length), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(nbytes));
    if (!out) throw Error(path + ": cannot be written");
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) throw Error(path + ": cannot be written");
}

}  // namespace agiqa
