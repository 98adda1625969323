#include "models/TrainConfig.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <variant>

#include <nlohmann/json.hpp>

#include "einjit/error.h"

namespace einjit::models {
namespace {

using Member = std::variant<std::string TrainConfig::*, int64_t TrainConfig::*, uint64_t TrainConfig::*,
                            double TrainConfig::*, bool TrainConfig::*>;

struct Entry {
  const char* key;
  Member member;
  bool modelKey;
  const char* help;
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> table = {
      {"model", &TrainConfig::model, true, "gpt2 (char-level text), mlp (image classifier) or teacher (residual MLP regression)"},
      {"struct", &TrainConfig::structure, true, "structure template of the structured layers, e.g. 'btt(rank=4)', 'dense'"},
      {"layers", &TrainConfig::layers, true, "gpt2: which linear layers take the structure: all, all_but_last or ffn"},
      {"n_layer", &TrainConfig::nLayer, true, "gpt2: transformer blocks"},
      {"n_head", &TrainConfig::nHead, true, "gpt2: attention heads"},
      {"d_model", &TrainConfig::dModel, true, "gpt2: model width"},
      {"context", &TrainConfig::context, true, "gpt2: sequence length"},
      {"qk_layernorm", &TrainConfig::qkLayerNorm, true, "gpt2: LayerNorm on q and k per head (logit scale 8/head_dim)"},
      {"residual_scale", &TrainConfig::residualScale, true, "gpt2: scale of every residual branch (paper 2: sqrt(3/n_layer))"},
      {"mup_base_width", &TrainConfig::muPBaseWidth, true, "muP base width (0: each layer's own input width)"},
      {"width", &TrainConfig::width, true, "mlp, teacher: hidden width"},
      {"blocks", &TrainConfig::blocks, true, "teacher: residual blocks of the student"},
      {"hidden_layers", &TrainConfig::hiddenLayers, true, "mlp: structured hidden layers"},
      {"teacher_width", &TrainConfig::teacherWidth, true, "teacher: hidden width of the teacher network"},
      {"data", &TrainConfig::data, false, "gpt2: text file (default data/sotu.txt); mlp: image .npz (default data/digits.npz)"},
      {"seed", &TrainConfig::seed, true, "seed of the initialisation and of the batches"},
      {"device", &TrainConfig::device, false, "where to train: cpu, or cuda (needs an NVIDIA GPU)"},
      {"precision", &TrainConfig::precision, false, "cuda: f32, or bf16 (autocast: bf16 compute over f32 master weights)"},
      {"steps", &TrainConfig::steps, false, "optimiser steps in total"},
      {"batch", &TrainConfig::batch, false, "examples (sequences for gpt2) per step"},
      {"lr", &TrainConfig::lr, false, "base learning rate (times each tensor's muP multiplier)"},
      {"warmup", &TrainConfig::warmup, false, "linear warmup steps"},
      {"schedule", &TrainConfig::schedule, false, "learning-rate schedule after warmup: constant or cosine"},
      {"final_lr_fraction", &TrainConfig::finalLrFraction, false, "cosine: final learning rate / lr"},
      {"weight_decay", &TrainConfig::weightDecay, false, "AdamW decoupled weight decay (tensors of rank >= 2)"},
      {"clip", &TrainConfig::clip, false, "global gradient-norm clip (<= 0: none)"},
      {"beta1", &TrainConfig::beta1, false, "AdamW beta1"},
      {"beta2", &TrainConfig::beta2, false, "AdamW beta2"},
      {"eval_every", &TrainConfig::evalEvery, false, "evaluate every N steps (0: never)"},
      {"eval_batches", &TrainConfig::evalBatches, false, "batches per evaluation"},
      {"checkpoint_every", &TrainConfig::checkpointEvery, false, "write a checkpoint every N steps (0: only at the end and on Ctrl-C)"},
      {"log_every", &TrainConfig::logEvery, false, "print and log the training loss every N steps"},
      {"out", &TrainConfig::out, false, "output directory: checkpoint.npz, metrics.jsonl"},
  };
  return table;
}

const Entry* findEntry(const std::string& key) {
  for (const Entry& e : entries())
    if (key == e.key) return &e;
  return nullptr;
}

std::string flagOf(const std::string& key) {
  std::string flag = "--" + key;
  for (char& c : flag)
    if (c == '_') c = '-';
  return flag;
}

struct TypeName {
  std::string operator()(std::string TrainConfig::*) const { return "a string"; }
  std::string operator()(int64_t TrainConfig::*) const { return "an integer"; }
  std::string operator()(uint64_t TrainConfig::*) const { return "a non-negative integer"; }
  std::string operator()(double TrainConfig::*) const { return "a number"; }
  std::string operator()(bool TrainConfig::*) const { return "a boolean (true or false)"; }
};

std::string typeName(const Member& member) { return std::visit(TypeName{}, member); }

// Sets `entry` from a JSON value; false if the value has the wrong type.
bool setFromJson(TrainConfig& config, const Entry& entry, const nlohmann::json& value) {
  return std::visit(
      [&](auto member) -> bool {
        using T = std::remove_reference_t<decltype(config.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!value.is_string()) return false;
          config.*member = value.get<std::string>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!value.is_boolean()) return false;
          config.*member = value.get<bool>();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!value.is_number()) return false;
          config.*member = value.get<double>();
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          if (value.is_number_unsigned()) config.*member = value.get<uint64_t>();
          else return false;
        } else {
          if (value.is_number_unsigned()) {
            if (value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return false;
            config.*member = static_cast<int64_t>(value.get<uint64_t>());
          } else if (value.is_number_integer()) {
            config.*member = value.get<int64_t>();
          } else {
            return false;
          }
        }
        return true;
      },
      entry.member);
}

