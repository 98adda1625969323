// einjit run EXPR A.npy [B.npy ...] -o OUT.npy: a classic einsum over .npy files.
#include <memory>
#include <string>
#include <vector>

#include "compiler/cpu/CpuBackend.h"
#include "compiler/cuda/CudaBackend.h"
#include "compiler/planner/ContractionPlan.h"
#include "frontend/einsum/BoundEinsum.h"
#include "runtime/io/Npy.h"
#include "runtime/reference/ReferenceExecutor.h"
#include "tools/Commands.h"
#include "tools/Target.h"

namespace einjit::cli {

namespace {

struct RunOptions {
  std::string expr;
  std::vector<std::string> inputs;
  std::string output;
  std::string target = "cpu";
};

void runEinsum(const RunOptions& options) {
  EinsumAST ast = parseEinsum(options.expr);
  std::vector<Tensor> operands;
  std::vector<Shape> shapes;
  for (const std::string& path : options.inputs) {
    operands.push_back(readNpy(path));
    shapes.push_back(operands.back().shape());
  }
  BoundEinsum einsum = bindEinsum(ast, shapes);
  const Target target = resolveTarget(options.target);
  requireRunnable(target);

  DType dtype = DType::F32;
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : operands) {
    if (t.dtype() == DType::F64) dtype = DType::F64;
    pointers.push_back(&t);
  }
  ContractionPlan plan = planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  Tensor result = target == Target::Cpu    ? cpu::cpuEinsum(einsum, plan, pointers, dtype)
                  : target == Target::Cuda ? cuda::cudaEinsum(einsum, plan, pointers, dtype)
                                           : referenceEinsum(einsum, plan, pointers, dtype);
  writeNpy(options.output, result);
}

}  // namespace

void addRunCommand(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand(
      "run", "Evaluate a classic (numpy) einsum on .npy operands and write the result as .npy");
  cmd->add_option("EXPR", options->expr, "einsum expression, e.g. 'bij,bjk->bik' or 'ii' or '...i,i'")
      ->required();
  cmd->add_option("INPUTS", options->inputs, "operand .npy files (float32 or float64), one per term")
      ->required();
  cmd->add_option("-o,--output", options->output,
                  "result .npy (float64 if any operand is float64, else float32)")
      ->required();
  cmd->add_option("--target", options->target, kTargetHelp)->capture_default_str();
  cmd->callback([options] { runEinsum(*options); });
}

}  // namespace einjit::cli
