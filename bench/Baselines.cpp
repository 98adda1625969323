#include "bench/Baselines.h"

#include <cblas.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <vector>

#include "einjit/error.h"

extern char** environ;

namespace einjit::bench {

namespace {

double millisecondsOf(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

std::vector<float> filledBuffer(int64_t count, float scale) {
  std::vector<float> values(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = scale * static_cast<float>(static_cast<int>(i % 17) - 8) / 8.0f;
  return values;
}

// Output of a finished child process (stdout and stderr together) and its exit status.
struct ProcessResult {
  std::string output;
  int status = -1;      // exit code; -1 if it did not exit normally
  std::string failure;  // why it could not be started
};

ProcessResult runProcess(const std::vector<std::string>& argv) {
  ProcessResult result;
  int pipeFds[2];
  if (pipe2(pipeFds, O_CLOEXEC) != 0) {
    result.failure = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipeFds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipeFds[1], STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawnError = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipeFds[1]);
  if (spawnError != 0) {
    close(pipeFds[0]);
    result.failure = "cannot run " + argv[0] + ": " + std::strerror(spawnError);
    return result;
  }
  char buffer[4096];
  for (;;) {
    const ssize_t got = read(pipeFds[0], buffer, sizeof buffer);
    if (got > 0) {
      result.output.append(buffer, static_cast<std::size_t>(got));
    } else if (got == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipeFds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.status = WEXITSTATUS(status);
  return result;
}

// The last non-empty line of a process's output (a Python traceback ends with the error).
std::string lastLine(const std::string& text) {
  std::istringstream lines(text);
  std::string line, last;
  while (std::getline(lines, line))
    if (!line.empty()) last = line;
  return last;
}

}  // namespace

Timing timeMedian(const std::function<void()>& fn, double seconds) {
  return timeAlternating({fn}, seconds, 1).front();
}

std::vector<Timing> timeAlternating(const std::vector<std::function<void()>>& fns, double seconds,
                                    int blocks) {
  if (blocks < 1) throw UserError("timeAlternating: blocks must be at least 1");
  const double budgetMs = seconds * 1000.0;
  const int minPerBlock = (3 + blocks - 1) / blocks;
  const int maxPerBlock = std::max(1, 50 / blocks);
  std::vector<std::vector<double>> samples(fns.size());
  std::vector<bool> done(fns.size(), false);
  for (int block = 0; block < blocks; ++block) {
    for (std::size_t i = 0; i < fns.size(); ++i) {
      if (done[i]) continue;
      if (block == 0) {
        const double warmupMs = millisecondsOf(fns[i]);
        if (warmupMs >= budgetMs) {
          samples[i] = {warmupMs};
          done[i] = true;
          continue;
        }
        // The first timed run sets the run count: the warm-up also pays one-time costs.
        samples[i].push_back(millisecondsOf(fns[i]));
      }
      const double perBlockMs = budgetMs / blocks;
      const int runs = static_cast<int>(std::clamp(perBlockMs / std::max(samples[i].front(), 1e-3),
                                                   static_cast<double>(minPerBlock),
                                                   static_cast<double>(maxPerBlock)));
      for (int k = block == 0 ? 1 : 0; k < runs; ++k) samples[i].push_back(millisecondsOf(fns[i]));
      if (fns.size() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(150));
    }
  }
  std::vector<Timing> timings;
  for (std::vector<double>& times : samples) {
    std::sort(times.begin(), times.end());
    const std::size_t mid = times.size() / 2;
    const double median = times.size() % 2 ? times[mid] : 0.5 * (times[mid - 1] + times[mid]);
    timings.push_back({median, static_cast<int>(times.size())});
  }
  return timings;
}

DenseSgemm::DenseSgemm(int64_t rows, int64_t dIn, int64_t dOut, bool backward, int threads) {
  const int64_t blasLimit = std::numeric_limits<blasint>::max();
  if (rows < 1 || dIn < 1 || dOut < 1 || threads < 1)
    throw UserError("sgemm baseline: rows, sizes and threads must be positive");
  if (rows > blasLimit || dIn > blasLimit || dOut > blasLimit)
    throw UserError("sgemm baseline: sizes above " + std::to_string(blasLimit) +
                    " are not supported");
  rows_ = static_cast<int>(rows);
  dIn_ = static_cast<int>(dIn);
  dOut_ = static_cast<int>(dOut);
  backward_ = backward;
  openblas_set_num_threads(threads);
  x_ = filledBuffer(rows * dIn, 1.0f);
  w_ = filledBuffer(dIn * dOut, 0.01f);
  y_.resize(static_cast<std::size_t>(rows * dOut));
  if (backward) {
    dy_ = filledBuffer(rows * dOut, 1.0f);
    dx_.resize(static_cast<std::size_t>(rows * dIn));
    dw_.resize(static_cast<std::size_t>(dIn * dOut));
  }
}

void DenseSgemm::run() {
  // y (rows x out) = x (rows x in) W (in x out)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows_, dOut_, dIn_, 1.0f, x_.data(), dIn_,
              w_.data(), dOut_, 0.0f, y_.data(), dOut_);
  if (!backward_) return;
  // dx (rows x in) = dy (rows x out) W^T
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows_, dIn_, dOut_, 1.0f, dy_.data(), dOut_,
              w_.data(), dOut_, 0.0f, dx_.data(), dIn_);
  // dW (in x out) = x^T dy
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dIn_, dOut_, rows_, 1.0f, x_.data(), dIn_,
              dy_.data(), dOut_, 0.0f, dw_.data(), dOut_);
}

std::string openblasDescription() {
  std::string config = openblas_get_config();
  while (!config.empty() && config.back() == ' ') config.pop_back();
  return config + " (core " + openblas_get_corename() + ")";
}

void useBestOpenblasKernels() {
  const std::string core = openblas_get_corename();
  std::string wanted;
  if (const char* chosen = std::getenv("EINJIT_BENCH_OPENBLAS_CORETYPE")) {
    wanted = chosen;
  } else {
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const bool avx512Core = core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
    if (avx512 && !avx512Core) wanted = "SkylakeX";
  }
  const char* current = std::getenv("OPENBLAS_CORETYPE");
  // Done when there is nothing to change, or when this process is the re-executed one.
  if (wanted.empty() || (current != nullptr && wanted == current)) return;
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(cmdline, arg, '\0');) args.push_back(arg);
  if (args.empty()) return;
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::fprintf(stderr, "bench: OpenBLAS loaded its %s kernels (OPENBLAS_CORETYPE=%s); restarting with "
               "OPENBLAS_CORETYPE=%s so that the baseline runs %s\n",
               core.c_str(), current != nullptr ? current : "unset", wanted.c_str(),
               std::getenv("EINJIT_BENCH_OPENBLAS_CORETYPE") != nullptr
                   ? "the kernels EINJIT_BENCH_OPENBLAS_CORETYPE names"
                   : "the AVX-512 kernels this CPU supports");
  std::fflush(nullptr);
  setenv("OPENBLAS_CORETYPE", wanted.c_str(), 1);
  execv("/proc/self/exe", argv.data());
  std::fprintf(stderr, "bench: cannot restart (%s); the baseline keeps OpenBLAS's %s kernels\n",
               std::strerror(errno), core.c_str());
  if (current != nullptr) setenv("OPENBLAS_CORETYPE", current, 1);
  else unsetenv("OPENBLAS_CORETYPE");
}

std::string defaultPython() { return EINJIT_BENCH_PYTHON; }
std::string defaultTorchScript() { return EINJIT_BENCH_TORCH_SCRIPT; }

TorchRun timeTorchLayers(const std::vector<TorchCase>& cases, int64_t rows, double seconds,
                         int threads, const std::string& python, const std::string& script) {
  TorchRun run;
  run.timings.resize(cases.size());
  if (cases.empty()) return run;
  std::vector<std::string> argv = {python,      script,
                                   "--rows",    std::to_string(rows),
                                   "--seconds", std::to_string(seconds),
                                   "--threads", std::to_string(threads)};
  for (const TorchCase& c : cases) {
    argv.push_back("--case");
    argv.push_back(c.backward ? "bwd" : "fwd");
    argv.push_back(c.spec);
  }
  const ProcessResult process = runProcess(argv);
  std::string failure = process.failure;
  if (failure.empty() && process.status != 0)
    failure = "torch_layers.py failed (exit status " + std::to_string(process.status) +
              "): " + lastLine(process.output);

  // One JSON object per line: {"case": i, "ms": ..., "runs": k, "torch": "1.13.1", "threads": 2}
  // or {"case": i, "error": "..."}; anything else on the output (warnings) is skipped.
  std::istringstream lines(process.output);
  std::string line;
  while (std::getline(lines, line)) {
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!record.is_object() || !record.contains("case") || !record["case"].is_number_integer())
      continue;
    const auto index = record["case"].get<int64_t>();
    if (index < 0 || index >= static_cast<int64_t>(cases.size())) continue;
    TorchTiming& timing = run.timings[static_cast<std::size_t>(index)];
    if (record.contains("ms") && record["ms"].is_number()) {
      timing.medianMs = record["ms"].get<double>();
      timing.runs = record.value("runs", 0);
      run.torchVersion = record.value("torch", "");
      run.threads = record.value("threads", 0);
    } else {
      timing.note = record.value("error", "no time reported");
    }
  }
  for (TorchTiming& timing : run.timings)
    if (!timing.medianMs && timing.note.empty())
      timing.note = failure.empty() ? "no time reported" : failure;
  return run;
}

}  // namespace einjit::bench
