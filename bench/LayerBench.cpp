#include "bench/LayerBench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "bench/NaiveLayers.h"
#include "compiler/cpu/CpuBackend.h"
#include "compiler/cpu/KernelCache.h"
#include "compiler/cpu/ThreadPool.h"
#include "compiler/kernel/KernelProgram.h"
#include "einjit/error.h"
#include "frontend/structures/Structures.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "runtime/reference/WeightNorm.h"

namespace einjit::bench {

namespace {

// Largest allowed |einjit - naive| relative to max |naive| of the same output. Both sides sum in
// float32 in different orders; a layout or indexing bug gives errors of order 1.
constexpr double kTolerance = 1e-3;

// einjit and OpenBLAS are timed in this many alternating blocks each (see timeAlternating).
constexpr int kTimingBlocks = 3;

// Deterministic rows with values in [-1, 1).
Tensor patternRows(int64_t rows, int64_t width, uint64_t seed) {
  Tensor t(DType::F32, {rows, width});
  float* data = t.data<float>();
  uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    data[i] = static_cast<float>(
        static_cast<double>(state >> 40) / static_cast<double>(1ULL << 23) - 1.0);
  }
  return t;
}

// The first `rows` rows of a (N, ...) tensor.
Tensor firstRows(const Tensor& t, int64_t rows) {
  Shape shape = t.shape();
  const int64_t rowLength = t.numel() / shape[0];
  shape[0] = rows;
  Tensor result(t.dtype(), shape);
  std::copy_n(static_cast<const std::byte*>(t.raw()),
              rows * rowLength * static_cast<int64_t>(dtypeSize(t.dtype())),
              static_cast<std::byte*>(result.raw()));
  return result;
}

// Compares one output of einjit with the naive result; throws ResultMismatch beyond kTolerance.
void expectClose(const LayerBenchResult& result, const std::string& what, const Tensor& got,
                 const Tensor& expected, double& worst) {
  if (got.shape() != expected.shape())
    throw ResultMismatch(fmt::format("{}: einjit's {} has shape {}, the naive result {}",
                                     result.spec, what, shapeToString(got.shape()),
                                     shapeToString(expected.shape())));
  double maxDiff = 0, maxExpected = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double diff = std::abs(got.get(i) - expected.get(i));
    maxDiff = std::isnan(diff) ? INFINITY : std::max(maxDiff, diff);
    maxExpected = std::max(maxExpected, std::abs(expected.get(i)));
  }
  const double relative = maxDiff / std::max(maxExpected, 1e-30);
  if (!(relative <= kTolerance))
    throw ResultMismatch(fmt::format(
        "{}: einjit's {} differs from the naive result ({}): max |difference| {:.3g}, "
        "max |expected| {:.3g}, relative {:.3g} > {:g}",
        result.spec, what, result.naiveKind, maxDiff, maxExpected, relative, kTolerance));
  worst = std::max(worst, relative);
}

void expectSameGradients(LayerBenchResult& result, const LayerGradients& got,
                         const LayerGradients& expected) {
  expectClose(result, "y", got.y, expected.y, result.maxRelativeError);
  if (!result.backward) return;
  expectClose(result, "dx", got.dx, expected.dx, result.maxRelativeError);
  for (const auto& [name, gradient] : expected.dparams) {
    const auto found = got.dparams.find(name);
    if (found == got.dparams.end())
      throw ResultMismatch(result.spec + ": einjit returned no gradient for '" + name + "'");
    expectClose(result, "d" + name, found->second, gradient, result.maxRelativeError);
  }
}

Shape withRows(Shape shape, int64_t rows) {
  for (int64_t& extent : shape)
    if (extent == ir::kRows) extent = rows;
  return shape;
}

// One compiled kernel with its buffers allocated once, so that timing it measures the kernel.
struct KernelStep {
  KernelProgram program;
  std::shared_ptr<const cpu::LoadedKernel> kernel;
  std::vector<Tensor> inputs, outputs;

  // Inputs after `inputs` that another step's outputs hold (the saved values a training
  // forward passes to the backward, read where that step wrote them, as training does).
  std::vector<const Tensor*> borrowedInputs;

