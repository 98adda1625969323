// einjit compile SPEC|EXPR [--target cpu|cuda] --emit STAGE [-o FILE]: show what the compiler
// generates at each stage, like toyc's -emit. Compiling for cuda needs NVRTC, not a GPU.
#include <cstdio>
#include <memory>
#include <string>

#include "compiler/cuda/CudaEmitter.h"
#include "compiler/cuda/Nvrtc.h"
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
  std::string emit;  // default: mlir for cpu, cuda for cuda
  std::string output;
  std::string dtype = "f32";
  std::string arch = "sm_90a";
  std::string precision;  // cuda: f32, f64 or bf16; default from --dtype
  bool backward = false;
  bool training = false;
};

cpu::EmitStage parseStage(const std::string& name) {
  if (name == "mlir") return cpu::EmitStage::Mlir;
  if (name == "mlir-tiled") return cpu::EmitStage::TiledMlir;
  if (name == "mlir-scheduled") return cpu::EmitStage::ScheduledMlir;
  if (name == "mlir-lowered") return cpu::EmitStage::LoweredMlir;
  if (name == "llvm") return cpu::EmitStage::Llvm;
  if (name == "asm") return cpu::EmitStage::Asm;
  if (name == "obj") return cpu::EmitStage::Obj;
  throw UserError("unknown --emit stage '" + name +
                  "' (expected mlir, mlir-tiled, mlir-scheduled, mlir-lowered, llvm, asm or obj)");
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
    if (o.training) {
      TrainingKernels kernels = trainingKernels(layer, dtype);
      return o.backward ? std::move(kernels.backward) : std::move(kernels.forward);
    }
    return o.backward ? backwardKernel(layer, dtype) : forwardKernel(layer, dtype);
  }
  if (o.backward || o.training) throw UserError("--backward and --training apply to structure specs only");
  if (o.shapes.empty()) throw UserError("compiling a classic einsum needs the operand shapes: --shapes 2x3,3x4");
  BoundEinsum einsum = bindEinsum(parseEinsum(o.spec), parseShapeList(o.shapes));
  ContractionPlan plan = planContraction(einsum.inputLabels, einsum.outputLabels, einsum.labelSize);
  return einsumKernel(einsum, plan, dtype);
}

// --target cuda: the CUDA C++ source (with the launch plan as a comment), or NVRTC's PTX or cubin.
std::string compileForCuda(const CompileOptions& o, const KernelProgram& program) {
  const std::string emit = o.emit.empty() ? "cuda" : o.emit;
  if (emit != "cuda" && emit != "ptx" && emit != "cubin")
    throw UserError("unknown --emit stage '" + emit + "' for --target cuda (expected cuda, ptx or cubin)");
  if (emit == "cubin" && o.output.empty())
    throw UserError("--emit cubin writes binary data: give an output file with -o");
  cuda::EmitOptions options;
  options.precision = o.precision.empty() ? (program.dtype == DType::F64 ? cuda::Precision::F64 : cuda::Precision::F32)
                                          : cuda::parsePrecision(o.precision);
  const cuda::CudaProgram emitted = cuda::emitCuda(program, options);
  if (emit == "cuda") {
    std::string plan = "// launch plan:\n//   ";
    for (char c : emitted.launchPlan()) plan += c == '\n' ? std::string("\n//   ") : std::string(1, c);
    plan.resize(plan.size() - 5);  // the "//   " after the last line
    return plan + emitted.source;
  }
  const cuda::NvrtcOutput compiled = cuda::nvrtcCompile(emitted.source, program.name + ".cu", o.arch);
  if (emit == "cubin" && compiled.cubin.empty())
    throw UserError("--arch " + o.arch + " is a virtual architecture: no cubin (use sm_XY)");
  return emit == "ptx" ? compiled.ptx : compiled.cubin;
}

void compile(const CompileOptions& o) {
  const DType dtype = parseDType(o.dtype);
  const Target target = resolveTarget(o.target);
  if (target == Target::Ref)
    throw UserError("einjit compile supports --target cpu or cuda (the reference executor is not compiled)");
  if (target == Target::Cpu && !o.precision.empty()) throw UserError("--precision applies to --target cuda only");
  std::string text;
  if (target == Target::Cuda) {
    text = compileForCuda(o, kernelFor(o, dtype));
  } else {
    const cpu::EmitStage stage = parseStage(o.emit.empty() ? "mlir" : o.emit);
    if (stage == cpu::EmitStage::Obj && o.output.empty())
      throw UserError("--emit obj writes binary data: give an output file with -o");
    text = cpu::emitStage(kernelFor(o, dtype), stage);
  }
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
      "Compile a structured layer (forward, or --backward; --training for the pair training runs) or a classic einsum and print one "
      "stage. cpu: mlir (linalg), mlir-tiled (row tiles and panels for this host), mlir-scheduled "
      "(register tiles vectorised), mlir-lowered (LLVM dialect after bufferisation), "
      "llvm, asm, obj. cuda (needs NVRTC, not a GPU): cuda (CUDA C++), ptx, cubin");
  cmd->add_option("SPEC", o->spec, "structure spec or classic einsum")->required();
  cmd->add_option("--shapes,--shape", o->shapes, "operand shapes for a classic einsum, e.g. 64x32,32x16");
  cmd->add_option("--emit", o->emit,
                  "cpu: mlir (default) | mlir-tiled | mlir-scheduled | mlir-lowered | llvm | asm | obj; "
                  "cuda: cuda (default) | ptx | cubin");
  cmd->add_option("--target", o->target, "cpu or cuda")->capture_default_str();
  cmd->add_option("--arch", o->arch, "cuda: GPU architecture for ptx/cubin")->capture_default_str();
  cmd->add_option("--precision", o->precision, "cuda: device storage f32, f64 or bf16 (default: --dtype)");
  cmd->add_option("--dtype", o->dtype, "f32 or f64")->capture_default_str();
  cmd->add_flag("--backward", o->backward,
                "compile the layer's backward kernel (dx and parameter gradients; it recomputes the "
                "forward's intermediates unless --training)");
  cmd->add_flag("--training", o->training,
                "compile the kernels training runs: the forward that also returns the intermediates "
                "the backward reads, or with --backward the backward that takes them");
  cmd->add_option("-o,--output", o->output, "write here instead of stdout (required for obj and cubin)");
  cmd->callback([o] { compile(*o); });
}

}  // namespace einjit::cli
