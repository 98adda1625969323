// einjit compile SPEC|EXPR --target cpu --emit STAGE [-o FILE]: show what the compiler generates
// at each stage, like toyc's -emit.
#include <cstdio>
#include <memory>
#include <string>

#include "compiler/kernel/KernelProgram.h"
#include "compiler/mlir/CpuCodegen.h"
#include "compiler/planner/ContractionPlan.h"
#include "frontend/einsum/BoundEinsum.h"
#include "frontend/structures/Structures.h"
#include "runtime/io/Npy.h"
#include "tools/Commands.h"
#include "tools/ShapeList.h"
#include "tools/Target.h"

namespace einjit::cli {

namespace {

struct CompileOptions {
  std::string spec;
  std::string shapes;
  std::string target = "cpu";
  std::string emit = "mlir";
  std::string output;
  std::string dtype = "f32";
  bool backward = false;
};

cpu::EmitStage parseStage(const std::string& name) {
  if (name == "mlir") return cpu::EmitStage::Mlir;
  if (name == "mlir-lowered") return cpu::EmitStage::LoweredMlir;
  if (name == "llvm") return cpu::EmitStage::Llvm;
  if (name == "asm") return cpu::EmitStage::Asm;
  if (name == "obj") return cpu::EmitStage::Obj;
  throw UserError("unknown --emit stage '" + name + "' (expected mlir, mlir-lowered, llvm, asm or obj)");
}

DType parseDType(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::F32;
  if (name == "f64" || name == "float64") return DType::F64;
  throw UserError("unknown --dtype '" + name + "' (expected f32 or f64)");
}

KernelProgram kernelFor(const CompileOptions& o, DType dtype) {
  if (o.spec.find('(') != std::string::npos) {  // a structure spec
    if (!o.shapes.empty()) throw UserError("--shapes applies to classic einsums only");
    ir::LayerProgram layer = buildLayer(o.spec);
    return o.backward ? backwardKernel(layer, dtype) : forwardKernel(layer, dtype);
  }
  if (o.backward) throw UserError("--backward applies to structure specs only");
  if (o.shapes.empty()) throw UserError("compiling a classic einsum needs the operand shapes: --shapes 2x3,3x4");
  BoundEinsum einsum = bindEinsum(parseEinsum(o.spec), parseShapeList(o.shapes));
  ContractionPlan plan = planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  return einsumKernel(einsum, plan, dtype);
}

void compile(const CompileOptions& o) {
  const cpu::EmitStage stage = parseStage(o.emit);
  const DType dtype = parseDType(o.dtype);
  if (resolveTarget(o.target) != Target::Cpu)
    throw UserError("einjit compile supports --target cpu only (the reference executor is not compiled)");
  if (stage == cpu::EmitStage::Obj && o.output.empty())
    throw UserError("--emit obj writes binary data: give an output file with -o");
  const std::string text = cpu::emitStage(kernelFor(o, dtype), stage);
  if (o.output.empty())
    std::fwrite(text.data(), 1, text.size(), stdout);
  else
    writeFileAtomically(o.output, text);
}

}  // namespace

void addCompileCommand(CLI::App& app) {
  auto o = std::make_shared<CompileOptions>();
  CLI::App* cmd = app.add_subcommand(
      "compile",
      "Compile a structured layer (forward, or --backward) or a classic einsum and print one "
      "stage: mlir (linalg), mlir-lowered (LLVM dialect after tiling and vectorisation), llvm, "
      "asm, obj");
  cmd->add_option("SPEC", o->spec, "structure spec or classic einsum")->required();
  cmd->add_option("--shapes,--shape", o->shapes, "operand shapes for a classic einsum, e.g. 64x32,32x16");
  cmd->add_option("--emit", o->emit, "mlir | mlir-lowered | llvm | asm | obj")->capture_default_str();
  cmd->add_option("--target", o->target, "cpu (the only compiled target so far)")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "f32 or f64")->capture_default_str();
  cmd->add_flag("--backward", o->backward, "compile the layer's backward kernel (dx and parameter gradients)");
  cmd->add_option("-o,--output", o->output, "write here instead of stdout (required for obj)");
  cmd->callback([o] { compile(*o); });
}

}  // namespace einjit::cli
