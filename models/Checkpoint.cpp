#include "models/Checkpoint.h"

#include <cmath>
#include <filesystem>

#include "einjit/error.h"
#include "runtime/io/Npy.h"

namespace einjit::models {
namespace {

constexpr double kFormatVersion = 1;

Tensor scalar(double value) {
  Tensor t(DType::F64, {});
  t.set(0, value);
  return t;
}

Tensor bytesToTensor(const std::string& text) {
  Tensor t(DType::F32, {static_cast<int64_t>(text.size())});
  for (size_t i = 0; i < text.size(); ++i) t.set(static_cast<int64_t>(i), static_cast<unsigned char>(text[i]));
  return t;
}

const Tensor& member(const std::map<std::string, Tensor>& arrays, const std::string& name,
                     const std::string& path) {
  auto it = arrays.find(name);
  if (it == arrays.end())
    throw UserError("'" + path + "' is not an einjit training checkpoint: it has no '" + name + "' array");
  return it->second;
}

double readScalar(const std::map<std::string, Tensor>& arrays, const std::string& name,
                  const std::string& path) {
  const Tensor& t = member(arrays, name, path);
  if (t.numel() != 1 || !std::isfinite(t.get(0)))
    throw UserError("checkpoint '" + path + "': '" + name + "' must hold one finite number");
  return t.get(0);
}

std::string tensorToBytes(const Tensor& t, const std::string& name, const std::string& path) {
  if (t.rank() != 1) throw UserError("checkpoint '" + path + "': '" + name + "' must be a 1-D byte array");
  std::string text(static_cast<size_t>(t.numel()), '\0');
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.get(i);
    if (!(v >= 0 && v <= 255 && v == std::floor(v)))
      throw UserError("checkpoint '" + path + "': '" + name + "' holds a value that is not a byte");
    text[static_cast<size_t>(i)] = static_cast<char>(static_cast<unsigned char>(v));
  }
  return text;
}

}  // namespace

void writeCheckpoint(const std::string& path, const Checkpoint& checkpoint) {
  std::map<std::string, Tensor> arrays;
  arrays["meta.format"] = scalar(kFormatVersion);
  arrays["meta.step"] = scalar(static_cast<double>(checkpoint.step));
  arrays["meta.seconds"] = scalar(checkpoint.seconds);
  arrays["meta.config"] = bytesToTensor(checkpoint.configJson);
  for (const auto& [name, t] : checkpoint.params) arrays["param." + name] = t;
  for (const auto& [name, t] : checkpoint.firstMoments) arrays["adam_m." + name] = t;
  for (const auto& [name, t] : checkpoint.secondMoments) arrays["adam_v." + name] = t;
  writeNpz(path, arrays);
}

Checkpoint readCheckpoint(const std::string& path) {
  if (!std::filesystem::exists(path)) throw UserError("checkpoint '" + path + "' does not exist");
  const std::map<std::string, Tensor> arrays = readNpz(path);
  const double format = readScalar(arrays, "meta.format", path);
  if (format != kFormatVersion)
    throw UserError("checkpoint '" + path + "' has format version " + std::to_string(format) +
                    "; this einjit reads version " + std::to_string(static_cast<int>(kFormatVersion)));
  Checkpoint checkpoint;
  const double step = readScalar(arrays, "meta.step", path);
  if (step < 0 || step != std::floor(step) || step > 9.0e15)
    throw UserError("checkpoint '" + path + "': 'meta.step' must be a non-negative integer");
  checkpoint.step = static_cast<int64_t>(step);
  checkpoint.seconds = readScalar(arrays, "meta.seconds", path);
  checkpoint.configJson = tensorToBytes(member(arrays, "meta.config", path), "meta.config", path);
  for (const auto& [name, t] : arrays) {
    if (name.rfind("param.", 0) == 0) checkpoint.params[name.substr(6)] = t;
    else if (name.rfind("adam_m.", 0) == 0) checkpoint.firstMoments[name.substr(7)] = t;
    else if (name.rfind("adam_v.", 0) == 0) checkpoint.secondMoments[name.substr(7)] = t;
    else if (name.rfind("meta.", 0) != 0)
      throw UserError("checkpoint '" + path + "' has an unexpected array '" + name + "'");
  }
  if (checkpoint.params.empty())
    throw UserError("'" + path + "' is not an einjit training checkpoint: it holds no parameters");
  return checkpoint;
}

void loadTensorsInto(const std::map<std::string, Tensor>& tensors,
                     const std::vector<rt::ParameterInfo>& params, const std::string& what) {
  for (const rt::ParameterInfo& p : params) {
    auto it = tensors.find(p.var->name);
    if (it == tensors.end()) throw UserError(what + " has no tensor for parameter '" + p.var->name + "'");
    if (it->second.shape() != p.var->value.shape())
      throw UserError(what + ": '" + p.var->name + "' has shape " + shapeToString(it->second.shape()) +
                      ", the model expects " + shapeToString(p.var->value.shape()));
  }
  if (tensors.size() != params.size()) {
    for (const auto& [name, t] : tensors) {
      bool used = false;
      for (const rt::ParameterInfo& p : params) used = used || p.var->name == name;
      if (!used) throw UserError(what + " has a tensor '" + name + "' that the model does not have");
    }
  }
  for (const rt::ParameterInfo& p : params) {
    const Tensor& source = tensors.at(p.var->name);
    p.var->value = source.dtype() == p.var->value.dtype() ? source : source.to(p.var->value.dtype());
  }
}

}  // namespace einjit::models