  // Compiles `program` and allocates its first inputs (`inputs`, viewed with the declared
  // shapes; the rest are `borrowed`) and its outputs for `rows` rows.
  KernelStep(KernelProgram kernelProgram, std::vector<Tensor> kernelInputs, std::vector<const Tensor*> borrowed,
             int64_t rows, const cpu::CacheOptions& cache, LayerBenchResult& result)
      : program(std::move(kernelProgram)), inputs(std::move(kernelInputs)), borrowedInputs(std::move(borrowed)) {
    cpu::CompileStats stats;
    kernel = cpu::compileKernel(program, cache, &stats);
    result.compileMs += stats.milliseconds;
    // The slowest source of the kernels a run needs: compiled, else disk, else memory.
    const std::string source = stats.memoryHit ? "memory" : stats.diskHit ? "disk" : "compiled";
    if (result.compileSource.empty() || source == "compiled" ||
        (source == "disk" && result.compileSource == "memory"))
      result.compileSource = source;

    if (inputs.size() + borrowedInputs.size() != program.inputs.size())
      throw ResultMismatch(fmt::format("{}: {} takes {} inputs, the layer gives {}", result.spec,
                                       program.name, program.inputs.size(),
                                       inputs.size() + borrowedInputs.size()));
    for (std::size_t i = 0; i < inputs.size(); ++i)
      inputs[i] = inputs[i].reshaped(withRows(program.values[program.inputs[i]].shape, rows));
    for (ir::ValueId id : program.outputs)
      outputs.emplace_back(DType::F32, withRows(program.values[id].shape, rows));
  }

  void run(int64_t rows) {
    std::vector<const Tensor*> in;
    std::vector<Tensor*> out;
    for (const Tensor& t : inputs) in.push_back(&t);
    in.insert(in.end(), borrowedInputs.begin(), borrowedInputs.end());
    for (Tensor& t : outputs) out.push_back(&t);
    cpu::runKernel(program, *kernel, rows, in, out);
  }
};

void benchCpu(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x,
              const Tensor& dy, const LayerGradients& expected, DenseSgemm& sgemm,
              const BenchOptions& options, LayerBenchResult& result) {
  // Forward: the forward kernel (y). Forward+backward is what cpuLayerBackward runs: the
  // training forward kernel (y and the values the backward needs), then the backward kernel
  // (dx and the parameter gradients) on those values.
  std::vector<Tensor> inputs = {x};
  for (Tensor& weight : kernelParameterTensors(layer, params, DType::F32))
    inputs.push_back(std::move(weight));
  std::vector<KernelStep> steps;
  steps.reserve(2);  // the backward borrows the forward's outputs
  if (!result.backward) {
    steps.emplace_back(forwardKernel(layer, DType::F32), inputs, std::vector<const Tensor*>{}, result.rows,
                       options.cache, result);
  } else {
    TrainingKernels kernels = trainingKernels(layer, DType::F32);
    steps.emplace_back(std::move(kernels.forward), inputs, std::vector<const Tensor*>{}, result.rows,
                       options.cache, result);
    inputs.push_back(dy);
    std::vector<const Tensor*> saved;
    for (std::size_t k = 1; k < steps[0].outputs.size(); ++k) saved.push_back(&steps[0].outputs[k]);
    steps.emplace_back(std::move(kernels.backward), inputs, std::move(saved), result.rows, options.cache, result);
  }

  // The layer API on the check rows against the naive result, every output.
  const Tensor xCheck = firstRows(x, result.naiveRows);
  const Tensor dyCheck = firstRows(dy, result.naiveRows);
  LayerGradients got;
  if (result.backward)
    got = cpu::cpuLayerBackward(layer, params, xCheck, dyCheck);
  else
    got.y = cpu::cpuLayerForward(layer, params, xCheck);
  expectSameGradients(result, got, expected);

  // The kernels alone on every row, the whole call, and OpenBLAS, in alternating blocks.
  const std::vector<Timing> timings =
      timeAlternating({[&] {
                         for (KernelStep& step : steps) step.run(result.rows);
                       },
                       [&] {
                         if (result.backward)
                           cpu::cpuLayerBackward(layer, params, x, dy);
                         else
                           cpu::cpuLayerForward(layer, params, x);
                       },
                       [&] { sgemm.run(); }},
                      options.secondsPerTiming, kTimingBlocks);
  result.einjit = timings[0];
  result.einjitCall = timings[1];
  result.blas = timings[2];

  // The kernels' first outputs (y, and dx with backward) must match on the check rows too.
  expectClose(result, "kernel y",
              firstRows(steps[0].outputs.at(0), result.naiveRows).reshaped(expected.y.shape()),
              expected.y, result.maxRelativeError);
  if (result.backward)
    expectClose(result, "kernel dx",
                firstRows(steps[1].outputs.at(0), result.naiveRows).reshaped(expected.dx.shape()),
                expected.dx, result.maxRelativeError);
}

