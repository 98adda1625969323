// einjit layer SPEC -x X.npy -o Y.npy: run one structured layer (and optionally its gradients).
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "compiler/cpu/CpuBackend.h"
#include "compiler/cuda/CudaBackend.h"
#include "frontend/structures/Structures.h"
#include "runtime/io/Npy.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "tools/Commands.h"
#include "tools/Target.h"

namespace einjit::cli {

namespace {

struct LayerOptions {
  std::string spec;
  std::string x, y;
  std::string params;
  std::optional<uint64_t> seed;
  std::string saveParams;
  std::string dy, dx, dparams;
  std::string target = "cpu";
  std::string precision;  // cuda only; empty: the tensors' own
};

void checkOptionCombinations(const LayerOptions& o) {
  if (!o.params.empty() && o.seed) throw UserError("--params and --seed exclude each other: parameters are either loaded or initialised");
  if (!o.params.empty() && !o.saveParams.empty())
    throw UserError("--save-params saves freshly initialised parameters; it cannot be combined with --params");
  if (o.dy.empty() && (!o.dx.empty() || !o.dparams.empty()))
    throw UserError("--dx and --dparams need --dy (the output gradient)");
  if (!o.dy.empty() && o.dx.empty() && o.dparams.empty())
    throw UserError("--dy given but neither --dx nor --dparams says where to write gradients");
}

// Refuses outputs that cannot be written (missing directory, a directory in the way) or that
// name the same file twice, before any work is done, so a failure leaves nothing behind.
void checkOutputPaths(const LayerOptions& o) {
  std::set<std::filesystem::path> seen;
  for (const std::string* path : {&o.y, &o.dx, &o.dparams, &o.saveParams}) {
    if (path->empty()) continue;
    std::filesystem::path p = std::filesystem::absolute(*path).lexically_normal();
    if (!seen.insert(p).second) throw UserError("output file '" + *path + "' is named twice");
    std::filesystem::path dir = p.parent_path();
    if (!std::filesystem::is_directory(dir))
      throw UserError("cannot write '" + *path + "': directory '" + dir.string() + "' does not exist");
    if (std::filesystem::is_directory(p)) throw UserError("cannot write '" + *path + "': it is a directory");
  }
}

void runLayer(const LayerOptions& options) {
  checkOptionCombinations(options);
  ir::LayerProgram program = buildLayer(options.spec);
  const Target target = resolveTarget(options.target);
  requireRunnable(target);
  if (!options.precision.empty() && target != Target::Cuda)
    throw UserError("--precision applies to --target cuda only");
  cuda::CudaOptions cudaOptions;
  if (!options.precision.empty()) cudaOptions.precision = cuda::parsePrecision(options.precision);
  checkOutputPaths(options);

  Tensor x = readNpy(options.x);
  TensorMap params = options.params.empty()
                         ? initLayerParams(program, options.seed.value_or(0), x.dtype())
                         : readNpz(options.params);
  std::optional<Tensor> dy;
  if (!options.dy.empty()) dy = readNpy(options.dy);
  // Mixed dtypes are fine: every executor returns float64 if any input is float64.

  if (!dy) {
    Tensor y = target == Target::Cpu    ? cpu::cpuLayerForward(program, params, x)
               : target == Target::Cuda ? cuda::cudaLayerForward(program, params, x, cudaOptions)
                                        : referenceLayerForward(program, params, x);
    writeNpy(options.y, y);
  } else {
    LayerGradients grads =
        target == Target::Cpu    ? cpu::cpuLayerBackward(program, params, x, *dy)
        : target == Target::Cuda ? cuda::cudaLayerBackward(program, params, x, *dy, cudaOptions)
                                 : referenceLayerBackward(program, params, x, *dy);
    writeNpy(options.y, grads.y);
    if (!options.dx.empty()) writeNpy(options.dx, grads.dx);
    if (!options.dparams.empty()) writeNpz(options.dparams, grads.dparams);
  }
  if (!options.saveParams.empty()) writeNpz(options.saveParams, params);
}

}  // namespace

void addLayerCommand(CLI::App& app) {
  auto o = std::make_shared<LayerOptions>();
  CLI::App* cmd = app.add_subcommand(
      "layer",
      "Run one structured layer on rows X (N x in) and write Y (N x out); with --dy also the "
      "gradients of sum(Y * DY) with respect to X and every parameter");
  cmd->add_option("SPEC", o->spec, "structure spec, e.g. 'btt(in=1024, out=1024, rank=4)'")->required();
  cmd->add_option("-x,--input", o->x, "input rows X, .npy of shape (N, in)")->required();
  cmd->add_option("-o,--output", o->y, "output rows Y, .npy of shape (N, out)")->required();
  cmd->add_option("--params", o->params,
                  ".npz with one array per parameter tensor, named as `einjit inspect` lists them");
  cmd->add_option("--seed", o->seed, "initialise parameters with the muP init from this seed (default 0)");
  cmd->add_option("--save-params", o->saveParams, "write the initialised parameters to this .npz");
  cmd->add_option("--dy", o->dy, "output gradient DY, .npy of shape (N, out)");
  cmd->add_option("--dx", o->dx, "write d sum(Y*DY) / dX here (.npy)");
  cmd->add_option("--dparams", o->dparams, "write d sum(Y*DY) / dparam for every parameter here (.npz)");
  cmd->add_option("--target", o->target, kTargetHelp)->capture_default_str();
  cmd->add_option("--precision", o->precision,
                  "cuda device storage: f32, f64 or bf16 (fp32 accumulation); default: the inputs' dtype");
  cmd->callback([o] { runLayer(*o); });
}

}  // namespace einjit::cli
