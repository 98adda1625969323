#include <gtest/gtest.h>

#include "models/data/CharTokenizer.h"
#include "tests/models/data/TestFiles.h"

namespace einjit::data {
namespace {

using testing::expectUserError;

TEST(CharTokenizer, KnownIds) {
  CharTokenizer tok;
  EXPECT_EQ(tok.vocabSize(), 96);
  // '\n' = 0, ' ' (32) = 1, '!' = 2, 'A' (65) = 34, 'a' (97) = 66, '~' (126) = 95.
  EXPECT_EQ(tok.encode("\n !Aa~"), (std::vector<int32_t>{0, 1, 2, 34, 66, 95}));
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(CharTokenizer, RoundTripsEverySymbol) {
  CharTokenizer tok;
  std::string all = "\n";
  for (int c = 32; c <= 126; ++c) all.push_back(static_cast<char>(c));
  const std::vector<int32_t> ids = tok.encode(all);
  ASSERT_EQ(ids.size(), 96u);
  for (int32_t i = 0; i < 96; ++i) EXPECT_EQ(ids[i], i);
  EXPECT_EQ(tok.decode(ids), all);
}

TEST(CharTokenizer, RejectsCharactersOutsideTheVocabulary) {
  CharTokenizer tok;
  expectUserError([&] { tok.encode("ab\tc"); }, {"'\\t'", "offset 2", "line 1"});
  expectUserError([&] { tok.encode("ok\nnaïve"); }, {"byte 0xC3", "offset 5", "line 2"});
  expectUserError([&] { tok.encode(std::string("a\0b", 3)); }, {"byte 0x00", "offset 1"});
  expectUserError([&] { tok.encode("x\r\n"); }, {"'\\r'", "offset 1"});
  expectUserError([&] { tok.encode("\x7f"); }, {"byte 0x7F", "offset 0"});
}

TEST(CharTokenizer, RejectsIdsOutsideTheVocabulary) {
  CharTokenizer tok;
  const std::vector<int32_t> negative{1, -1};
  const std::vector<int32_t> tooLarge{96};
  expectUserError([&] { tok.decode(negative); }, {"-1", "position 1"});
  expectUserError([&] { tok.decode(tooLarge); }, {"96", "position 0"});
}

}  // namespace
}  // namespace einjit::data
