// einjit demo: its argument errors, and a very short run on a small generated corpus whose table
// must show both models below the uniform loss ln 96, the unigram baseline of the corpus
// (computed here), about equal compute for both models, and a sample, the same on a second run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/tools/RunEinjit.h"

namespace fs = std::filesystem;

namespace {

using Result = einjit::testing::CliResult;
using einjit::testing::readFile;

// A learnable corpus: sentences built from a few words by a fixed LCG, 20,000 characters.
std::string generatedCorpus() {
  const std::vector<std::string> words = {"the", "nation", "congress", "shall", "and", "of",
                                          "people", "we", "will", "work", "for", "peace"};
  std::string text;
  uint64_t state = 7;
  int wordsInSentence = 0;
  while (text.size() < 20000) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    text += words[(state >> 33) % words.size()];
    if (++wordsInSentence == 8) {
      text += ".\n";
      wordsInSentence = 0;
    } else {
      text += ' ';
    }
  }
  return text;
}

// Entropy (nats) of the character frequencies of the training split: all but the last 10%.
double trainingSplitEntropy(const std::string& text) {
  const size_t trainSize = text.size() - text.size() / 10;
  std::map<char, double> counts;
  for (size_t i = 0; i < trainSize; ++i) counts[text[i]] += 1;
  double entropy = 0;
  for (const auto& [c, count] : counts) entropy -= count / trainSize * std::log(count / trainSize);
  return entropy;
}

class DemoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("einjit_demo_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `einjit demo ARGS` in the test's directory (so the default data/sotu.txt is absent).
  Result demo(const std::string& args) { return einjit::testing::runEinjit(dir_, "demo " + args); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// The whitespace-separated fields of the first line of `out` that starts with `prefix`.
std::vector<std::string> rowFields(const std::string& out, const std::string& prefix) {
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line))
    if (line.rfind(prefix, 0) == 0) {
      std::istringstream fields(line.substr(prefix.size()));
      std::vector<std::string> result;
      for (std::string field; fields >> field;) result.push_back(field);
      return result;
    }
  return {};
}

TEST_F(DemoTest, MissingDefaultCorpusSaysHowToFetchIt) {
  Result r = demo("");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("data/sotu.txt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("run ./setup.sh or scripts/fetch_data.sh"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("step"), std::string::npos);
}

TEST_F(DemoTest, MissingOrEmptyDataFileIsAUserError) {
  Result missing = demo("--data nowhere.txt");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err.find("nowhere.txt"), std::string::npos) << missing.err;

  std::ofstream(path("empty.txt")).close();
  Result empty = demo("--data empty.txt");
  EXPECT_EQ(empty.status, 1);
  EXPECT_NE(empty.err.find("empty.txt"), std::string::npos) << empty.err;
  EXPECT_EQ(empty.err.find("internal error"), std::string::npos) << empty.err;
}

TEST_F(DemoTest, BadSecondsAreRefused) {
  std::ofstream(path("corpus.txt")) << generatedCorpus();
  for (const char* seconds : {"0", "-5", "nan", "inf", "1e9", "abc"}) {
    Result r = demo(std::string("--data corpus.txt --seconds ") + seconds);
    EXPECT_EQ(r.status, 1) << seconds;
    EXPECT_NE(r.err.find("--seconds"), std::string::npos) << seconds << ": " << r.err;
    EXPECT_EQ(r.out.find("step"), std::string::npos) << seconds;
  }
}

TEST_F(DemoTest, ExistingRunInOutIsNotOverwritten) {
  std::ofstream(path("corpus.txt")) << generatedCorpus();
  fs::create_directories(dir_ / "runs" / "dense");
  std::ofstream(dir_ / "runs" / "dense" / "checkpoint.npz") << "an earlier run";
  Result r = demo("--data corpus.txt --seconds 2 --out runs");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  EXPECT_EQ(readFile(dir_ / "runs" / "dense" / "checkpoint.npz"), "an earlier run");
  EXPECT_FALSE(fs::exists(dir_ / "runs" / "btt" / "checkpoint.npz"));
}

TEST_F(DemoTest, ShortRunPrintsTheTableAndASample) {
  const std::string corpus = generatedCorpus();
  std::ofstream(path("corpus.txt")) << corpus;
  Result r = demo("--data corpus.txt --seconds 6 --out runs");
  ASSERT_EQ(r.status, 0) << r.out << r.err;

  EXPECT_NE(r.out.find("structure"), std::string::npos) << r.out;
  std::vector<std::string> btt = rowFields(r.out, "btt(");
  std::vector<std::string> dense = rowFields(r.out, "dense ");
  // btt row: "rank=1," "norm)" then d_model params MACs/token steps tokens compute loss.
  ASSERT_GE(btt.size(), 7u) << r.out;
  ASSERT_EQ(dense.size(), 7u) << r.out;
  const size_t b = btt.size() - 7;
  const double lnVocab = std::log(96.0);
  for (const std::vector<std::string>* row : {&btt, &dense}) {
    const size_t o = row == &btt ? b : 0;
    const double loss = std::stod((*row)[o + 6]);
    EXPECT_TRUE(std::isfinite(loss)) << r.out;
    EXPECT_LT(loss, lnVocab) << r.out;
    EXPECT_GT(loss, 0.0) << r.out;
    // tokens seen = steps x batch 16 x context 128.
    EXPECT_EQ(std::stoll((*row)[o + 4]), std::stoll((*row)[o + 3]) * 16 * 128) << r.out;
  }
  EXPECT_EQ(std::stoll(btt[b + 0]), 256);
  EXPECT_LT(std::stoll(dense[0]), 256);
  EXPECT_EQ(btt[b + 3], dense[3]);  // same steps
  // Same compute within 10%: MACs/token close, same tokens.
  const double bttMacs = std::stod(btt[b + 2]), denseMacs = std::stod(dense[2]);
  EXPECT_NEAR(denseMacs / bttMacs, 1.0, 0.1) << r.out;

  std::vector<std::string> unigram = rowFields(r.out, "unigram baseline");
  ASSERT_EQ(unigram.size(), 1u) << r.out;
  EXPECT_NEAR(std::stod(unigram[0]), trainingSplitEntropy(corpus), 1e-4);

  const size_t sample = r.out.find("characters sampled from the BTT model");
  ASSERT_NE(sample, std::string::npos) << r.out;
  EXPECT_GT(r.out.size() - sample, 300u);
  EXPECT_TRUE(fs::exists(dir_ / "runs" / "btt" / "checkpoint.npz"));
  EXPECT_TRUE(fs::exists(dir_ / "runs" / "dense" / "metrics.jsonl"));

  // Reproducible: a second run prints the same table and sample (the progress lines hold timings).
  Result again = demo("--data corpus.txt --seconds 6");
  ASSERT_EQ(again.status, 0) << again.out << again.err;
  const size_t table = r.out.find("\nstructure"), tableAgain = again.out.find("\nstructure");
  ASSERT_NE(tableAgain, std::string::npos) << again.out;
  const size_t end = r.out.find("\ncheckpoints and metrics in");
  ASSERT_NE(end, std::string::npos) << r.out;
  EXPECT_EQ(again.out.substr(tableAgain), r.out.substr(table, end - table));
}

}  // namespace
