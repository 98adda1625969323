// `einjit train` and `einjit sample` as a user meets them: help, one-line errors with exit
// status 1 and nothing written, a run end to end, Ctrl-C, and --resume.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "compiler/cuda/CudaDriver.h"
#include "models/Checkpoint.h"
#include "tests/models/TestUtil.h"
#include "tests/tools/RunEinjit.h"

namespace einjit::models {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;

using Result = einjit::testing::CliResult;

class TrainCli : public ::testing::Test {
 protected:
  Result einjit(const std::string& args) { return einjit::testing::runEinjit(dir_.path(), args); }
  std::string corpus() {
    testing::writeText(dir_ / "corpus.txt", testing::repetitiveCorpus());
    return dir_ / "corpus.txt";
  }
  // A tiny GPT run (options after `extra` override it).
  std::string tinyRun(const std::string& out, const std::string& extra = "") {
    return "train --data " + corpus() + " --n-layer 1 --d-model 16 --n-head 2 --context 8 --batch 4 --lr 0.01 "
           "--log-every 5 --eval-every 10 --eval-batches 1 --out " + (dir_ / out) + " " + extra;
  }

  ScratchDir dir_;
};

TEST_F(TrainCli, HelpListsTheOptions) {
  Result r = einjit("train --help");
  EXPECT_EQ(r.status, 0);
  for (const char* flag : {"--config", "--resume", "--struct", "--layers", "--d-model", "--steps", "--schedule",
                           "--eval-every", "--checkpoint-every", "--out", "--data", "--device", "--precision"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  r = einjit("sample --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--top-k"), std::string::npos);
}

TEST_F(TrainCli, DeviceCudaWithoutAGpuSaysWhyAndWritesNothing) {
  if (cuda::cudaAvailable()) GTEST_SKIP() << "this machine has a usable GPU";
  Result r = einjit(tinyRun("run", "--device cuda --steps 2"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("einjit: error: --device cuda: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("train with --device cpu"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "run"));
  r = einjit(tinyRun("run", "--precision bf16 --steps 2"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("bf16 autocast needs --device cuda"), std::string::npos) << r.err;
  r = einjit("demo --device cuda --seconds 1 --data " + corpus());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--device cuda: "), std::string::npos) << r.err;
  r = einjit("demo --device tpu --data " + corpus());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("expected auto, cpu or cuda, got 'tpu'"), std::string::npos) << r.err;
}

TEST_F(TrainCli, BadOptionsAndConfigsFailWithOneLine) {
  Result r = einjit(tinyRun("run", "--steps 12x"));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "einjit: error: --steps: expected an integer, got '12x'\n");
  r = einjit(tinyRun("run", "--schedule linear"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("expected constant or cosine, got 'linear'"), std::string::npos) << r.err;
  testing::writeText(dir_ / "c.json", R"({"steps": 10, "warmpu": 3})");
  r = einjit(tinyRun("run", "--config " + (dir_ / "c.json")));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("unknown key 'warmpu'"), std::string::npos) << r.err;
  r = einjit(tinyRun("run", "--struct 'btt(rnak=2)'"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("rnak"), std::string::npos) << r.err;
  r = einjit("train --data " + (dir_ / "missing.txt") + " --out " + (dir_ / "run"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("missing.txt"), std::string::npos) << r.err;
  r = einjit(tinyRun("run", "--resume"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "run/checkpoint.npz"));
}

TEST_F(TrainCli, TrainResumeAndSample) {
  Result r = einjit(tinyRun("run", "--steps 10 --struct 'btt(rank=2)' --layers all_but_last"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("step 10/10"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tok/s"), std::string::npos);
  EXPECT_NE(r.out.find("ETA"), std::string::npos);
  EXPECT_NE(r.out.find("eval loss"), std::string::npos);
  EXPECT_EQ(readCheckpoint(dir_ / "run/checkpoint.npz").step, 10);

  // Running again into the same directory is refused; --resume with more steps continues.
  r = einjit(tinyRun("run", "--steps 10"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
  r = einjit(tinyRun("run", "--steps 15 --resume"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("at step 10"), std::string::npos) << r.out;
  EXPECT_EQ(readCheckpoint(dir_ / "run/checkpoint.npz").step, 15);
  r = einjit(tinyRun("run", "--steps 20 --resume --d-model 32"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("d_model"), std::string::npos) << r.err;

  const std::string sample = "sample " + (dir_ / "run/checkpoint.npz") + " --prompt 'the cat' --tokens 30 --seed 5";
  r = einjit(sample);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("the cat", 0), 0u) << r.out;
  EXPECT_EQ(r.out.size(), 7u + 30u + 1u);
  EXPECT_EQ(einjit(sample).out, r.out);  // same seed, same text
  r = einjit("sample " + (dir_ / "run/checkpoint.npz") + " --prompt 'caf\xc3\xa9'");
  EXPECT_EQ(r.status, 1);
  r = einjit("sample " + (dir_ / "nothing.npz"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos);
}

TEST_F(TrainCli, CtrlCWritesACheckpointAndExitsCleanly) {
  const std::string cmd = std::string(EINJIT_BINARY) + " " + tinyRun("run", "--steps 1000000 --log-every 1") +
                          " >" + (dir_ / "stdout") + " 2>" + (dir_ / "stderr");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until training has taken a few steps (or einjit has exited, which fails the test).
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (testing::readText(dir_ / "run/metrics.jsonl").find("\"step\":3,") == std::string::npos) {
    ASSERT_EQ(waitpid(pid, &status, WNOHANG), 0) << "einjit exited early: " << testing::readText(dir_ / "stderr");
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL() << "no training step within 60 s";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGINT);
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "einjit train did not exit by itself after SIGINT";
  EXPECT_EQ(WEXITSTATUS(status), 0) << testing::readText(dir_ / "stderr");
  EXPECT_NE(testing::readText(dir_ / "stdout").find("stopped at step"), std::string::npos);
  EXPECT_GE(readCheckpoint(dir_ / "run/checkpoint.npz").step, 3);
}

}  // namespace
}  // namespace einjit::models
