// einjit_kernel_profile: what each output of a layer's compiled kernels costs. The forward
// kernel is timed, then the backward kernel whole, computing one gradient at a time, and
// computing all but one (keepOutputs drops the ops the others need), each on warm buffers,
// back to back, median of k runs. A gradient that costs more than its share of contractions
// is where the backward's time goes; `einjit compile --backward --emit mlir-tiled|asm` then
// shows its code. The `bench` target measures the layers against their baselines; this tool
// only looks inside.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "compiler/cpu/CpuBackend.h"
#include "compiler/cpu/ThreadPool.h"
#include "einjit/error.h"
#include "frontend/structures/Structures.h"

namespace {

using namespace einjit;

struct Measured {
  double medianMs = 0, minMs = 0;
};

// Runs `program` on `rows` rows of deterministic inputs: one warm-up, then `runs` timed runs.
Measured timeKernel(const KernelProgram& program, int64_t rows, int runs) {
  auto withRows = [&](Shape shape) {
    for (int64_t& d : shape)
      if (d == ir::kRows) d = rows;
    return shape;
  };
  cpu::CacheOptions cache;
  cache.useDisk = false;
  const auto kernel = cpu::compileKernel(program, cache);
  std::vector<Tensor> inputs, outputs;
  for (ir::ValueId id : program.inputs) {
    Tensor t(program.dtype, withRows(program.values[id].shape));
    for (int64_t i = 0; i < t.numel(); ++i) t.set(i, 0.001 * static_cast<double>((i * 7919) % 1000) - 0.5);
    inputs.push_back(std::move(t));
  }
  for (ir::ValueId id : program.outputs) outputs.emplace_back(program.dtype, withRows(program.values[id].shape));
  std::vector<const Tensor*> in;
  std::vector<Tensor*> out;
  for (const Tensor& t : inputs) in.push_back(&t);
  for (Tensor& t : outputs) out.push_back(&t);
  std::vector<double> ms;
  for (int r = 0; r <= runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    cpu::runKernel(program, *kernel, rows, in, out);
    if (r > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

int contractions(const KernelProgram& program) {
  return static_cast<int>(std::count_if(program.ops.begin(), program.ops.end(),
                                        [](const ir::Op& op) { return op.kind == ir::OpKind::Contract; }));
}

int run(int argc, char** argv) {
  CLI::App app{"einjit_kernel_profile: the time of a layer's forward kernel, of its backward kernel "
               "recomputing the forward's intermediates, and of the training pair (a forward that saves "
               "them, the backward on them: whole and one gradient at a time); float32, all einjit "
               "threads, warm buffers"};
  std::string spec;
  int64_t rows = 2048;
  int runs = 30;
  std::string only;
  app.add_option("SPEC", spec, "structure spec, e.g. 'btt(in=1024, out=1024, rank=1)'")->required();
  app.add_option("--rows", rows, "rows N")->capture_default_str();
  app.add_option("--runs", runs, "timed runs per kernel (the median and the minimum are shown)")->capture_default_str();
  app.add_option("--only", only,
                 "time only the forward kernel (forward) or the training pair (training: the forward that "
                 "saves, the whole backward), for A/B runs")
      ->check(CLI::IsMember({"forward", "training"}));
  CLI11_PARSE(app, argc, argv);
  if (rows < 1 || runs < 1) throw UserError("--rows and --runs must be at least 1");

  const ir::LayerProgram layer = buildLayer(spec);
  std::vector<std::string> gradients = {"dx"};
  for (const KernelParameterInput& input : kernelParameterInputs(layer))
    gradients.push_back("d" + layer.params[input.param].name);

  std::printf("%s, %lld rows, float32, %d threads, median (min) of %d warm runs\n\n", layer.spec.c_str(),
              static_cast<long long>(rows), cpu::defaultThreadPool().size(), runs);
  std::printf("%-9s %-36s %12s %20s\n", "kernel", "computes", "contractions", "ms");
  auto report = [&](const char* kernel, const std::string& computes, const KernelProgram& program) {
    std::fprintf(stderr, "timing %s (%s)...\n", kernel, computes.c_str());
    const Measured m = timeKernel(program, rows, runs);
    std::printf("%-9s %-36s %12d %11.3f (%.3f)\n", kernel, computes.c_str(), contractions(program), m.medianMs,
                m.minMs);
  };
  if (only != "training") report("forward", "y", forwardKernel(layer, DType::F32));
  if (only == "forward") return 0;
  // The names of the gradients `which` indexes, comma-separated.
  auto namesOf = [&](const std::vector<std::size_t>& which) {
    std::string names;
    for (std::size_t k : which) names += (names.empty() ? "" : ", ") + gradients[k];
    return names;
  };
  std::vector<std::size_t> everyGradient(gradients.size());
  for (std::size_t k = 0; k < gradients.size(); ++k) everyGradient[k] = k;
  const std::string all = namesOf(everyGradient);
  if (only.empty()) report("backward", all + " (recomputing)", backwardKernel(layer, DType::F32));
  // What training runs (cpuLayerBackward, StructuredLinear): a forward that keeps the values
  // the backward needs, and the backward on them.
  const TrainingKernels training = trainingKernels(layer, DType::F32);
  if (training.savedCount() > 0)
    report("forward", "y + " + std::to_string(training.savedCount()) + " saved", training.forward);
  const KernelProgram& backward = training.backward;
  report("backward", all, backward);
  if (!only.empty()) return 0;
  if (backward.outputs.size() > 1)
    for (std::size_t k = 0; k < backward.outputs.size(); ++k)
      report("backward", gradients[k] + " only", keepOutputs(backward, {k}));
  // Whole minus (all but one) is what computing that gradient in the same row loop adds.
  if (backward.outputs.size() > 2)
    for (std::size_t k = 0; k < backward.outputs.size(); ++k) {
      std::vector<std::size_t> others = everyGradient;
      others.erase(others.begin() + static_cast<std::ptrdiff_t>(k));
      report("backward", namesOf(others) + " (no " + gradients[k] + ")", keepOutputs(backward, others));
    }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const einjit::SpecError& e) {
    std::fprintf(stderr, "einjit_kernel_profile: %s", e.render().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "einjit_kernel_profile: error: %s\n", e.what());
  }
  return 1;
}
