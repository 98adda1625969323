// einjit bench SPEC --rows N [--backward] [--target cpu|ref] [--json]: time one structured layer
// against OpenBLAS dense sgemm, naive loops and PyTorch's bmm form, measured in the same run.
#include <cstdio>
#include <memory>
#include <string>

#include "bench/LayerBench.h"
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
};

void runBench(const BenchCommandOptions& o) {
  if (o.rows <= 0) throw UserError("--rows must be positive, got " + std::to_string(o.rows));
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
  cmd->add_option("--target", o->target, "cpu (compiled) or ref (reference executor)")->capture_default_str();
  cmd->add_flag("--json", o->json, "print JSON instead of a table");
  cmd->add_flag("--no-torch", o->noTorch, "skip the PyTorch baseline");
  cmd->callback([o] { runBench(*o); });
}

}  // namespace einjit::cli
