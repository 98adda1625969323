#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "models/data/BpeTokenizer.h"
#include "tests/models/data/TestFiles.h"

namespace einjit::data {
namespace {

using testing::expectUserError;
using testing::ScratchDir;

// GPT-2's bytes_to_unicode, written out from its definition: printable bytes stand for
// themselves, the 68 others map to U+0100.. in byte order. Returns each byte's UTF-8 symbol.
std::vector<std::string> byteSymbols() {
  std::vector<std::string> symbols;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int cp = printable ? b : next++;
    std::string utf8;
    if (cp < 0x80) {
      utf8.push_back(static_cast<char>(cp));
    } else {
      utf8.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      utf8.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    symbols.push_back(utf8);
  }
  return symbols;
}

// A tiny vocabulary: byte b has id b, then "ab" = 256, "abc" = 257, "aa" = 258, with the merges
// (a, b), (ab, c), (a, a) in rank order.
nlohmann::json tinyEncoder() {
  nlohmann::json encoder = nlohmann::json::object();
  const std::vector<std::string> symbols = byteSymbols();
  for (int b = 0; b < 256; ++b) encoder[symbols[b]] = b;
  encoder["ab"] = 256;
  encoder["abc"] = 257;
  encoder["aa"] = 258;
  return encoder;
}
const char* kTinyMerges = "#version: 0.2\na b\nab c\na a\n";

struct TinyFiles {
  ScratchDir dir;
  std::string encoder, merges;
  explicit TinyFiles(const std::string& encoderText = tinyEncoder().dump(),
                     const std::string& mergesText = kTinyMerges)
      : encoder(dir.write("encoder.json", encoderText)),
        merges(dir.write("vocab.bpe", mergesText)) {}
};

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> words;
  for (std::string_view w : splitGpt2Words(text)) words.emplace_back(w);
  return words;
}

TEST(BpeTokenizer, MergesByRankOnATinyVocabulary) {
  TinyFiles files;
  const BpeTokenizer tok(files.encoder, files.merges);
  EXPECT_EQ(tok.vocabSize(), 259);
  using Ids = std::vector<int32_t>;
  EXPECT_EQ(tok.encode("abc"), (Ids{257}));      // (a,b) then (ab,c)
  EXPECT_EQ(tok.encode("aab"), (Ids{97, 256}));  // (a,b) ranks before (a,a)
  EXPECT_EQ(tok.encode("aaaa"), (Ids{258, 258}));
  EXPECT_EQ(tok.encode("aaa"), (Ids{258, 97}));         // left to right
  EXPECT_EQ(tok.encode("ab ab"), (Ids{256, 32, 256}));  // " ab" starts with the space byte
  EXPECT_EQ(tok.encode("cab"), (Ids{99, 256}));
  EXPECT_EQ(tok.decode(Ids{257, 32, 258, 10}), "abc aa\n");
}

TEST(BpeTokenizer, PreTokenisesHandPickedCases) {
  using Words = std::vector<std::string>;
  EXPECT_EQ(split("Hello  world\n\n"), (Words{"Hello", " ", " world", "\n\n"}));
  EXPECT_EQ(split("I'm 42 ok!!"), (Words{"I", "'m", " 42", " ok", "!!"}));
  EXPECT_EQ(split("x \ty"), (Words{"x", " ", "\t", "y"}));  // only ' ' may lead a word
  EXPECT_EQ(split("a\xff"
                  "b"),
            (Words{"a", "\xff", "b"}));  // an invalid byte is "other"
  EXPECT_EQ(split(" \xe2\x82\xac\xe2\x82\xac"
                  "5"),
            (Words{" \xe2\x82\xac\xe2\x82\xac", "5"}));
  EXPECT_TRUE(split("").empty());
}

struct Case {
  std::string text;
  std::vector<std::string> words;
  std::vector<int32_t> ids;
};

// Encodings by the gpt-3-encoder package's JavaScript encoder (make_bpe_cases.js).
std::vector<Case> jsCases() {
  std::ifstream in(std::string(EINJIT_TEST_DIR) + "/bpe_cases.json");
  EXPECT_TRUE(in) << "bpe_cases.json is missing";
  std::vector<Case> cases;
  for (const auto& c : nlohmann::json::parse(in)) {
    cases.push_back({c["text"].get<std::string>(), c["words"].get<std::vector<std::string>>(),
                     c["ids"].get<std::vector<int32_t>>()});
  }
  return cases;
}

TEST(BpeTokenizer, PreTokenisesLikeTheGpt2Regex) {
  const std::vector<Case> cases = jsCases();
  ASSERT_GE(cases.size(), 20u);
  for (const Case& c : cases) EXPECT_EQ(split(c.text), c.words) << c.text;
}

TEST(BpeTokenizer, EncodesLikeTheReferenceEncoder) {
  EINJIT_REQUIRE_DATA_FILE("gpt2/encoder.json");
  const BpeTokenizer tok = BpeTokenizer::fromDirectory(testing::dataFile("gpt2"));
  EXPECT_EQ(tok.vocabSize(), 50257);
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  for (const Case& c : jsCases()) {
    EXPECT_EQ(tok.encode(c.text), c.ids) << c.text;
    EXPECT_EQ(tok.decode(c.ids), c.text);
    EXPECT_EQ(tok.encode(c.text), c.ids) << "second (cached) encoding of " << c.text;
  }
}

TEST(BpeTokenizer, RoundTripsArbitraryBytes) {
  EINJIT_REQUIRE_DATA_FILE("gpt2/encoder.json");
  const BpeTokenizer tok = BpeTokenizer::fromDirectory(testing::dataFile("gpt2"));
  std::string bytes;
  for (int i = 0; i < 1024; ++i) bytes.push_back(static_cast<char>((i * 37 + i / 256) & 0xFF));
  bytes +=
      "\xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf \xe6\x97";  // surrogate, >U+10FFFF, overlong, cut
  EXPECT_EQ(tok.decode(tok.encode(bytes)), bytes);
}

TEST(BpeTokenizer, EncodesFromSeveralThreads) {
  EINJIT_REQUIRE_DATA_FILE("gpt2/encoder.json");
  const BpeTokenizer tok = BpeTokenizer::fromDirectory(testing::dataFile("gpt2"));
  const std::vector<Case> cases = jsCases();
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int repeat = 0; repeat < 20; ++repeat) results[t] = tok.encode(cases.back().text);
    });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(r, cases.back().ids);
}

