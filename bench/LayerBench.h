// Benchmarks of one structured layer, measured in one run against its baselines: OpenBLAS dense
// sgemm of the same in/out size, naive loops of the same structure, and (optionally) the
// PyTorch bmm form (bench/torch_layers.py). einjit's output is checked against the naive loops
// before anything is timed. Used by `einjit bench` and by the `bench` build target.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/Baselines.h"
#include "compiler/cpu/CpuBackend.h"
#include "compiler/cpu/ThreadPool.h"

namespace einjit::bench {

enum class BenchTarget {
  Ref,  // the reference executor
  Cpu,  // the MLIR CPU JIT
};

// "ref" or "cpu"; UserError otherwise.
BenchTarget parseBenchTarget(const std::string& name);
const char* benchTargetName(BenchTarget target);

struct BenchOptions {
  int64_t rows = 2048;
  bool backward = false;  // time forward+backward instead of forward
  BenchTarget target = BenchTarget::Cpu;
  // Rows the naive loops (and the correctness check) run on; their time is scaled linearly to
  // `rows`, since naive loops at full size would take minutes.
  int64_t naiveRows = 64;
  double secondsPerTiming = 1.0;  // budget of each median-of-k measurement
  // OpenBLAS and PyTorch threads: as many as einjit uses ($EINJIT_THREADS, else every hardware
  // thread), so that ratios compare like with like, on one core as on two.
  int baselineThreads = cpu::configuredThreadCount();
  bool torch = true;              // run the PyTorch script for this layer
  cpu::CacheOptions cache;        // where the timed kernels come from / are cached
  std::string python = defaultPython();
  std::string torchScript = defaultTorchScript();
};

struct LayerBenchResult {
  std::string spec;  // normalised
  std::string structure;
  int64_t dIn = 0, dOut = 0, rows = 0;
  bool backward = false;
  BenchTarget target = BenchTarget::Cpu;
  int64_t macsPerRow = 0;
  // Nominal FLOPs of one timed run: 2 * MACs/row * rows, times 3 with backward. einjitFlops
  // counts the structured layer's MACs, denseFlops those of the dense dIn x dOut layer.
  double einjitFlops = 0, denseFlops = 0;

  // cpu: the compiled kernels alone (runKernel on preallocated inputs and outputs, weights
  // already normalised): the forward kernel, and with backward also the backward kernel, as
  // cpuLayerBackward runs them. ref: referenceLayerForward / referenceLayerBackward.
  Timing einjit;
  // cpu only: the whole cpuLayerForward / cpuLayerBackward call (cache lookup, weight norm,
  // output allocation included).
  std::optional<Timing> einjitCall;
  double compileMs = 0;       // cpu: compileKernel of the timed kernels (forward, and backward)
  std::string compileSource;  // the slowest source of those: "compiled", "disk" or "memory"

  Timing blas;  // OpenBLAS dense sgemm(s)

  Timing naive;  // on naiveRows rows
  int64_t naiveRows = 0;
  std::string naiveKind;     // "loops", or "reference executor" for structures without naive loops
  double naiveScaledMs = 0;  // naive.medianMs * rows / naiveRows

  std::optional<double> torchMs;
  std::string torchNote;  // why there is no PyTorch time
  std::string torchVersion;

  // Largest |einjit - naive| over every checked output, relative to that output's max |naive|.
  double maxRelativeError = 0;

  double einjitGflops() const;
  double blasGflops() const;
  double percentOfBlas() const;  // einjit GFLOP/s as a percentage of OpenBLAS GFLOP/s
};

// einjit's output differs from the naive loops: a bug in einjit (or in the naive loops).
class ResultMismatch : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builds the layer (muP init, seed 1, float32), checks einjit against the naive loops on
// naiveRows rows (y, and with backward dx and every parameter gradient; also the first rows of
// the timed kernels' outputs), then times the naive loops, then einjit and OpenBLAS in
// alternating blocks (timeAlternating), then, if asked, PyTorch.
// Throws SpecError/UserError for a bad spec or options, ResultMismatch on a wrong result.
LayerBenchResult benchLayer(const std::string& spec, const BenchOptions& options);

// Disk-cache hits: every kernel benchLayer runs for `specs` (float32: forward, training forward
// and backward), which must be in
// `cache`'s directory already (as after benchLayer with the same cache), dropped from memory and
// loaded from disk `repeats` times each. Throws UserError if a load is not a disk hit.
struct CacheHitTiming {
  int kernels = 0;
  int loads = 0;
  double medianMs = 0;
  double slowestMs = 0;
};
CacheHitTiming timeDiskCacheHits(const std::vector<std::string>& specs, const cpu::CacheOptions& cache,
                                 int repeats);

struct HostInfo {
  std::string cpuModel;   // /proc/cpuinfo "model name"
  std::string vectorIsa;  // "AVX-512", "AVX2" or "SSE/other"
  int hardwareThreads = 0;
  int einjitThreads = 0;  // the CPU target's thread pool ($EINJIT_THREADS or all)
  int baselineThreads = 0;
  std::string openblas;
  std::string loadAverage;  // /proc/loadavg (1, 5, 15 minutes) when describeHost ran
  std::string date;         // UTC, "YYYY-MM-DD HH:MM UTC"
};

HostInfo describeHost(const BenchOptions& options);

// The report: a header (hardware, threads, date, what each column measures) and one table row
// per result.
std::string formatReport(const std::vector<LayerBenchResult>& results, const HostInfo& host);

// {"host": {...}, "results": [{...}, ...]} with every measured and derived number.
nlohmann::json reportJson(const std::vector<LayerBenchResult>& results, const HostInfo& host);

}  // namespace einjit::bench
