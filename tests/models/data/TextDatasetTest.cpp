#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "models/data/CharTokenizer.h"
#include "models/data/TextDataset.h"
#include "tests/models/data/TestFiles.h"

namespace einjit::data {
namespace {

using testing::expectUserError;
using testing::ScratchDir;

// 40 distinct characters: the first 36 (a..z, A..J) are the training split, "KLMN" validation.
const std::string kCorpus = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN";

std::vector<int32_t> ids(const std::string& text) { return CharTokenizer().encode(text); }

// The inputs and targets of windows starting at `starts` in `text` (context 3).
void expectWindows(const TokenBatch& batch, const std::string& text,
                   const std::vector<int>& starts) {
  ASSERT_EQ(batch.batchSize, static_cast<int64_t>(starts.size()));
  ASSERT_EQ(batch.context, 3);
  std::string inputs, targets;
  for (int s : starts) inputs += text.substr(s, 3), targets += text.substr(s + 1, 3);
  EXPECT_EQ(batch.inputs, ids(inputs));
  EXPECT_EQ(batch.targets, ids(targets));
}

TEST(TextDataset, SplitsOffTheLastTenPercent) {
  ScratchDir dir;
  const TextDataset data = TextDataset::loadCharText(dir.write("c.txt", kCorpus), 3, 7);
  EXPECT_EQ(data.tokens(Split::Train), ids(kCorpus.substr(0, 36)));
  EXPECT_EQ(data.tokens(Split::Validation), ids("KLMN"));
  // 45 tokens: floor(4.5) = 4 for validation.
  const TextDataset odd(ids(kCorpus + "OPQRS"), 3, 7, "odd");
  EXPECT_EQ(odd.tokens(Split::Train).size(), 41u);
  EXPECT_EQ(odd.tokens(Split::Validation), ids("PQRS"));
}

// Window starts from tests/models/data/make_sampling_cases.py.
TEST(TextDataset, BatchesAreExactSeededWindows) {
  ScratchDir dir;
  const TextDataset data = TextDataset::loadCharText(dir.write("c.txt", kCorpus), 3, 7);
  const std::string train = kCorpus.substr(0, 36);
  expectWindows(data.batch(Split::Train, 5, 0), train, {8, 16, 7, 25, 0});
  expectWindows(data.batch(Split::Train, 5, 1), train, {2, 16, 21, 23, 1});
  // The validation split has a single window.
  expectWindows(data.batch(Split::Validation, 2, 0), "KLMN", {0, 0});
}

TEST(TextDataset, BatchesDependOnlyOnSeedAndStep) {
  std::vector<int32_t> tokens;
  for (int i = 0; i < 5000; ++i) tokens.push_back(i % 96);
  const TextDataset a(tokens, 16, 99, "a"), b(tokens, 16, 99, "b"), c(tokens, 16, 100, "c");
  const TokenBatch a5 = a.batch(Split::Train, 8, 5);
  a.batch(Split::Train, 8, 6);  // drawing other batches first changes nothing
  const TokenBatch b5 = b.batch(Split::Train, 8, 5);
  EXPECT_EQ(a5.inputs, b5.inputs);
  EXPECT_EQ(a5.targets, b5.targets);
  EXPECT_NE(a5.inputs, a.batch(Split::Train, 8, 6).inputs);
  EXPECT_NE(a5.inputs, c.batch(Split::Train, 8, 5).inputs);
  EXPECT_EQ(a5.inputs.size(), 8u * 16u);
}

TEST(TextDataset, ReportsFileErrors) {
  ScratchDir dir;
  expectUserError([&] { TextDataset::loadCharText(dir.file("absent.txt"), 3, 1); },
                  {"absent.txt", "cannot open"});
  const std::string empty = dir.write("empty.txt", "");
  expectUserError([&] { TextDataset::loadCharText(empty, 3, 1); }, {"empty.txt", "empty"});
  // 20 tokens: training 18, validation 2 < context + 1 = 4.
  const std::string shortFile = dir.write("short.txt", kCorpus.substr(0, 20));
  expectUserError([&] { TextDataset::loadCharText(shortFile, 3, 1); },
                  {"short.txt", "20 tokens", "18", "of 2", "4"});
  const std::string tab = dir.write("tab.txt", kCorpus + "\t");
  expectUserError([&] { TextDataset::loadCharText(tab, 3, 1); }, {"tab.txt", "'\\t'", "offset 40"});
}

TEST(TextDataset, RejectsBadSizes) {
  const std::vector<int32_t> tokens = ids(kCorpus);
  expectUserError([&] { TextDataset(tokens, 0, 1, "t"); }, {"context", "0"});
  const TextDataset data(tokens, 3, 1, "t");
  expectUserError([&] { data.batch(Split::Train, 0, 0); }, {"batch size", "0"});
  expectUserError([&] { data.batch(Split::Train, int64_t{1} << 40, 0); }, {"limit"});
}

TEST(TextDataset, LoadsTheStateOfTheUnionCorpus) {
  EINJIT_REQUIRE_DATA_FILE("sotu.txt");
  const TextDataset data = TextDataset::loadCharText(testing::dataFile("sotu.txt"), 128, 1);
  const auto total = data.tokens(Split::Train).size() + data.tokens(Split::Validation).size();
  EXPECT_GT(total, 9'000'000u);
  EXPECT_EQ(data.tokens(Split::Validation).size(), total / 10);
  const TokenBatch batch = data.batch(Split::Validation, 4, 0);
  EXPECT_EQ(batch.inputs.size(), 4u * 128u);
}

}  // namespace
}  // namespace einjit::data
