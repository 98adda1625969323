// benchLayer on tiny layers: the checked run, the FLOP counts, the naive scaling, the report.
// Times themselves are not checked (they are the benchmark's output, not a property).
#include <gtest/gtest.h>

#include <string>

#include "bench/LayerBench.h"
#include "einjit/error.h"

namespace einjit::bench {
namespace {

BenchOptions tinyOptions(BenchTarget target, bool backward) {
  BenchOptions options;
  options.rows = 8;
  options.naiveRows = 4;
  options.backward = backward;
  options.target = target;
  options.secondsPerTiming = 0.001;
  options.torch = false;
  return options;
}

TEST(LayerBench, CountsNominalFlopsAndScalesTheNaiveTime) {
  for (BenchTarget target : {BenchTarget::Ref, BenchTarget::Cpu}) {
    SCOPED_TRACE(benchTargetName(target));
    const LayerBenchResult r = benchLayer("btt(in=16, out=12, rank=2)", tinyOptions(target, true));
    EXPECT_EQ(r.spec, "btt(in=16, out=12, rank=2)");
    EXPECT_EQ(r.rows, 8);
    // factorize(16) = [4, 4], factorize(12) = [3, 4]: MACs/row = r (m1 m0 n0 + n0 m1 n1) = 2 (48 +
    // 48).
    EXPECT_EQ(r.macsPerRow, 192);
    EXPECT_DOUBLE_EQ(r.einjitFlops, 2.0 * 192 * 8 * 3);
    EXPECT_DOUBLE_EQ(r.denseFlops, 2.0 * 16 * 12 * 8 * 3);
    EXPECT_EQ(r.naiveRows, 4);
    EXPECT_EQ(r.naiveKind, "loops");
    EXPECT_DOUBLE_EQ(r.naiveScaledMs, r.naive.medianMs * 2);
    EXPECT_LE(r.maxRelativeError, 1e-3);
    EXPECT_GE(r.einjit.runs, 1);
    EXPECT_GE(r.blas.runs, 1);
    EXPECT_EQ(r.einjitCall.has_value(), target == BenchTarget::Cpu);
  }
}

TEST(LayerBench, StructuresWithoutNaiveLoopsUseTheReferenceExecutor) {
  const LayerBenchResult r =
      benchLayer("kron(in=16, out=12)", tinyOptions(BenchTarget::Cpu, false));
  EXPECT_EQ(r.naiveKind, "reference executor");
  EXPECT_DOUBLE_EQ(r.einjitFlops, 2.0 * static_cast<double>(r.macsPerRow) * 8);
}

TEST(LayerBench, NormalisedLayersAreCheckedToo) {
  const LayerBenchResult r =
      benchLayer("btt(in=16, out=12, rank=2, norm)", tinyOptions(BenchTarget::Cpu, true));
  EXPECT_EQ(r.naiveKind, "reference executor");
  EXPECT_LE(r.maxRelativeError, 1e-3);
}

TEST(LayerBench, RejectsBadInput) {
  BenchOptions options = tinyOptions(BenchTarget::Ref, false);
  EXPECT_THROW(benchLayer("btt(in=16, out=12, rank=)", options), SpecError);
  options.rows = 0;
  EXPECT_THROW(benchLayer("dense(in=4, out=4)", options), UserError);
  options = tinyOptions(BenchTarget::Ref, false);
  options.secondsPerTiming = -1;
  EXPECT_THROW(benchLayer("dense(in=4, out=4)", options), UserError);
  EXPECT_THROW(parseBenchTarget("gpu"), UserError);
  EXPECT_EQ(parseBenchTarget("ref"), BenchTarget::Ref);
  EXPECT_EQ(parseBenchTarget("cpu"), BenchTarget::Cpu);
}

TEST(LayerBench, ReportAndJsonCarryEveryMeasurement) {
  BenchOptions options = tinyOptions(BenchTarget::Ref, false);
  std::vector<LayerBenchResult> results = {benchLayer("monarch(in=16, out=16, blocks=4)", options)};
  results[0].torchMs = 2.0;
  results[0].torchVersion = "1.13";
  results[0].einjit.medianMs = 0.5;
  results[0].blas.medianMs = 0.25;
  const HostInfo host = describeHost(options);
  EXPECT_FALSE(host.cpuModel.empty());
  const std::string table = formatReport(results, host);
  for (const char* needle : {"monarch(in=16, out=16, blocks=4)", "einjit ms", "BLAS ms",
                             "naive ms*", "torch ms", "4.00x", "measured on 4 rows", "torch 1.13"})
    EXPECT_NE(table.find(needle), std::string::npos) << needle << " in\n" << table;

  const nlohmann::json json = reportJson(results, host);
  const nlohmann::json& entry = json.at("results").at(0);
  EXPECT_EQ(entry.at("pass"), "forward");
  EXPECT_EQ(entry.at("target"), "ref");
  EXPECT_DOUBLE_EQ(entry.at("speedup_vs_torch").get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(entry.at("speedup_vs_openblas").get<double>(), 0.5);
  // monarch 16 -> 16, 4 blocks of 4: 2 * 16 * 4 MACs per row; dense 256.
  EXPECT_DOUBLE_EQ(entry.at("percent_of_openblas_gflops").get<double>(),
                   100.0 * (2.0 * 128 * 8 / 0.5) / (2.0 * 256 * 8 / 0.25));
  EXPECT_EQ(json.at("host").at("baseline_threads"), options.baselineThreads);
}

// OpenBLAS and PyTorch get as many threads as einjit, so EINJIT_THREADS=1 compares one core
// with one core.
TEST(LayerBench, BaselinesRunOnEinjitsThreads) {
  EXPECT_EQ(BenchOptions().baselineThreads, cpu::configuredThreadCount());
}

}  // namespace
}  // namespace einjit::bench