void benchReference(const ir::LayerProgram& layer, const TensorMap& params, const Tensor& x,
                    const Tensor& dy, const LayerGradients& expected, DenseSgemm& sgemm,
                    const BenchOptions& options, LayerBenchResult& result) {
  const Tensor xCheck = firstRows(x, result.naiveRows);
  LayerGradients got;
  if (result.backward)
    got = referenceLayerBackward(layer, params, xCheck, firstRows(dy, result.naiveRows));
  else
    got.y = referenceLayerForward(layer, params, xCheck);
  expectSameGradients(result, got, expected);
  const std::vector<Timing> timings =
      timeAlternating({[&] {
                         if (result.backward)
                           referenceLayerBackward(layer, params, x, dy);
                         else
                           referenceLayerForward(layer, params, x);
                       },
                       [&] { sgemm.run(); }},
                      options.secondsPerTiming, kTimingBlocks);
  result.einjit = timings[0];
  result.blas = timings[1];
}

std::string cpuInfoField(const std::string& key) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind(key, 0) != 0) continue;
    const std::size_t value = line.find_first_not_of(" \t", line.find(':') + 1);
    if (line.find(':') != std::string::npos && value != std::string::npos)
      return line.substr(value);
  }
  return "";
}

double gflops(double flops, double ms) { return ms > 0 ? flops / (ms * 1e6) : 0; }

std::string ratio(double numerator, double denominator) {
  return denominator > 0 && numerator > 0 ? fmt::format("{:.2f}x", numerator / denominator) : "-";
}

}  // namespace

BenchTarget parseBenchTarget(const std::string& name) {
  if (name == "ref") return BenchTarget::Ref;
  if (name == "cpu") return BenchTarget::Cpu;
  throw UserError("bench: unknown target '" + name + "' (expected cpu or ref)");
}

const char* benchTargetName(BenchTarget target) {
  return target == BenchTarget::Ref ? "ref" : "cpu";
}

double LayerBenchResult::einjitGflops() const { return gflops(einjitFlops, einjit.medianMs); }
double LayerBenchResult::blasGflops() const { return gflops(denseFlops, blas.medianMs); }
double LayerBenchResult::percentOfBlas() const {
  return blasGflops() > 0 ? 100.0 * einjitGflops() / blasGflops() : 0;
}

