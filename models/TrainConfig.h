// Every option of `einjit train`, as a JSON config file and as command-line overrides.
//
// The keys (snake_case in JSON, --kebab-case on the command line) and their types are one table
// (trainOptions()); a config file with an unknown key or a value of the wrong type is refused
// with a UserError naming the key and what was expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace einjit::models {

struct TrainConfig {
  // The model and task: gpt2 (char-level text), mlp (image classifier), teacher (residual MLP
  // on the synthetic teacher-regression task).
  std::string model = "gpt2";
  std::string structure = "dense";  // key "struct"
  std::string layers = "all";       // gpt2: all | all_but_last | ffn
  int64_t nLayer = 4, nHead = 4, dModel = 256, context = 128;
  bool qkLayerNorm = false;
  double residualScale = 1.0;
  int64_t muPBaseWidth = 0;
  int64_t width = 64;           // mlp, teacher
  int64_t blocks = 3;           // teacher: residual blocks
  int64_t hiddenLayers = 2;     // mlp: structured hidden layers
  int64_t teacherWidth = 1024;  // teacher: hidden width of the teacher network
  std::string data;             // gpt2: a text file (default data/sotu.txt); mlp: an image .npz
  uint64_t seed = 0;
  std::string device = "cpu";    // cpu | cuda
  std::string precision = "f32";  // cuda: f32 | bf16 (autocast over f32 master weights)

  // Optimisation.
  int64_t steps = 1000;
  int64_t batch = 32;
  double lr = 3e-3;
  int64_t warmup = 0;
  std::string schedule = "constant";  // constant | cosine
  double finalLrFraction = 0.1;       // cosine: lr at the last step / lr
  double weightDecay = 0.0;
  double clip = 1.0;  // <= 0: no clipping
  double beta1 = 0.9, beta2 = 0.95;

  // Reporting and checkpoints (0 turns eval / periodic checkpoints off).
  int64_t evalEvery = 100;
  int64_t evalBatches = 4;
  int64_t checkpointEvery = 500;
  int64_t logEvery = 10;
  std::string out = "runs/latest";
};

struct TrainOption {
  std::string key;   // JSON key, e.g. "d_model"
  std::string flag;  // "--d-model"
  std::string type;  // "an integer", "a number", "a boolean", "a string", "a non-negative integer"
  std::string help;
};
const std::vector<TrainOption>& trainOptions();

// Applies the keys of a JSON object (the text of a config file; `origin` names it in errors) and
// returns them.
std::vector<std::string> applyTrainConfigJson(TrainConfig& config, const std::string& jsonText,
                                              const std::string& origin);
// Reads and applies a config file (UserError if it is missing or unreadable); returns its keys.
std::vector<std::string> applyTrainConfigFile(TrainConfig& config, const std::string& path);
// Applies one command-line value given as text for `key` (a key of trainOptions()).
void applyTrainOption(TrainConfig& config, const std::string& key, const std::string& valueText);

// Every key with its value, as a JSON object (what checkpoints store).
std::string trainConfigToJson(const TrainConfig& config);
// One key's value as JSON text ("256", "\"btt(rank=4)\"", "true").
std::string trainOptionJson(const TrainConfig& config, const std::string& key);

// Checks values and choices (steps >= 1, schedule constant|cosine, ...): UserError naming the key.
void validateTrainConfig(const TrainConfig& config);

// The keys that define the model (architecture, structure, init seed): a checkpoint can only be
// resumed with the same values.
bool isModelKey(const std::string& key);

}  // namespace einjit::models
