// Helpers of the data set tests: a scratch directory per test and error-message checks.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "einjit/error.h"

namespace einjit::data::testing {

// A fresh directory named after the running test, removed at destruction.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("einjit-data-") + info->test_suite_name() + "-" + info->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string write(const std::string& name, const std::string& contents) const {
    std::ofstream(file(name), std::ios::binary) << contents;
    return file(name);
  }

 private:
  std::filesystem::path path_;
};

// EXPECT that `call` throws UserError whose message contains every one of `parts`.
template <class F>
void expectUserError(F call, std::initializer_list<std::string> parts) {
  try {
    call();
    ADD_FAILURE() << "no UserError";
  } catch (const UserError& e) {
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what() << " / " << part;
    }
  }
}

inline bool dataFilePresent(const std::string& relative) {
  return std::filesystem::exists(std::filesystem::path(EINJIT_DATA_DIR) / relative);
}

inline std::string dataFile(const std::string& relative) {
  return (std::filesystem::path(EINJIT_DATA_DIR) / relative).string();
}

}  // namespace einjit::data::testing

// Skips the test when <repo>/data/<relative> is missing, saying how to get it.
#define EINJIT_REQUIRE_DATA_FILE(relative)                                                \
  do {                                                                                    \
    if (!::einjit::data::testing::dataFilePresent(relative)) {                            \
      GTEST_SKIP() << ::einjit::data::testing::dataFile(relative)                         \
                   << " is missing: run scripts/fetch_data.sh (or setup.sh) to fetch it"; \
    }                                                                                     \
  } while (0)
