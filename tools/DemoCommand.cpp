// einjit demo: the README's default job for now. Parses a few structured specs, prints their
// inspect tables, and runs one BTT layer, checking it against the dense matrix it represents.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "compiler/cpu/CpuBackend.h"
#include "frontend/structures/Structures.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "tools/Commands.h"
#include "tools/LayerReport.h"

namespace einjit::cli {

namespace {

// Deterministic test rows, values in [-1, 1).
Tensor demoRows(int64_t rows, int64_t width) {
  Tensor x(DType::F32, {rows, width});
  uint64_t state = 12345;
  for (int64_t i = 0; i < x.numel(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    x.set(i, static_cast<double>(state >> 40) / static_cast<double>(1ULL << 23) - 1.0);
  }
  return x;
}

void runDemo() {
  const std::vector<std::string> specs = {
      "dense(in=1024, out=1024)",
      "lowrank(in=1024, out=1024, rank=32)",
      "monarch(in=1024, out=1024, blocks=32)",
      "btt(in=1024, out=1024, rank=4)",
      "theta(in=1024, out=1024, alpha=0.5, beta=0, gamma=0.5, delta=0, epsilon=0.5, phi=0.5, rho=0.2)",
  };
  std::printf("== Structured layers at d = 1024 ==\n");
  std::printf("%-100s %10s %12s\n", "spec", "params", "MACs/row");
  for (const std::string& spec : specs) {
    ir::LayerProgram program = buildLayer(spec);
    std::printf("%-100s %10lld %12lld\n", spec.c_str(), static_cast<long long>(program.paramCount()),
                static_cast<long long>(program.macsPerRow()));
  }
  for (const std::string& spec : {specs[3], specs[4]})
    std::printf("\n== einjit inspect '%s' ==\n%s", spec.c_str(), layerTable(buildLayer(spec)).c_str());

  // Run a BTT layer and check it equals x @ W for the dense W it represents (W = layer(I)).
  const std::string spec = "btt(in=256, out=256, rank=2)";
  ir::LayerProgram program = buildLayer(spec);
  TensorMap params = initLayerParams(program, /*seed=*/1, DType::F32);
  Tensor x = demoRows(64, program.dIn);
  auto start = std::chrono::steady_clock::now();
  Tensor y = referenceLayerForward(program, params, x);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  Tensor identity(DType::F32, {program.dIn, program.dIn});
  for (int64_t i = 0; i < program.dIn; ++i) identity.set(i * program.dIn + i, 1.0);
  Tensor w = referenceLayerForward(program, params, identity);
  double maxDiff = 0, maxAbs = 0;
  for (int64_t n = 0; n < x.shape()[0]; ++n)
    for (int64_t o = 0; o < program.dOut; ++o) {
      double dense = 0;
      for (int64_t i = 0; i < program.dIn; ++i) dense += x.get(n * program.dIn + i) * w.get(i * program.dOut + o);
      maxDiff = std::max(maxDiff, std::abs(dense - y.get(n * program.dOut + o)));
      maxAbs = std::max(maxAbs, std::abs(dense));
    }
  std::printf("\n== Running %s on 64 rows (reference executor, float32) ==\n", spec.c_str());
  std::printf("forward: %.2f ms; %lld MACs/row vs %lld dense\n", ms,
              static_cast<long long>(program.macsPerRow()), static_cast<long long>(program.dIn * program.dOut));
  std::printf("max |y - x W_dense| = %.3g (max |y| = %.3g): %s\n", maxDiff, maxAbs,
              maxDiff <= 1e-5 * std::max(1.0, maxAbs) ? "OK" : "MISMATCH");
  if (maxDiff > 1e-5 * std::max(1.0, maxAbs)) throw std::runtime_error("demo layer does not match its dense matrix");

  // The same layer compiled for this CPU (first call compiles or loads from the disk cache).
  for (int call = 0; call < 2; ++call) {
    start = std::chrono::steady_clock::now();
    Tensor yCpu = cpu::cpuLayerForward(program, params, x);
    ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    double diff = 0;
    for (int64_t i = 0; i < y.numel(); ++i) diff = std::max(diff, std::abs(yCpu.get(i) - y.get(i)));
    std::printf("cpu JIT %s: %.2f ms, max |y_cpu - y_ref| = %.3g\n",
                call == 0 ? "(compile or cache load + run)" : "(cached kernel)", ms, diff);
    if (diff > 1e-5 * std::max(1.0, maxAbs)) throw std::runtime_error("cpu JIT disagrees with the reference");
  }
}

}  // namespace

void addDemoCommand(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "demo", "Parse a few structured specs, print their inspect tables and run one BTT layer");
  cmd->callback(runDemo);
}

}  // namespace einjit::cli