template <class T>
bool parseInteger(const std::string& text, T& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end && !text.empty();
}

bool setFromText(TrainConfig& config, const Entry& entry, const std::string& text) {
  return std::visit(
      [&](auto member) -> bool {
        using T = std::remove_reference_t<decltype(config.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          config.*member = text;
        } else if constexpr (std::is_same_v<T, bool>) {
          if (text == "true" || text == "1") config.*member = true;
          else if (text == "false" || text == "0") config.*member = false;
          else return false;
        } else if constexpr (std::is_same_v<T, double>) {
          char* end = nullptr;
          const double v = std::strtod(text.c_str(), &end);
          if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v)) return false;
          config.*member = v;
        } else {
          T v{};
          if (!parseInteger(text, v)) return false;
          config.*member = v;
        }
        return true;
      },
      entry.member);
}

nlohmann::json toJson(const TrainConfig& config, const Entry& entry) {
  return std::visit([&](auto member) { return nlohmann::json(config.*member); }, entry.member);
}

}  // namespace

const std::vector<TrainOption>& trainOptions() {
  static const std::vector<TrainOption> options = [] {
    std::vector<TrainOption> list;
    for (const Entry& e : entries()) list.push_back({e.key, flagOf(e.key), typeName(e.member), e.help});
    return list;
  }();
  return options;
}

std::vector<std::string> applyTrainConfigJson(TrainConfig& config, const std::string& jsonText,
                                              const std::string& origin) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(jsonText);
  } catch (const nlohmann::json::parse_error& e) {
    throw UserError(origin + ": not valid JSON (" + e.what() + ")");
  }
  if (!json.is_object()) throw UserError(origin + ": expected a JSON object of option keys, got " + std::string(json.type_name()));
  std::vector<std::string> keys;
  for (const auto& [key, value] : json.items()) {
    const Entry* entry = findEntry(key);
    if (!entry) {
      std::string known;
      for (const Entry& e : entries()) known += (known.empty() ? "" : ", ") + std::string(e.key);
      throw UserError(origin + ": unknown key '" + key + "'; the keys are " + known);
    }
    if (!setFromJson(config, *entry, value))
      throw UserError(origin + ": key '" + key + "' must be " + typeName(entry->member) + ", got " + value.dump());
    keys.push_back(key);
  }
  return keys;
}

