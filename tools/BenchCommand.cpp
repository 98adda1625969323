// einjit bench SPEC --rows N [--backward] [--target cpu|ref|cuda] [--json]: time one structured
// layer against OpenBLAS dense sgemm, naive loops and PyTorch's bmm form, measured in the same
// run; --target cuda times the CUDA kernels alone (bench/gpu_bench.py adds the GPU baselines).
#include <cstdio>
#include <memory>
#include <string>

#include "bench/LayerBench.h"
#include "compiler/cuda/CudaBackend.h"
#include "frontend/structures/Structures.h"
#include "tools/Target.h"
#include "tools/Commands.h"

namespace einjit::cli {

namespace {

struct BenchCommandOptions {
  std::string spec;
  int64_t rows = 2048;
  bool backward = false;
  std::string target = "cpu";
  bool json = false;
  bool noTorch = false;
  std::string precision = "f32";
  int repeats = 20;
};

// --target cuda: device-resident data, CUDA event timing; FLOPs count 2 per MAC, and a
// backward pass as twice the forward's MACs (dx and the parameter gradients).
void runCudaBench(const BenchCommandOptions& o) {
  requireRunnable(Target::Cuda);
  const ir::LayerProgram layer = buildLayer(o.spec);
  const cuda::Precision precision = cuda::parsePrecision(o.precision);
  const cuda::CudaLayerTiming timing = cuda::cudaTimeLayer(layer, o.rows, precision, o.backward, o.repeats);
  const double flops = 2.0 * static_cast<double>(layer.macsPerRow()) * static_cast<double>(o.rows) *
                       (o.backward ? 3.0 : 1.0);
  const double tflops = flops / (timing.milliseconds * 1e-3) / 1e12;
  if (o.json) {
    nlohmann::json report = {{"spec", layer.spec},       {"structure", layer.structure},
                             {"rows", o.rows},           {"in", layer.dIn},
                             {"out", layer.dOut},        {"precision", o.precision},
                             {"pass", o.backward ? "forward+backward" : "forward"},
                             {"milliseconds", timing.milliseconds},
                             {"flops", flops},           {"tflops", tflops},
                             {"device", timing.device},  {"launch_plan", timing.launchPlan}};
    std::printf("%s\n", report.dump(2).c_str());
  } else {
    std::printf("%s on %s, %lld rows, %s, %s: %.4f ms, %.2f TFLOP/s\n%s", layer.spec.c_str(),
                timing.device.c_str(), static_cast<long long>(o.rows), o.precision.c_str(),
                o.backward ? "forward+backward" : "forward", timing.milliseconds, tflops,
                timing.launchPlan.c_str());
  }
}

void runBench(const BenchCommandOptions& o) {
  if (o.rows <= 0) throw UserError("--rows must be positive, got " + std::to_string(o.rows));
  if (resolveTarget(o.target) == Target::Cuda) return runCudaBench(o);
  bench::useBestOpenblasKernels();
  bench::BenchOptions options;
  options.rows = o.rows;
  options.backward = o.backward;
  options.target = bench::parseBenchTarget(o.target);
  options.torch = !o.noTorch;
  std::fprintf(stderr, "einjit: benchmarking %s on %lld rows (%s)...\n", o.spec.c_str(),
               static_cast<long long>(o.rows), o.backward ? "forward+backward" : "forward");
  bench::LayerBenchResult result = bench::benchLayer(o.spec, options);
  bench::HostInfo host = bench::describeHost(options);
  if (o.json)
    std::printf("%s\n", bench::reportJson({result}, host).dump(2).c_str());
  else
    std::printf("%s\n", bench::formatReport({result}, host).c_str());
}

}  // namespace

void addBenchCommand(CLI::App& app) {
  auto o = std::make_shared<BenchCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Time one structured layer on the CPU against OpenBLAS dense sgemm of the same size, naive "
      "loops and the PyTorch bmm form, all measured in this run (fp32, muP init, seed 1)");
  cmd->add_option("SPEC", o->spec, "structure spec, e.g. 'btt(in=4096, out=4096, rank=1)'")->required();
  cmd->add_option("--rows", o->rows, "rows N in the batch")->capture_default_str();
  cmd->add_flag("--backward", o->backward, "time forward+backward instead of forward");
  cmd->add_option("--target", o->target,
                  "cpu (compiled), ref (reference executor) or cuda (GPU kernels only, no baselines)")
      ->capture_default_str();
  cmd->add_option("--precision", o->precision, "cuda: device storage f32 or bf16 (fp32 accumulation)")
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats, "cuda: timed passes (the median is reported)")->capture_default_str();
  cmd->add_flag("--json", o->json, "print JSON instead of a table");
  cmd->add_flag("--no-torch", o->noTorch, "skip the PyTorch baseline");
  cmd->callback([o] { runBench(*o); });
}

}  // namespace einjit::cli