LayerBenchResult benchLayer(const std::string& spec, const BenchOptions& options) {
  if (options.rows < 1 || options.naiveRows < 1) throw UserError("bench: rows must be at least 1");
  if (!(options.secondsPerTiming > 0) || !std::isfinite(options.secondsPerTiming))
    throw UserError("bench: the time per measurement must be a positive number of seconds");
  if (options.baselineThreads < 1) throw UserError("bench: baseline threads must be at least 1");
  const ir::LayerProgram layer = buildLayer(spec);

  LayerBenchResult result;
  result.spec = layer.spec;
  result.structure = layer.structure;
  result.dIn = layer.dIn;
  result.dOut = layer.dOut;
  result.rows = options.rows;
  result.backward = options.backward;
  result.target = options.target;
  result.macsPerRow = layer.macsPerRow();
  const double passes = options.backward ? 3.0 : 1.0;
  const double rows = static_cast<double>(options.rows);
  result.einjitFlops = 2.0 * static_cast<double>(result.macsPerRow) * rows * passes;
  result.denseFlops =
      2.0 * static_cast<double>(layer.dIn) * static_cast<double>(layer.dOut) * rows * passes;
  result.naiveRows = std::min(options.naiveRows, options.rows);

  const TensorMap params = initLayerParams(layer, /*seed=*/1, DType::F32);
  const Tensor x = patternRows(options.rows, layer.dIn, 1);
  const Tensor dy = patternRows(options.rows, layer.dOut, 2);

  // The naive result on the check rows, timed (slow: often a single run).
  const bool loops = hasNaiveLoops(layer);
  result.naiveKind = loops ? "loops" : "reference executor";
  const Tensor xCheck = firstRows(x, result.naiveRows);
  const Tensor dyCheck = firstRows(dy, result.naiveRows);
  LayerGradients expected;
  result.naive = timeMedian(
      [&] {
        if (options.backward)
          expected = loops ? naiveBackward(layer, params, xCheck, dyCheck)
                           : referenceLayerBackward(layer, params, xCheck, dyCheck);
        else
          expected.y = loops ? naiveForward(layer, params, xCheck)
                             : referenceLayerForward(layer, params, xCheck);
      },
      options.secondsPerTiming);
  result.naiveScaledMs = result.naive.medianMs * rows / static_cast<double>(result.naiveRows);

  DenseSgemm sgemm(options.rows, layer.dIn, layer.dOut, options.backward, options.baselineThreads);
  if (options.target == BenchTarget::Cpu)
    benchCpu(layer, params, x, dy, expected, sgemm, options, result);
  else
    benchReference(layer, params, x, dy, expected, sgemm, options, result);
  if (options.torch) {
    const TorchRun run =
        timeTorchLayers({{result.spec, options.backward}}, options.rows, options.secondsPerTiming,
                        options.baselineThreads, options.python, options.torchScript);
    result.torchMs = run.timings[0].medianMs;
    result.torchNote = run.timings[0].note;
    result.torchVersion = run.torchVersion;
  }
  return result;
}

HostInfo describeHost(const BenchOptions& options) {
  HostInfo host;
  host.cpuModel = cpuInfoField("model name");
  const std::string flags = " " + cpuInfoField("flags") + " ";
  host.vectorIsa = flags.find(" avx512f ") != std::string::npos ? "AVX-512"
                   : flags.find(" avx2 ") != std::string::npos  ? "AVX2"
                                                                : "SSE/other";
  host.hardwareThreads = static_cast<int>(std::thread::hardware_concurrency());
  host.einjitThreads = options.target == BenchTarget::Cpu ? cpu::configuredThreadCount() : 1;
  host.baselineThreads = options.baselineThreads;
  host.openblas = openblasDescription();
  std::ifstream loadavg("/proc/loadavg");
  double oneMinute = 0, fiveMinutes = 0, fifteenMinutes = 0;
  if (loadavg >> oneMinute >> fiveMinutes >> fifteenMinutes)
    host.loadAverage = fmt::format("{:.2f} {:.2f} {:.2f}", oneMinute, fiveMinutes, fifteenMinutes);
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &utc);
  host.date = date;
  return host;
}

