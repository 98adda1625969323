// Helpers of the model tests: a scratch directory per test and small generated data files.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "models/TrainConfig.h"

namespace einjit::models::testing {

// A fresh directory named after the running test, removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string("einjit_models_") + info->test_suite_name() + "_" + info->name();
    for (char& c : name)
      if (c == '/') c = '_';
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void writeText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A small, very predictable corpus: one sentence repeated (about 5 KB).
inline std::string repetitiveCorpus() {
  std::string text;
  for (int i = 0; i < 120; ++i) text += "the cat sat on the mat.\n";
  return text;
}

// A tiny char-GPT run on repetitiveCorpus(), written into `dir`: each step takes milliseconds.
// Its output goes to dir/out; steps are the caller's.
inline TrainConfig tinyGptConfig(const ScratchDir& dir, const std::string& out = "run") {
  writeText(dir / "corpus.txt", repetitiveCorpus());
  TrainConfig c;
  c.model = "gpt2";
  c.data = dir / "corpus.txt";
  c.nLayer = 1;
  c.nHead = 2;
  c.dModel = 16;
  c.context = 8;
  c.batch = 4;
  c.structure = "btt(rank=2)";
  c.layers = "all_but_last";
  c.lr = 1e-2;
  c.warmup = 3;
  c.schedule = "cosine";
  c.evalEvery = 5;
  c.evalBatches = 2;
  c.checkpointEvery = 0;
  c.logEvery = 1;
  c.out = dir / out;
  return c;
}

}  // namespace einjit::models::testing