TEST(BpeTokenizer, RejectsUnknownIds) {
  TinyFiles files;
  const BpeTokenizer tok(files.encoder, files.merges);
  expectUserError([&] { tok.decode(std::vector<int32_t>{1, 259}); }, {"259", "[0, 259)"});
  expectUserError([&] { tok.decode(std::vector<int32_t>{-1}); }, {"-1"});
}

TEST(BpeTokenizer, ReportsMissingFiles) {
  TinyFiles files;
  expectUserError([&] { BpeTokenizer(files.dir.file("none.json"), files.merges); },
                  {"none.json", "fetch_data.sh"});
  expectUserError([&] { BpeTokenizer(files.encoder, files.dir.file("none.bpe")); },
                  {"none.bpe", "fetch_data.sh"});
  expectUserError([&] { BpeTokenizer::fromDirectory(files.dir.file("nowhere")); },
                  {"nowhere/encoder.json"});
}

TEST(BpeTokenizer, ReportsCorruptEncoderJson) {
  const auto expectBad = [](const std::string& encoder, std::initializer_list<std::string> parts) {
    TinyFiles files(encoder);
    expectUserError([&] { BpeTokenizer(files.encoder, files.merges); }, parts);
  };
  expectBad("{\"a\": 1,", {"encoder.json", "not valid JSON"});
  expectBad("[1, 2]", {"encoder.json", "JSON object"});
  nlohmann::json e = tinyEncoder();
  e["ab"] = "256";
  expectBad(e.dump(), {"encoder.json", "\"ab\"", "integer"});
  e = tinyEncoder();
  e["ab"] = 300;  // leaves a gap
  expectBad(e.dump(), {"encoder.json", "300", "[0, 259)"});
  e = tinyEncoder();
  e["ab"] = 5;
  expectBad(e.dump(), {"encoder.json", "id 5", "more than one"});
  e = tinyEncoder();
  e["a b"] = 259;  // a raw space is not in the byte alphabet (it is written U+0120)
  expectBad(e.dump(), {"encoder.json", "\"a b\"", "byte alphabet"});
  e = tinyEncoder();
  e.erase("\xc3\xbf");  // the symbol of byte 0xFF; then "ab".."aa" renumbered to stay dense
  e["ab"] = 255, e["abc"] = 256, e["aa"] = 257;
  expectBad(e.dump(), {"encoder.json", "byte 0xFF"});
}

TEST(BpeTokenizer, ReportsCorruptMerges) {
  const auto expectBad = [](const std::string& merges, std::initializer_list<std::string> parts) {
    TinyFiles files(tinyEncoder().dump(), merges);
    expectUserError([&] { BpeTokenizer(files.encoder, files.merges); }, parts);
  };
  expectBad("a b\n", {"vocab.bpe", "#version"});
  expectBad("", {"vocab.bpe", "#version"});
  expectBad("#version: 0.2\na b\nab c d\n", {"vocab.bpe", "line 3", "two tokens"});
  expectBad("#version: 0.2\nabc\n", {"vocab.bpe", "line 2", "two tokens"});
  expectBad("#version: 0.2\na zz\n", {"vocab.bpe", "line 2", "\"zz\"", "encoder.json"});
  expectBad("#version: 0.2\nb c\n", {"vocab.bpe", "line 2", "merged token \"bc\""});
}

}  // namespace
}  // namespace einjit::data