std::string formatReport(const std::vector<LayerBenchResult>& results, const HostInfo& host) {
  std::string text = fmt::format("einjit layer benchmark, {}\n", host.date);
  text += fmt::format("CPU: {} ({}), {} hardware threads; load average {}\n", host.cpuModel,
                      host.vectorIsa, host.hardwareThreads,
                      host.loadAverage.empty() ? "?" : host.loadAverage);
  std::string torchVersion;
  for (const LayerBenchResult& r : results)
    if (!r.torchVersion.empty()) torchVersion = r.torchVersion;
  text += fmt::format(
      "threads: einjit {}, OpenBLAS {}, PyTorch {}\n", host.einjitThreads, host.baselineThreads,
      torchVersion.empty() ? "(not run)"
                           : fmt::format("{} (torch {})", host.baselineThreads, torchVersion));
  text +=
      fmt::format("OpenBLAS: {}\nfloat32; every time is the median of k runs after a warm-up\n\n",
                  host.openblas);

  std::size_t specWidth = 5;
  for (const LayerBenchResult& r : results) specWidth = std::max(specWidth, r.spec.size());
  text += fmt::format(
      "{:<{}}  {:<7} {:>5} {:>9} | {:>9} {:>8} {:>6} {:>9} {:>14} | {:>9} {:>8} {:>7} | {:>10} "
      "{:>8} | {:>9} {:>8}\n",
      "layer", specWidth, "pass", "N", "MACs/row", "einjit ms", "GFLOP/s", "%BLAS", "call ms",
      "compile ms", "BLAS ms", "GFLOP/s", "vs BLAS", "naive ms*", "vs naive", "torch ms",
      "vs torch");
  for (const LayerBenchResult& r : results) {
    const bool cpu = r.einjitCall.has_value();
    text += fmt::format(
        "{:<{}}  {:<7} {:>5} {:>9} | {:>9.3f} {:>8.1f} {:>5.0f}% {:>9} {:>14} | {:>9.3f} {:>8.1f} "
        "{:>7} | {:>10.1f} {:>8} | {:>9} {:>8}\n",
        r.spec, specWidth, r.backward ? "fwd+bwd" : "fwd", r.rows, r.macsPerRow, r.einjit.medianMs,
        r.einjitGflops(), r.percentOfBlas(),
        cpu ? fmt::format("{:.3f}", r.einjitCall->medianMs) : "-",
        cpu ? fmt::format("{:.1f} {}", r.compileMs, r.compileSource) : "-", r.blas.medianMs,
        r.blasGflops(), ratio(r.blas.medianMs, r.einjit.medianMs), r.naiveScaledMs,
        ratio(r.naiveScaledMs, r.einjit.medianMs),
        r.torchMs ? fmt::format("{:.3f}", *r.torchMs) : "-",
        r.torchMs ? ratio(*r.torchMs, r.einjit.medianMs) : "-");
  }

  const std::string target = results.empty() ? "cpu" : benchTargetName(results.front().target);
  text += "\n";
  text += target == "cpu"
              ? "einjit ms: the compiled kernels alone (runKernel on preallocated buffers; fwd+bwd "
                "= forward kernel + backward kernel)\ncall ms: the whole cpuLayerForward/Backward "
                "call (weight norm, output allocation, cache lookup included)\ncompile ms: "
                "compileKernel of those kernels, from: compiled (cold), disk (disk cache), memory\n"
              : "einjit ms: the reference executor (target ref)\n";
  text +=
      "GFLOP/s: nominal, 2 x MACs/row x N (x3 for fwd+bwd); einjit counts the structured "
      "layer's MACs, BLAS those of the dense in x out layer\n";
  text +=
      "%BLAS: einjit GFLOP/s / OpenBLAS GFLOP/s; vs X: X's time / einjit's time (above 1x: "
      "einjit is faster)\n";
  text +=
      "BLAS: OpenBLAS sgemm of the dense layer of the same size (fwd: y = xW; fwd+bwd: also "
      "dx = dy W^T, dW = x^T dy)\n";
  std::map<std::string, int64_t> naiveRows;
  for (const LayerBenchResult& r : results) naiveRows.emplace(r.naiveKind, r.naiveRows);
  for (const auto& [kind, rows] : naiveRows)
    text += fmt::format("* naive ({}): measured on {} rows, scaled linearly to N\n",
                        kind == "loops" ? "plain float loops from docs/layouts.md" : kind, rows);
  text +=
      "torch: bench/torch_layers.py, the reference code's bmm form; fwd under no_grad, "
      "fwd+bwd with autograd\n";
  for (const LayerBenchResult& r : results)
    if (!r.torchMs && !r.torchNote.empty())
      text += fmt::format("  no torch time for {} {}: {}\n", r.spec, r.backward ? "fwd+bwd" : "fwd",
                          r.torchNote);
  return text;
}

