// Helpers shared by the .npy/.npz tests: a scratch directory, raw file access, numpy via
// the system Python, and an assertion that an expression throws UserError mentioning things.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>

#include "einjit/error.h"
#include "einjit/tensor.h"

namespace einjit::testing {

// A fresh directory under the system temp dir, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "einjit-io-test-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

  // Names of the entries in the directory, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

inline std::string readBinaryFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void writeBinaryFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

struct CommandResult {
  int exitCode = -1;
  std::string output;  // stdout and stderr together
};

// Runs a Python program with the interpreter that has numpy (EINJIT_PYTHON); sys.argv[1:] = args.
inline CommandResult runPython(const std::string& program, const std::vector<std::string>& args = {}) {
  auto shellQuote = [](const std::string& text) {
    std::string quoted = "'";
    for (char c : text) {
      if (c == '\'')
        quoted.append("'\\''");
      else
        quoted.push_back(c);
    }
    quoted.push_back('\'');
    return quoted;
  };
  std::string command = EINJIT_PYTHON;
  command += " -c ";
  command += shellQuote(program);
  for (const std::string& arg : args) {
    command += ' ';
    command += shellQuote(arg);
  }
  command += " 2>&1";
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  std::size_t got;
  while ((got = fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, got);
  const int status = pclose(pipe);
  result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

inline bool numpyAvailable() { return runPython("import numpy").exitCode == 0; }

// Runs `program` (which imports numpy) and fails the test unless it exits with status 0.
inline void expectPythonSucceeds(const std::string& program, const std::vector<std::string>& args) {
  const CommandResult result = runPython(program, args);
  EXPECT_EQ(result.exitCode, 0) << "python failed:\n" << result.output;
}

}  // namespace einjit::testing

#define SKIP_WITHOUT_NUMPY()                                                               \
  do {                                                                                     \
    if (!::einjit::testing::numpyAvailable()) GTEST_SKIP() << EINJIT_PYTHON " lacks numpy"; \
  } while (0)

// Asserts that `statement` throws einjit::UserError whose message contains every one of the
// given substrings.
#define EXPECT_USER_ERROR(statement, ...)                                                        \
  do {                                                                                           \
    try {                                                                                        \
      statement;                                                                                 \
      ADD_FAILURE() << "expected UserError from: " #statement;                                   \
    } catch (const ::einjit::UserError& error) {                                                 \
      const std::string message = error.what();                                                  \
      for (const std::string& expected : std::initializer_list<std::string>{__VA_ARGS__})               \
        EXPECT_NE(message.find(expected), std::string::npos)                                     \
            << "message of " #statement " lacks \"" << expected << "\":\n  " << message;         \
    }                                                                                            \
  } while (0)
