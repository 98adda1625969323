// Runs the einjit binary under test as a user would, for the CLI tests of tools/ and models/:
// `cd DIR && einjit ARGS`, with stdout and stderr captured in files in DIR. Running inside the
// test's own directory keeps relative paths and default file lookups (data/sotu.txt) there.
// The test target defines EINJIT_BINARY as the path of the built binary.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace einjit::testing {

struct CliResult {
  int status = -1;  // exit status; -1 when the process did not exit normally
  std::string out, err;
};

inline std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `args` are already shell-quoted; `environment` ("NAME=value ...", shell-quoted too) is added
// to the binary's environment.
inline CliResult runEinjit(const std::filesystem::path& dir, const std::string& args,
                           const std::string& environment = "") {
  const std::string cmd = "cd '" + dir.string() + "' && " + (environment.empty() ? "" : "env " + environment + " ") +
                          std::string(EINJIT_BINARY) + " " + args + " >stdout 2>stderr";
  const int raw = std::system(cmd.c_str());
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, readFile(dir / "stdout"), readFile(dir / "stderr")};
}

}  // namespace einjit::testing
