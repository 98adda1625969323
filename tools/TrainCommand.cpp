// einjit train: train a GPT or an MLP whose linear layers are any structure (models/Trainer.h).
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "models/Checkpoint.h"
#include "models/ModelParts.h"
#include "models/TrainConfig.h"
#include "models/Trainer.h"
#include "tools/Commands.h"
#include "tools/InterruptGuard.h"

namespace einjit::cli {

namespace {

struct TrainOptions {
  std::string configFile;
  bool resume = false;
  std::map<std::string, std::string> values;      // by key, as typed
  std::map<std::string, CLI::Option*> options;  // by key
};

void runTrain(const TrainOptions& o) {
  models::TrainConfig requested;
  std::vector<std::string> given;
  if (!o.configFile.empty()) given = models::applyTrainConfigFile(requested, o.configFile);
  for (const auto& [key, option] : o.options) {
    if (option->count() == 0) continue;
    models::applyTrainOption(requested, key, o.values.at(key));
    given.push_back(key);
  }

  std::unique_ptr<models::Trainer> trainer;
  if (o.resume) {
    const std::string path = (std::filesystem::path(requested.out) / "checkpoint.npz").string();
    const models::Checkpoint checkpoint = models::readCheckpoint(path);
    trainer = std::make_unique<models::Trainer>(models::resumedConfig(checkpoint, path, requested, given), &checkpoint);
    std::cout << "resuming " << path << " at step " << trainer->step() << "\n";
  } else {
    trainer = std::make_unique<models::Trainer>(requested);
  }
  const models::TrainConfig& c = trainer->config();
  std::cout << "model " << c.model << ", struct " << c.structure << (c.model == "gpt2" ? ", layers " + c.layers : "")
            << ": " << models::parameterCount(trainer->task().parameters()) << " parameters, "
            << trainer->task().macsPerExample() << " MACs per example; " << c.steps << " steps of batch "
            << c.batch << "; output in " << c.out << std::endl;
  if (c.device != "cpu") std::cout << "training on " << trainer->deviceDescription() << std::endl;

  InterruptGuard guard;
  const models::TrainOutcome outcome = trainer->run(std::cout);
  if (!outcome.interrupted) std::cout << "done: checkpoint " << trainer->checkpointPath() << ", metrics "
                                      << trainer->metricsPath() << std::endl;
}

}  // namespace

void addTrainCommand(CLI::App& app) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a model whose linear layers are a structure: a char-level GPT (--model gpt2, on "
      "data/sotu.txt by default), an MLP image classifier (mlp) or the residual MLP of the teacher "
      "task (teacher). Prints progress, writes OUT/metrics.jsonl and OUT/checkpoint.npz (every "
      "--checkpoint-every steps, at the end and on Ctrl-C); --resume continues it bit-identically.");
  cmd->add_option("--config", o->configFile, "JSON file of options (keys as the options below, with _ for -); "
                                             "command-line options override it");
  cmd->add_flag("--resume", o->resume, "continue the run whose checkpoint is OUT/checkpoint.npz");
  // An option given twice takes its last value, so scripts can append overrides.
  for (const models::TrainOption& option : models::trainOptions())
    o->options[option.key] =
        cmd->add_option(option.flag, o->values[option.key], option.help + " (" + option.type + ")")
            ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  cmd->callback([o] { runTrain(*o); });
}

}  // namespace einjit::cli