std::vector<std::string> applyTrainConfigFile(TrainConfig& config, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError("cannot read config file '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw UserError("cannot read config file '" + path + "'");
  return applyTrainConfigJson(config, text.str(), "config file '" + path + "'");
}

void applyTrainOption(TrainConfig& config, const std::string& key, const std::string& valueText) {
  const Entry* entry = findEntry(key);
  if (!entry) throw UserError("unknown training option '" + key + "'");
  if (!setFromText(config, *entry, valueText))
    throw UserError(flagOf(key) + ": expected " + typeName(entry->member) + ", got '" + valueText + "'");
}

std::string trainConfigToJson(const TrainConfig& config) {
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  for (const Entry& e : entries()) json[e.key] = toJson(config, e);
  return json.dump();
}

std::string trainOptionJson(const TrainConfig& config, const std::string& key) {
  const Entry* entry = findEntry(key);
  if (!entry) throw UserError("unknown training option '" + key + "'");
  return toJson(config, *entry).dump();
}

void validateTrainConfig(const TrainConfig& c) {
  auto require = [](bool ok, const char* key, const std::string& expected) {
    if (!ok) throw UserError("option '" + std::string(key) + "' (" + flagOf(key) + "): " + expected);
  };
  require(c.model == "gpt2" || c.model == "mlp" || c.model == "teacher", "model",
          "expected gpt2, mlp or teacher, got '" + c.model + "'");
  require(!c.structure.empty(), "struct", "expected a structure template such as 'btt(rank=4)' or 'dense'");
  require(c.layers == "all" || c.layers == "all_but_last" || c.layers == "ffn", "layers",
          "expected all, all_but_last or ffn, got '" + c.layers + "'");
  require(c.nLayer >= 1, "n_layer", "must be at least 1");
  require(c.nHead >= 1, "n_head", "must be at least 1");
  require(c.dModel >= 1 && c.dModel % c.nHead == 0, "d_model", "must be a positive multiple of n_head");
  require(c.context >= 1, "context", "must be at least 1");
  require(std::isfinite(c.residualScale), "residual_scale", "must be a finite number");
  require(c.muPBaseWidth >= 0, "mup_base_width", "must be >= 0");
  require(c.width >= 1, "width", "must be at least 1");
  require(c.blocks >= 0, "blocks", "must be >= 0");
  require(c.hiddenLayers >= 0, "hidden_layers", "must be >= 0");
  require(c.teacherWidth >= 1, "teacher_width", "must be at least 1");
  require(c.device == "cpu" || c.device == "cuda", "device", "expected cpu or cuda, got '" + c.device + "'");
  require(c.precision == "f32" || c.precision == "bf16", "precision", "expected f32 or bf16, got '" + c.precision + "'");
  require(c.precision == "f32" || c.device == "cuda", "precision", "bf16 autocast needs --device cuda");
  require(c.steps >= 1, "steps", "must be at least 1");
  require(c.batch >= 1, "batch", "must be at least 1");
  require(std::isfinite(c.lr) && c.lr > 0, "lr", "must be a positive number");
  require(c.warmup >= 0, "warmup", "must be >= 0");
  require(c.schedule == "constant" || c.schedule == "cosine", "schedule",
          "expected constant or cosine, got '" + c.schedule + "'");
  require(c.finalLrFraction >= 0 && c.finalLrFraction <= 1, "final_lr_fraction", "must be in [0, 1]");
  require(std::isfinite(c.weightDecay) && c.weightDecay >= 0, "weight_decay", "must be >= 0");
  require(std::isfinite(c.clip), "clip", "must be a finite number");
  require(c.beta1 >= 0 && c.beta1 < 1, "beta1", "must be in [0, 1)");
  require(c.beta2 >= 0 && c.beta2 < 1, "beta2", "must be in [0, 1)");
  require(c.evalEvery >= 0, "eval_every", "must be >= 0");
  require(c.evalBatches >= 1, "eval_batches", "must be at least 1");
  require(c.checkpointEvery >= 0, "checkpoint_every", "must be >= 0");
  require(c.logEvery >= 1, "log_every", "must be at least 1");
  require(!c.out.empty(), "out", "must name a directory");
}

bool isModelKey(const std::string& key) {
  const Entry* entry = findEntry(key);
  return entry && entry->modelKey;
}

}  // namespace einjit::models