nlohmann::json reportJson(const std::vector<LayerBenchResult>& results, const HostInfo& host) {
  nlohmann::json report;
  report["host"] = {{"cpu", host.cpuModel},
                    {"vector_isa", host.vectorIsa},
                    {"hardware_threads", host.hardwareThreads},
                    {"einjit_threads", host.einjitThreads},
                    {"baseline_threads", host.baselineThreads},
                    {"openblas", host.openblas},
                    {"load_average", host.loadAverage},
                    {"date", host.date}};
  report["results"] = nlohmann::json::array();
  for (const LayerBenchResult& r : results) {
    nlohmann::json entry = {
        {"spec", r.spec},
        {"structure", r.structure},
        {"in", r.dIn},
        {"out", r.dOut},
        {"rows", r.rows},
        {"pass", r.backward ? "forward+backward" : "forward"},
        {"target", benchTargetName(r.target)},
        {"macs_per_row", r.macsPerRow},
        {"einjit_flops", r.einjitFlops},
        {"dense_flops", r.denseFlops},
        {"einjit",
         {{"ms", r.einjit.medianMs}, {"runs", r.einjit.runs}, {"gflops", r.einjitGflops()}}},
        {"openblas", {{"ms", r.blas.medianMs}, {"runs", r.blas.runs}, {"gflops", r.blasGflops()}}},
        {"percent_of_openblas_gflops", r.percentOfBlas()},
        {"speedup_vs_openblas", r.blas.medianMs / r.einjit.medianMs},
        {"naive",
         {{"kind", r.naiveKind},
          {"rows_measured", r.naiveRows},
          {"ms_measured", r.naive.medianMs},
          {"runs", r.naive.runs},
          {"ms_scaled_to_rows", r.naiveScaledMs}}},
        {"speedup_vs_naive", r.naiveScaledMs / r.einjit.medianMs},
        {"max_relative_error_vs_naive", r.maxRelativeError},
    };
    if (r.einjitCall) {
      entry["einjit_call"] = {{"ms", r.einjitCall->medianMs}, {"runs", r.einjitCall->runs}};
      entry["compile"] = {{"ms", r.compileMs}, {"source", r.compileSource}};
    }
    if (r.torchMs) {
      entry["torch"] = {{"ms", *r.torchMs}, {"version", r.torchVersion}};
      entry["speedup_vs_torch"] = *r.torchMs / r.einjit.medianMs;
    } else if (!r.torchNote.empty()) {
      entry["torch"] = {{"error", r.torchNote}};
    }
    report["results"].push_back(std::move(entry));
  }
  return report;
}

CacheHitTiming timeDiskCacheHits(const std::vector<std::string>& specs, const cpu::CacheOptions& cache,
                                 int repeats) {
  std::vector<KernelProgram> programs;
  std::set<std::string> fingerprints;
  auto add = [&](KernelProgram program) {
    if (fingerprints.insert(program.fingerprint()).second) programs.push_back(std::move(program));
  };
  for (const std::string& spec : specs) {
    const ir::LayerProgram layer = buildLayer(spec);
    add(forwardKernel(layer, DType::F32));
    TrainingKernels training = trainingKernels(layer, DType::F32);
    add(std::move(training.forward));
    add(std::move(training.backward));
  }
  std::vector<double> times;
  for (int repeat = 0; repeat < repeats; ++repeat)
    for (const KernelProgram& program : programs) {
      cpu::processKernelCache().clearMemory();  // the kernel is unloaded: nothing else holds it
      cpu::CompileStats stats;
      cpu::compileKernel(program, cache, &stats);
      if (!stats.diskHit)
        throw UserError("timing disk-cache hits: " + program.name + " was not in the cache directory");
      times.push_back(stats.milliseconds);
    }
  CacheHitTiming timing;
  timing.kernels = static_cast<int>(programs.size());
  timing.loads = static_cast<int>(times.size());
  if (times.empty()) return timing;
  std::sort(times.begin(), times.end());
  timing.medianMs = times[times.size() / 2];
  timing.slowestMs = times.back();
  return timing;
}

}  // namespace einjit::bench
