// The timer, the OpenBLAS baseline and the PyTorch script's forms (bench/torch_layers.py): the
// script's bmm forms must compute the same layer as einjit's reference executor, or comparing
// their times would be meaningless.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/Baselines.h"
#include "einjit/error.h"
#include "frontend/structures/Structures.h"
#include "runtime/io/Npy.h"
#include "runtime/reference/ReferenceExecutor.h"

namespace einjit::bench {
namespace {

TEST(TimeMedian, RunsAWarmUpThenAtLeastThreeTimedRuns) {
  int calls = 0;
  const Timing timing = timeMedian([&] { ++calls; }, 0.01);
  EXPECT_GE(timing.runs, 3);
  EXPECT_LE(timing.runs, 50);
  EXPECT_EQ(calls, timing.runs + 1);
  EXPECT_GE(timing.medianMs, 0.0);
}

TEST(TimeMedian, ASlowWarmUpIsTheOnlyRun) {
  int calls = 0;
  const Timing timing = timeMedian(
      [&] {
        ++calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
      },
      0.01);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(timing.runs, 1);
  EXPECT_GE(timing.medianMs, 30.0);
}

TEST(TimeMedian, TheMedianIgnoresOneSlowOutlier) {
  int calls = 0;
  const Timing timing = timeMedian(
      [&] {
        // Warm-up and first timed run fast (k = 50 for a 1 s budget), one slow run later.
        if (++calls == 5) std::this_thread::sleep_for(std::chrono::milliseconds(200));
      },
      1.0);
  EXPECT_EQ(timing.runs, 50);
  EXPECT_LT(timing.medianMs, 1.0);
}

TEST(TimeAlternating, AlternatesBlocksAndGivesEachFunctionItsRuns) {
  std::vector<int> sequence;
  const std::vector<Timing> timings =
      timeAlternating({[&] { sequence.push_back(0); }, [&] { sequence.push_back(1); }}, 0.01, 3);
  ASSERT_EQ(timings.size(), 2u);
  int calls[2] = {0, 0}, switches = 0;
  for (std::size_t i = 0; i < sequence.size(); ++i) {
    ++calls[sequence[i]];
    if (i > 0 && sequence[i] != sequence[i - 1]) ++switches;
  }
  for (int f : {0, 1}) {
    EXPECT_GE(timings[f].runs, 3);
    EXPECT_LE(timings[f].runs, 50);
    EXPECT_EQ(calls[f], timings[f].runs + 1) << f;  // one warm-up each
  }
  EXPECT_EQ(switches, 5);  // 0 1 0 1 0 1: three blocks each
}

TEST(TimeAlternating, ASlowFunctionRunsOnceWhileTheOthersGoOn) {
  int slowCalls = 0, fastCalls = 0;
  const std::vector<Timing> timings =
      timeAlternating({[&] {
                         ++slowCalls;
                         std::this_thread::sleep_for(std::chrono::milliseconds(30));
                       },
                       [&] { ++fastCalls; }},
                      0.01, 3);
  EXPECT_EQ(slowCalls, 1);
  EXPECT_EQ(timings[0].runs, 1);
  EXPECT_GE(timings[0].medianMs, 30.0);
  EXPECT_GE(timings[1].runs, 3);
  EXPECT_EQ(fastCalls, timings[1].runs + 1);
  EXPECT_THROW(timeAlternating({[] {}}, 0.01, 0), UserError);
}

// The sgemms compute what they claim: y = x W and, with backward, dx = dy W^T and dW = x^T dy,
// each checked against a plain loop (odd sizes, so no dimension is a multiple of a kernel tile).
TEST(DenseSgemm, ComputesTheForwardAndBothGradients) {
  const int rows = 37, dIn = 29, dOut = 23;
  DenseSgemm forward(rows, dIn, dOut, false, 2);
  DenseSgemm backward(rows, dIn, dOut, true, 2);
  forward.run();
  backward.run();
  EXPECT_TRUE(forward.dx().empty());
  ASSERT_EQ(backward.dx().size(), std::size_t(rows * dIn));
  ASSERT_EQ(backward.dw().size(), std::size_t(dIn * dOut));
  const std::vector<float>&x = backward.x(), &w = backward.w(), &dy = backward.dy();
  for (int r = 0; r < rows; ++r)
    for (int o = 0; o < dOut; ++o) {
      double y = 0;
      for (int i = 0; i < dIn; ++i) y += double(x[r * dIn + i]) * w[i * dOut + o];
      EXPECT_NEAR(forward.y()[r * dOut + o], y, 1e-4) << r << "," << o;
      EXPECT_NEAR(backward.y()[r * dOut + o], y, 1e-4) << r << "," << o;
    }
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < dIn; ++i) {
      double dx = 0;
      for (int o = 0; o < dOut; ++o) dx += double(dy[r * dOut + o]) * w[i * dOut + o];
      EXPECT_NEAR(backward.dx()[r * dIn + i], dx, 1e-4) << r << "," << i;
    }
  for (int i = 0; i < dIn; ++i)
    for (int o = 0; o < dOut; ++o) {
      double dw = 0;
      for (int r = 0; r < rows; ++r) dw += double(x[r * dIn + i]) * dy[r * dOut + o];
      EXPECT_NEAR(backward.dw()[i * dOut + o], dw, 1e-3) << i << "," << o;
    }
  EXPECT_NE(openblasDescription().find("OpenBLAS"), std::string::npos) << openblasDescription();
}

TEST(DenseSgemm, RejectsBadSizes) {
  EXPECT_THROW(DenseSgemm(0, 4, 4, false, 2), UserError);
  EXPECT_THROW(DenseSgemm(4, 4, 4, false, 0), UserError);
  EXPECT_THROW(DenseSgemm(int64_t{1} << 40, 4, 4, false, 2), UserError);
}

TEST(TorchBaseline, TimesSupportedCasesAndExplainsTheOthers) {
  const TorchRun run = timeTorchLayers({{"dense(in=16, out=8)", false},
                                        {"btt(in=16, out=12, rank=2)", true},
                                        {"kron(in=16, out=16)", false},
                                        {"monarch(in=16, out=16, blocks=4)", true}},
                                       8, 0.01, 1, EINJIT_TEST_PYTHON, EINJIT_TEST_TORCH_SCRIPT);
  ASSERT_EQ(run.timings.size(), 4u);
  EXPECT_FALSE(run.torchVersion.empty());
  EXPECT_EQ(run.threads, 1);
  for (int i : {0, 1, 3}) {
    ASSERT_TRUE(run.timings[i].medianMs.has_value()) << i << ": " << run.timings[i].note;
    EXPECT_GT(*run.timings[i].medianMs, 0.0);
  }
  EXPECT_FALSE(run.timings[2].medianMs.has_value());
  EXPECT_NE(run.timings[2].note.find("kron"), std::string::npos) << run.timings[2].note;
}

TEST(TorchBaseline, AMissingInterpreterIsReportedNotThrown) {
  const TorchRun run = timeTorchLayers({{"dense(in=4, out=4)", false}}, 4, 0.01, 1,
                                       "/nonexistent/python3", EINJIT_TEST_TORCH_SCRIPT);
  ASSERT_EQ(run.timings.size(), 1u);
  EXPECT_FALSE(run.timings[0].medianMs.has_value());
  EXPECT_NE(run.timings[0].note.find("cannot run"), std::string::npos) << run.timings[0].note;
}

TEST(TorchBaseline, AFailingScriptIsReportedNotThrown) {
  const TorchRun run = timeTorchLayers({{"dense(in=4, out=4)", false}}, 4, 0.01, 1,
                                       EINJIT_TEST_PYTHON, "/nonexistent/torch_layers.py");
  ASSERT_EQ(run.timings.size(), 1u);
  EXPECT_FALSE(run.timings[0].medianMs.has_value());
  EXPECT_NE(run.timings[0].note.find("failed"), std::string::npos) << run.timings[0].note;
}

const char* const kTorchFormSpecs[] = {
    "dense(in=6, out=5)",
    "lowrank(in=8, out=6, rank=2)",
    "low_rank(in=9, out=7)",
    "monarch(in=16, out=12, blocks=4)",
    "monarch(in=10, out=14, blocks=4)",
    "monarch(in=14, out=10, blocks=4)",
    "monarch(in=16, out=16, blocks=-1)",
    "btt(in=16, out=12, rank=2)",
    "btt(in=12, out=20, rank=3)",
    "btt(in=16, out=16)",
};

// The script's bmm form of each spec, float64, against the reference executor.
class TorchForms : public ::testing::TestWithParam<const char*> {};

TEST_P(TorchForms, MatchTheReferenceExecutor) {
  const std::string spec = GetParam();
  const ir::LayerProgram layer = buildLayer(spec);
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal(0.0, 1.0);
  const auto random = [&](const Shape& shape) {
    Tensor t(DType::F64, shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.set(i, normal(rng));
    return t;
  };
  TensorMap params;
  for (const ir::Parameter& param : layer.params) params[param.name] = random(param.shape);
  const Tensor x = random({3, layer.dIn});
  const Tensor dy = random({3, layer.dOut});

  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("einjit_torch_forms_" + std::to_string(getpid()) + "_" +
       std::to_string(
           std::find(std::begin(kTorchFormSpecs), std::end(kTorchFormSpecs), GetParam()) -
           std::begin(kTorchFormSpecs)));
  std::filesystem::create_directories(dir);
  writeNpz((dir / "params.npz").string(), {params.begin(), params.end()});
  writeNpy((dir / "x.npy").string(), x);
  writeNpy((dir / "dy.npy").string(), dy);
  const std::string command = std::string(EINJIT_TEST_PYTHON) + " " + EINJIT_TEST_TORCH_SCRIPT +
                              " --check '" + spec + "' " + dir.string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  const LayerGradients expected = referenceLayerBackward(layer, params, x, dy);
  const auto expectClose = [](const std::string& what, const Tensor& got, const Tensor& want) {
    ASSERT_EQ(got.shape(), want.shape()) << what;
    for (int64_t i = 0; i < got.numel(); ++i)
      ASSERT_NEAR(got.get(i), want.get(i), 1e-9 * (1 + std::abs(want.get(i))))
          << what << " at " << i;
  };
  expectClose("y", readNpy((dir / "y.npy").string()), expected.y);
  expectClose("dx", readNpy((dir / "dx.npy").string()), expected.dx);
  const std::map<std::string, Tensor> dparams = readNpz((dir / "dparams.npz").string());
  ASSERT_EQ(dparams.size(), expected.dparams.size());
  for (const auto& [name, gradient] : expected.dparams) {
    ASSERT_TRUE(dparams.count(name)) << name;
    expectClose("d" + name, dparams.at(name), gradient);
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Structures, TorchForms, ::testing::ValuesIn(kTorchFormSpecs),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name;
                           for (const char* c = info.param; *c; ++c)
                             if (std::isalnum(static_cast<unsigned char>(*c))) name += *c;
                           return name;
                         });

}  // namespace
}  // namespace einjit::bench
