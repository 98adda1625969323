// The CPU code generator: KernelProgram -> MLIR (linalg) -> tiled, vectorised loops -> LLVM ->
// a relocatable object for the host CPU, and the loader that runs such an object.
// No MLIR or LLVM types appear here: the rest of einjit never includes MLIR headers.
//
// Calling convention of the generated object: one entry point (kEntrySymbol),
//   extern "C" void einjit_kernel(void* const* buffers, int64_t rows);
// buffers[k] points to the k-th buffer: every input of the program, then every output, each a
// contiguous row-major array of program.dtype with the declared shape (kRows replaced by
// `rows`). Buffers must not overlap. Outputs are fully overwritten. The code is position
// independent, calls only malloc, free, memcpy and memset (or nothing) from the process, and
// keeps no state: several threads may call it at once, each with its own buffers (e.g. its
// own range of rows).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiler/kernel/KernelProgram.h"

namespace einjit::cpu {

inline constexpr const char* kEntrySymbol = "einjit_kernel";

enum class EmitStage {
  Mlir,           // the program as linalg on tensors, before any transformation
  TiledMlir,      // laid out for this host: row tiles of static heights, parameters in panels
  ScheduledMlir,  // then register tiles vectorised to vector.contract (still on tensors)
  LoweredMlir,    // after tiling, vectorisation, bufferisation, lowered to the LLVM dialect
  Llvm,           // LLVM IR, optimised
  Asm,            // host assembly
  Obj,            // host relocatable object (bytes)
};

// Text (or object bytes) of one stage. Throws UserError if the program is not supported.
std::string emitStage(const KernelProgram& program, EmitStage stage);

// The object for the host CPU (same bytes as emitStage(..., Obj)).
std::string compileToObject(const KernelProgram& program);

// Identifies everything besides the program that changes generated code: einjit's codegen
// version, the LLVM version, the host CPU name and features. Part of every cache key.
std::string codegenIdentity();

// Executable code from an object made by compileToObject.
class LoadedKernel {
 public:
  virtual ~LoadedKernel() = default;
  // buffers: one per program input, then one per output (see the calling convention above).
  virtual void call(int64_t rows, const std::vector<void*>& buffers) const = 0;
};

// Links and loads the object in memory. Throws UserError if the object is malformed or lacks
// the entry point (a corrupted cache entry must never run).
std::unique_ptr<LoadedKernel> loadObject(const std::string& objectBytes, const KernelProgram& program);

}  // namespace einjit::cpu
