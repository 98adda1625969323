// einjit demo: the README's default job. Trains a BTT char-GPT and a dense char-GPT of about the
// same training compute on the SOTU corpus, prints their validation losses next to the unigram
// baseline, and samples some text from the BTT model.
//
// Fairness: both models see the same batches (same seed, batch size and step count), and the
// dense model is made narrower until its forward MACs per token match the BTT model's, so
// compute = MACs per example x examples seen is about the same for both.
// Reproducibility: the step count follows from --seconds through a fixed per-step cost, never
// from the clock, and training is deterministic, so every run prints the same numbers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include "compiler/cuda/CudaDriver.h"
#include "einjit/error.h"
#include "models/Gpt.h"
#include "models/ModelParts.h"
#include "models/Sampler.h"
#include "models/TrainConfig.h"
#include "models/Trainer.h"
#include "models/data/CharTokenizer.h"
#include "models/data/TextDataset.h"
#include "tools/Commands.h"
#include "tools/InterruptGuard.h"

namespace einjit::cli {

namespace {

namespace fs = std::filesystem;

// The recipe (structures.md section 6, char-level GPT: lr 3e-3, warmup then constant), shortened:
// a small batch buys more steps in a few minutes, and the warmup is a tenth of the run.
constexpr const char* kBttStructure = "btt(rank=1, norm)";
constexpr const char* kLayers = "all_but_last";
constexpr int64_t kLayerCount = 4, kHeads = 4, kBttWidth = 256, kContext = 128, kBatch = 16;
constexpr double kLearningRate = 3e-3;
constexpr int64_t kEvalBatches = 8;
constexpr uint64_t kSeed = 0;

// Seconds per training step of each model, evaluations and kernel compiles included, on the
// quiet 2-core development machine (about 11,000 and 36,000 tokens/s at batch 16). They only
// turn --seconds into a step count and an expected time: the run itself never reads the clock.
constexpr double kBttSecondsPerStep = 0.2, kDenseSecondsPerStep = 0.06;

constexpr const char* kSamplePrompt = "\n";
constexpr int64_t kSampleCharacters = 300;
constexpr double kSampleTemperature = 0.8;
constexpr uint64_t kSampleSeed = 1;

struct DemoOptions {
  double seconds = 240;
  std::string out;  // empty: a temporary directory, removed at the end
  std::string data = "data/sotu.txt";
  bool dataGiven = false;
  std::string device = "auto";  // auto: cuda when a GPU is usable, else cpu
};

// Removes the directory it was given when it goes out of scope (the default output directory).
class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    std::error_code ec;
    fs::path base = fs::temp_directory_path(ec);
    if (ec) base = "/tmp";
    path_ = base / ("einjit-demo-" + std::to_string(::getpid()));
    fs::remove_all(path_, ec);
    if (!fs::create_directories(path_, ec) || ec)
      throw UserError("cannot create the temporary directory '" + path_.string() + "'" +
                      (ec ? ": " + ec.message() : "") + "; pass --out DIR");
  }
  ~TemporaryDirectory() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Entropy (nats) of the character frequencies of `tokens`: the loss of the best predictor that
// ignores the context.
double unigramEntropy(const std::vector<int32_t>& tokens) {
  std::vector<double> counts(data::CharTokenizer::kVocabSize, 0.0);
  for (int32_t token : tokens) counts[static_cast<size_t>(token)] += 1;
  const double total = static_cast<double>(tokens.size());
  double entropy = 0;
  for (double count : counts)
    if (count > 0) entropy -= count / total * std::log(count / total);
  return entropy;
}

// Forward MACs per example of a dense char-GPT of width `d` (Gpt::macsPerExample's count: every
// linear layer per token, q/k/v/proj d x d and the FFN d x 4d twice, the head d x vocab, plus
// attention's d * T * (T + 1) per layer).
double denseMacsPerExample(int64_t d) {
  const double width = static_cast<double>(d), tokens = static_cast<double>(kContext);
  const double perToken = static_cast<double>(kLayerCount) * 12.0 * width * width +
                          width * static_cast<double>(data::CharTokenizer::kVocabSize);
  return tokens * perToken + static_cast<double>(kLayerCount) * width * tokens * (tokens + 1);
}

// The width (a multiple of the head count, at most the BTT model's) whose dense model has the
// forward MACs per example closest to `macs`.
int64_t denseWidthMatching(int64_t macs) {
  int64_t best = kHeads;
  for (int64_t d = kHeads; d <= kBttWidth; d += kHeads)
    if (std::abs(denseMacsPerExample(d) - static_cast<double>(macs)) <
        std::abs(denseMacsPerExample(best) - static_cast<double>(macs)))
      best = d;
  return best;
}

models::TrainConfig demoConfig(const std::string& structure, int64_t width, int64_t steps,
                               const std::string& data, const std::string& device, const fs::path& out) {
  models::TrainConfig c;
  c.device = device;
  c.model = "gpt2";
  c.structure = structure;
  c.layers = kLayers;
  c.nLayer = kLayerCount;
  c.nHead = kHeads;
  c.dModel = width;
  c.context = kContext;
  c.data = data;
  c.seed = kSeed;
  c.steps = steps;
  c.batch = kBatch;
  c.lr = kLearningRate;
  c.warmup = steps / 10;
  c.schedule = "constant";
  c.evalEvery = (steps + 3) / 4;  // four evaluations, the last at the end
  c.evalBatches = kEvalBatches;
  c.checkpointEvery = 0;
  c.logEvery = std::max<int64_t>(1, steps / 20);
  c.out = out.string();
  return c;
}

std::string formatMinutes(double seconds) {
  const long long s = std::llround(seconds);
  char text[32];
  std::snprintf(text, sizeof text, "%lldm%02llds", s / 60, s % 60);
  return text;
}

struct RunSummary {
  std::string structure;
  int64_t width = 0, params = 0, macsPerExample = 0, steps = 0;
  double validationLoss = 0;
};

void printTable(const std::vector<RunSummary>& runs, double unigram) {
  std::printf("\n%-20s %7s %9s %10s %6s %12s %10s %9s\n", "structure", "d_model", "params", "MACs/token",
              "steps", "tokens seen", "compute", "val loss");
  for (const RunSummary& r : runs) {
    const int64_t examples = r.steps * kBatch;
    std::printf("%-20s %7lld %9lld %10lld %6lld %12lld %10.3g %9.4f\n", r.structure.c_str(),
                static_cast<long long>(r.width), static_cast<long long>(r.params),
                static_cast<long long>(r.macsPerExample / kContext), static_cast<long long>(r.steps),
                static_cast<long long>(examples * kContext),
                static_cast<double>(r.macsPerExample) * static_cast<double>(examples), r.validationLoss);
  }
  std::printf("%-20s %7s %9s %10s %6s %12s %10s %9.4f\n", "unigram baseline", "", "", "", "", "", "",
              unigram);
  std::printf("(compute = forward MACs per example x examples seen; val loss in nats per character, "
              "the mean over %lld fixed validation batches; unigram baseline = entropy of the training "
              "split's character frequencies, the best loss without context; ln 96 = %.4f)\n",
              static_cast<long long>(kEvalBatches), std::log(96.0));
}

// Trains one model to its last step; false (after saying so) if Ctrl-C stopped it.
bool train(models::Trainer& trainer, const std::string& title, RunSummary& summary) {
  const models::TrainConfig& c = trainer.config();
  summary = RunSummary{c.structure, c.dModel, models::parameterCount(trainer.task().parameters()),
                       trainer.task().macsPerExample(), c.steps, 0};
  std::printf("\n== %s: %s, d_model %lld, %lld parameters, %lld MACs/token; %lld steps of batch %lld, "
              "warmup %lld ==\n",
              title.c_str(), c.structure.c_str(), static_cast<long long>(c.dModel),
              static_cast<long long>(summary.params), static_cast<long long>(summary.macsPerExample / kContext),
              static_cast<long long>(c.steps), static_cast<long long>(c.batch), static_cast<long long>(c.warmup));
  std::fflush(stdout);
  const models::TrainOutcome outcome = trainer.run(std::cout);
  summary.validationLoss = outcome.lastEvalLoss;
  if (outcome.interrupted) std::printf("demo interrupted\n");
  return !outcome.interrupted;
}

void runDemo(const DemoOptions& o) {
  if (o.device != "auto" && o.device != "cpu" && o.device != "cuda")
    throw UserError("--device: expected auto, cpu or cuda, got '" + o.device + "'");
  const std::string device = o.device != "auto" ? o.device : cuda::cudaAvailable() ? "cuda" : "cpu";
  if (!std::isfinite(o.seconds) || o.seconds < 1 || o.seconds > 7 * 24 * 3600)
    throw UserError(fmt::format("--seconds must be a number of seconds from 1 to 604800 (one week), got {}",
                                o.seconds));
  if (!fs::is_regular_file(o.data))
    throw UserError(o.dataGiven ? "--data '" + o.data + "' is not a file"
                                : "the corpus '" + o.data + "' is missing: run ./setup.sh or scripts/fetch_data.sh "
                                  "(from the repository root) to download it, or pass --data FILE");

  std::unique_ptr<TemporaryDirectory> temporary;
  fs::path out;
  if (o.out.empty()) {
    temporary = std::make_unique<TemporaryDirectory>();
    out = temporary->path();
  } else {
    out = o.out;
    for (const char* run : {"btt", "dense"})
      for (const char* file : {"checkpoint.npz", "metrics.jsonl"})
        if (fs::exists(out / run / file))
          throw UserError("'" + (out / run / file).string() +
                          "' already exists: the demo does not overwrite runs; choose another --out");
  }

  const int64_t steps = std::max<int64_t>(
      1, std::llround(o.seconds / (kBttSecondsPerStep + kDenseSecondsPerStep)));
  const data::TextDataset corpus = data::TextDataset::loadCharText(o.data, kContext, kSeed);
  const double unigram = unigramEntropy(corpus.tokens(data::Split::Train));
  std::printf("einjit demo: a BTT char-GPT against a dense char-GPT of the same training compute on '%s' "
              "(%zu training, %zu validation characters)\n",
              o.data.c_str(), corpus.tokens(data::Split::Train).size(),
              corpus.tokens(data::Split::Validation).size());
  std::printf("%lld layers, %lld heads, context %lld, the structure on every linear layer but the head; AdamW "
              "lr %g (warmup then constant), seed %llu. Both models see the same batches; the dense one is "
              "narrower so that its MACs per token match.\n",
              static_cast<long long>(kLayerCount), static_cast<long long>(kHeads), static_cast<long long>(kContext),
              kLearningRate, static_cast<unsigned long long>(kSeed));
  std::printf("%lld steps per model: expected to take about %s on a 2-core CPU (less on a GPU); the numbers "
              "are the same on every run on one device.\n",
              static_cast<long long>(steps), formatMinutes(static_cast<double>(steps) *
                                                           (kBttSecondsPerStep + kDenseSecondsPerStep)).c_str());

  InterruptGuard guard;
  models::Trainer btt(demoConfig(kBttStructure, kBttWidth, steps, o.data, device, out / "btt"));
  if (device != "cpu")
    std::printf("training on %s (--device cpu trains on the CPU)\n", btt.deviceDescription().c_str());
  const int64_t denseWidth = denseWidthMatching(btt.task().macsPerExample());
  std::vector<RunSummary> runs(2);
  if (!train(btt, "1/2 BTT", runs[0])) return;
  models::Trainer dense(demoConfig("dense", denseWidth, steps, o.data, device, out / "dense"));
  if (!train(dense, "2/2 dense, same compute", runs[1])) return;
  printTable(runs, unigram);

  // Sample from the trained BTT model: a fresh Gpt of the same config with its parameters.
  const models::Gpt model(models::charGptConfig(btt.config()));
  std::map<std::string, Tensor> trained;
  for (const rt::ParameterInfo& p : btt.task().parameters()) trained[p.var->name] = p.var->value;
  models::loadTensorsInto(trained, model.parameters(), "the trained BTT model");
  const data::CharTokenizer tokenizer;
  models::SampleOptions sample;
  sample.tokens = kSampleCharacters;
  sample.temperature = kSampleTemperature;
  sample.seed = kSampleSeed;
  const std::vector<int32_t> text = models::sampleTokens(model, tokenizer.encode(kSamplePrompt), sample);
  std::printf("\n== %lld characters sampled from the BTT model (temperature %g, seed %llu) ==\n%s%s\n",
              static_cast<long long>(kSampleCharacters), kSampleTemperature,
              static_cast<unsigned long long>(kSampleSeed), kSamplePrompt, tokenizer.decode(text).c_str());
  if (!o.out.empty())
    std::printf("\ncheckpoints and metrics in %s (einjit sample %s --prompt 'The ')\n", out.string().c_str(),
                (out / "btt" / "checkpoint.npz").string().c_str());
}

}  // namespace

void addDemoCommand(CLI::App& app) {
  auto o = std::make_shared<DemoOptions>();
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "Train a BTT char-GPT and a dense char-GPT of the same training compute on the SOTU corpus, "
      "print their validation losses next to the unigram baseline, and sample from the BTT model");
  cmd->add_option("--seconds", o->seconds,
                  "about how long both runs take together on a 2-core CPU; sets the step count")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "keep the checkpoints and metrics in DIR/btt and DIR/dense "
                                   "(default: a temporary directory, removed at the end)");
  cmd->add_option_function<std::string>(
      "--data",
      [o](const std::string& path) {
        o->data = path;
        o->dataGiven = true;
      },
      "text corpus (printable ASCII and newlines; default data/sotu.txt)");
  cmd->add_option("--device", o->device, "where to train: auto (the GPU when one is usable, else the CPU), cpu or cuda")
      ->capture_default_str();
  cmd->callback([o] { runDemo(*o); });
}

}  // namespace einjit::cli
