// einjit_benchmarks: the table behind `ninja bench`. Every shape of the benchmark list (BTT rank 1
// and 4, Monarch with sqrt(d) blocks, dense; d = 1024 and 4096; N = 2048; float32; forward and
// forward+backward) against OpenBLAS, naive loops and PyTorch, all measured in this one run.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "bench/LayerBench.h"
#include "einjit/error.h"

namespace {

using namespace einjit::bench;

std::vector<std::string> benchmarkSpecs(const std::vector<int64_t>& widths) {
  std::vector<std::string> specs;
  for (int64_t d : widths) {
    int64_t blocks = 1;
    while ((blocks + 1) * (blocks + 1) <= d) ++blocks;  // floor(sqrt(d)): 32 and 64 here
    specs.push_back(fmt::format("btt(in={0}, out={0}, rank=1)", d));
    specs.push_back(fmt::format("btt(in={0}, out={0}, rank=4)", d));
    specs.push_back(fmt::format("monarch(in={0}, out={0}, blocks={1})", d, blocks));
    specs.push_back(fmt::format("dense(in={0}, out={0})", d));
  }
  return specs;
}

// A new empty directory, removed with everything in it at the end of the run.
struct FreshDirectory {
  std::string path;
  FreshDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "einjit_bench_XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr)
      throw einjit::UserError("cannot create a temporary kernel cache directory in " +
                              std::filesystem::temp_directory_path().string());
    path = pattern;
  }
  ~FreshDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  FreshDirectory(const FreshDirectory&) = delete;
  FreshDirectory& operator=(const FreshDirectory&) = delete;
};

int run(int argc, char** argv) {
  CLI::App app{"einjit layer benchmarks: einjit vs OpenBLAS dense sgemm, naive loops and PyTorch"};
  bool quick = false, noTorch = false, json = false, warmCache = false;
  std::string target = "cpu";
  app.add_flag("--quick", quick, "small run: d = 1024 only, N = 512, 0.2 s per measurement");
  app.add_option("--target", target, "einjit target: cpu (default) or ref");
  app.add_flag("--no-torch", noTorch, "skip the PyTorch baseline");
  app.add_flag("--json", json, "print JSON instead of the table");
  app.add_flag("--warm-cache", warmCache,
               "use the kernel disk cache ($EINJIT_CACHE_DIR or ~/.cache/einjit) instead of a "
               "fresh one, so compile times are cache hits instead of cold compiles");
  CLI11_PARSE(app, argc, argv);

  BenchOptions options;
  options.target = parseBenchTarget(target);
  options.torch = false;  // one PyTorch process for the whole table, below
  std::optional<FreshDirectory> cacheDirectory;
  if (!warmCache) options.cache.directory = cacheDirectory.emplace().path;
  std::vector<int64_t> widths = {1024, 4096};
  if (quick) {
    widths = {1024};
    options.rows = 512;
    options.naiveRows = 16;
    options.secondsPerTiming = 0.2;
  }

  const HostInfo host = describeHost(options);  // before the runs: the load average is others'
  std::vector<LayerBenchResult> results;
  std::vector<TorchCase> torchCases;
  const std::vector<std::string> specs = benchmarkSpecs(widths);
  for (const std::string& spec : specs)
    for (bool backward : {false, true}) {
      options.backward = backward;
      std::fprintf(stderr, "[%zu/%zu] %s %s\n", results.size() + 1, 2 * specs.size(), spec.c_str(),
                   backward ? "fwd+bwd" : "fwd");
      results.push_back(benchLayer(spec, options));
      torchCases.push_back({results.back().spec, backward});
    }
  if (!noTorch) {
    std::fprintf(stderr, "PyTorch baseline (%zu cases)\n", torchCases.size());
    const TorchRun torch =
        timeTorchLayers(torchCases, options.rows, options.secondsPerTiming, options.baselineThreads,
                        options.python, options.torchScript);
    for (std::size_t i = 0; i < results.size(); ++i) {
      results[i].torchMs = torch.timings[i].medianMs;
      results[i].torchNote = torch.timings[i].note;
      results[i].torchVersion = torch.torchVersion;
    }
  }

  // Cache hits are timed after the table, on the kernels it compiled: with the fresh directory
  // those are exactly the table's; with --warm-cache they were there or are now.
  std::fprintf(stderr, "disk-cache hits\n");
  const CacheHitTiming hits = timeDiskCacheHits(specs, options.cache, 5);

  if (json) {
    nlohmann::json report = reportJson(results, host);
    report["disk_cache_hit"] = {{"kernels", hits.kernels}, {"loads", hits.loads},
                                {"median_ms", hits.medianMs}, {"slowest_ms", hits.slowestMs}};
    std::printf("%s\n", report.dump(2).c_str());
  } else {
    std::printf("%s", formatReport(results, host).c_str());
    std::printf("disk-cache hit (compileKernel of a kernel dropped from memory, loaded from the cache "
                "directory; %d loads of the table's %d kernels): median %.3f ms, slowest %.3f ms\n",
                hits.loads, hits.kernels, hits.medianMs, hits.slowestMs);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  einjit::bench::useBestOpenblasKernels();
  try {
    return run(argc, argv);
  } catch (const einjit::SpecError& e) {
    std::fprintf(stderr, "einjit_benchmarks: %s", e.render().c_str());
  } catch (const einjit::UserError& e) {
    std::fprintf(stderr, "einjit_benchmarks: error: %s\n", e.what());
  } catch (const ResultMismatch& e) {
    std::fprintf(stderr, "einjit_benchmarks: WRONG RESULT: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "einjit_benchmarks: internal error: %s\n", e.what());
  }
  return 1;
}
