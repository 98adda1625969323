// What einjit is measured against, and how everything is timed: a median-of-k timer, OpenBLAS
// dense sgemm of the same in/out size, and the PyTorch bmm form of a layer (bench/torch_layers.py
// run as a subprocess).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace einjit::bench {

struct Timing {
  double medianMs = 0;
  int runs =
      0;  // timed runs behind the median (the warm-up run not counted, unless it is the only one)
};

// Runs `fn` once to warm up, then k times, with k chosen from the first timed run so the timed
// runs take about `seconds` (3 <= k <= 50), and returns the median. A warm-up run longer than
// `seconds` is itself the measurement (runs = 1), so slow baselines are run only once.
Timing timeMedian(const std::function<void()>& fn, double seconds);

// Times several functions in alternating blocks (a block of f1, a block of f2, ..., `blocks`
// rounds), so that a burst of load from other processes on a shared machine hits all of them
// alike and their ratios stay meaningful. Each function gets about `seconds` in all (3 <= runs
// <= 50, a warm-up run first, a warm-up of `seconds` or more being the measurement, as in
// timeMedian); the result is the median of its runs. Between blocks the timer sleeps 150 ms:
// OpenBLAS's worker threads spin for about 2^28 cycles after a call, and must be idle before
// the next block starts.
std::vector<Timing> timeAlternating(const std::vector<std::function<void()>>& fns, double seconds,
                                    int blocks);

// OpenBLAS sgemm of the dense layer with the same sizes, row-major, float32, on `threads`
// threads, with buffers allocated once. Forward: y = x W, one (rows x dIn)(dIn x dOut) sgemm.
// With backward, three sgemms per run: y = x W, dx = dy W^T, dW = x^T dy.
class DenseSgemm {
 public:
  DenseSgemm(int64_t rows, int64_t dIn, int64_t dOut, bool backward, int threads);
  void run();

  // The operands and, after run(), the products (row-major), so a test can check them.
  const std::vector<float>& x() const { return x_; }
  const std::vector<float>& w() const { return w_; }
  const std::vector<float>& dy() const { return dy_; }
  const std::vector<float>& y() const { return y_; }
  const std::vector<float>& dx() const { return dx_; }
  const std::vector<float>& dw() const { return dw_; }

 private:
  int rows_ = 0, dIn_ = 0, dOut_ = 0;
  bool backward_ = false;
  std::vector<float> x_, w_, dy_, y_, dx_, dw_;
};

// OpenBLAS's build description (version, target core, threading), e.g. "OpenBLAS 0.3.21 ...".
std::string openblasDescription();

// OpenBLAS chooses its kernels once, when it loads: those of OPENBLAS_CORETYPE if set, else of
// the CPU it detects. This project's machines set OPENBLAS_CORETYPE=Haswell in the environment,
// which on their AVX-512 CPUs (AMD Zen 5) runs the AVX2 kernels at about half the GFLOP/s of
// the AVX-512 ones (sgemm at d = 4096, 2 threads: 230 against 395). A baseline should be the
// best the library does on the machine, so on a CPU with AVX-512 F/BW/DQ/VL whose loaded
// OpenBLAS core has no AVX-512 this re-executes the process (/proc/self/exe, same arguments)
// with OPENBLAS_CORETYPE=SkylakeX, and says so on stderr; PyTorch's OpenBLAS in the
// subprocesses inherits it. EINJIT_BENCH_OPENBLAS_CORETYPE, when set, is used instead (as is,
// whatever the CPU). Call it first thing; it returns normally when nothing is to be done or the
// re-execution fails.
void useBestOpenblasKernels();

// The PyTorch baseline (torch_layers.py): each spec as the reference code computes it, timed
// by the script itself (median of k, like timeMedian).
struct TorchCase {
  std::string spec;
  bool backward = false;
};

struct TorchTiming {
  std::optional<double> medianMs;  // empty: the script could not time this case
  int runs = 0;
  std::string note;  // why there is no time ("unsupported structure: kron", an error message)
};

struct TorchRun {
  std::vector<TorchTiming> timings;  // one per case, in order
  std::string torchVersion;          // empty if the script did not run
  int threads = 0;                   // torch.get_num_threads() inside the script
};

// The interpreter with torch (/usr/bin/python3 unless configured otherwise) and the script's
// path in the source tree, both fixed when einjit is configured.
std::string defaultPython();
std::string defaultTorchScript();

// Runs `python script --rows ROWS --seconds S --threads T --case fwd|bwd SPEC ...` once for all
// cases. A script that cannot start or fails leaves every timing empty with the reason in its
// note; it never throws for that, since the PyTorch column is optional.
TorchRun timeTorchLayers(const std::vector<TorchCase>& cases, int64_t rows, double seconds,
                         int threads, const std::string& python, const std::string& script);

}  // namespace einjit::bench
