// einjit sample CHECKPOINT --prompt TEXT: generate text with a trained char-level GPT.
#include <iostream>
#include <memory>
#include <string>

#include "einjit/error.h"
#include "models/Checkpoint.h"
#include "models/Gpt.h"
#include "models/Sampler.h"
#include "models/TrainConfig.h"
#include "models/Trainer.h"
#include "models/data/CharTokenizer.h"
#include "tools/Commands.h"

namespace einjit::cli {

namespace {

struct SampleCommandOptions {
  std::string checkpoint;
  std::string prompt = "\n";
  models::SampleOptions sample;
};

void runSample(const SampleCommandOptions& o) {
  const models::Checkpoint checkpoint = models::readCheckpoint(o.checkpoint);
  models::TrainConfig config;
  models::applyTrainConfigJson(config, checkpoint.configJson, "the config stored in checkpoint '" + o.checkpoint + "'");
  if (config.model != "gpt2")
    throw UserError("checkpoint '" + o.checkpoint + "' holds a '" + config.model +
                    "' model; einjit sample needs a gpt2 (char-level text) checkpoint");
  const models::Gpt model(models::charGptConfig(config));
  models::loadTensorsInto(checkpoint.params, model.parameters(), "checkpoint '" + o.checkpoint + "'");

  const data::CharTokenizer tokenizer;
  const std::string prompt = o.prompt.empty() ? "\n" : o.prompt;
  const std::vector<int32_t> generated = models::sampleTokens(model, tokenizer.encode(prompt), o.sample);
  std::cout << prompt << tokenizer.decode(generated) << std::endl;
}

}  // namespace

void addSampleCommand(CLI::App& app) {
  auto o = std::make_shared<SampleCommandOptions>();
  CLI::App* cmd = app.add_subcommand("sample", "Generate text with a char-level GPT trained by `einjit train`");
  cmd->add_option("CHECKPOINT", o->checkpoint, "checkpoint.npz written by einjit train --model gpt2")->required();
  cmd->add_option("--prompt", o->prompt, "text to continue (printable ASCII and newlines; default a newline)");
  cmd->add_option("--tokens", o->sample.tokens, "characters to generate")->capture_default_str();
  cmd->add_option("--temperature", o->sample.temperature, "sampling temperature (0: greedy)")->capture_default_str();
  cmd->add_option("--top-k", o->sample.topK, "sample among the K most likely characters (0: all)")->capture_default_str();
  cmd->add_option("--seed", o->sample.seed, "seed of the sampling")->capture_default_str();
  cmd->callback([o] { runSample(*o); });
}

}  // namespace einjit::cli
